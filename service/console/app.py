"""The console's Starlette app: routes, the sign-in gate, CSRF and roles, page rendering.

``create_console(settings, spool=...)`` returns ``None`` unless ``CALHOOKS_CONSOLE_USERS``
is set; otherwise a ``Console`` whose ``app`` the web app mounts at ``/console`` and whose
``lifespan`` it enters (Redis connection, the per-minute series flush, with samples of the
queue depth, dead letters and spool size). Every page but sign-in and the static files goes
through ``gate``: signed out, it redirects to the sign-in form; a POST must carry the
session's CSRF token; operator-only actions answer 403 to the read-only role. Redis being
away gives a 503 page, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import structlog
from arq.connections import ArqRedis
from jinja2 import Environment, FileSystemLoader, select_autoescape
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from calhooks.service.console import reconciliation, views
from calhooks.service.console.auth import Auth, Session
from calhooks.service.console.passwords import parse_users
from calhooks.service.console.rulesfile import RulesFile
from calhooks.service.core import timeseries
from calhooks.service.core.redisconn import create_redis
from calhooks.service.core.settings import Settings
from calhooks.service.events import deserialize_job, serialize_job
from calhooks.service.intake.spool import Spool
from calhooks.workers import keys
from calhooks.workers.rules import rules_env

log = structlog.get_logger("calhooks.console")

HERE = Path(__file__).resolve().parent
FLUSH_SECONDS = 5.0

Handler = Callable[["Context", Request, Session, FormData | None], Awaitable[Response]]


@dataclass
class Context:
    """What the views use: settings, Redis (an arq pool), auth, templates, the rules file."""

    settings: Settings
    auth: Auth
    templates: Environment
    rules: RulesFile
    spool: Spool | None
    redis_holder: list[ArqRedis]

    @property
    def redis(self) -> ArqRedis:
        return self.redis_holder[0]

    def render(
        self, request: Request, session: Session, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        body = self.templates.get_template(template).render(
            base=base,
            user=session.user,
            csrf=session.csrf,
            path=request.url.path,
            **values,
        )
        response = HTMLResponse(body, status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["referrer-policy"] = "same-origin"
        response.headers["content-security-policy"] = (
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        return response

    def error(
        self, request: Request, session: Session, status: int, title: str, message: str
    ) -> HTMLResponse:
        """The error page: ``title`` and ``message`` with ``status``."""
        return self.render(request, session, "error.html", status, title=title, message=message)


@dataclass
class Console:
    app: Starlette
    lifespan: Callable[[], AbstractAsyncContextManager[object]]


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["urlquote"] = lambda value: quote(str(value), safe="")
    return env


def _safe_next(base: str, target: str | None) -> str:
    """Where to go after signing in: a path inside the console only."""
    if target and target.startswith(base + "/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return base + "/"


def create_console(
    settings: Settings, *, spool: Spool | None = None, redis_url: str | None = None
) -> Console | None:
    """The console, or ``None`` when no console user is configured."""
    if settings.console_users is None or not settings.console_users.get_secret_value().strip():
        return None
    users = parse_users(settings.console_users.get_secret_value())
    holder: list[ArqRedis] = []
    auth = Auth(users, None)  # type: ignore[arg-type]  # Redis is set by the lifespan
    path = Path(settings.rules_file).expanduser() if settings.rules_file else None
    ctx = Context(settings, auth, _templates(), RulesFile(path, rules_env(settings)), spool, holder)

    def gate(
        handler: Handler, *, operator: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            base = request.scope.get("root_path", "").rstrip("/")
            try:
                await auth.start()
            except (RedisError, OSError) as exc:
                return _unavailable(exc)
            session = auth.load(request)
            if session is None or session.user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET":
                    target = base + "/"
                return RedirectResponse(
                    f"{base}/sign-in?next={quote(target, safe='')}", status_code=303
                )
            form: FormData | None = None
            try:
                if request.method == "POST":
                    form = await request.form()
                    token = form.get("csrf") or request.headers.get("x-csrf-token")
                    if not auth.csrf_ok(session, token if isinstance(token, str) else None):
                        log.warning("console.csrf_refused", path=request.url.path)
                        return ctx.error(
                            request,
                            session,
                            403,
                            "Refused",
                            "This form is missing its CSRF token or the token is stale: "
                            "reload the page and try again.",
                        )
                    if operator and not session.user.operator:
                        log.warning("console.role_refused", user=session.user.name)
                        return ctx.error(
                            request,
                            session,
                            403,
                            "Not allowed",
                            "Your role is read-only: only an operator may do this.",
                        )
                return await handler(ctx, request, session, form)
            except (RedisError, OSError) as exc:
                log.warning("console.redis_unavailable", error=str(exc))
                return ctx.error(
                    request,
                    session,
                    503,
                    "Redis is unreachable",
                    f"The console reads everything from Redis, which did not answer: {exc}",
                )

        return endpoint

    async def sign_in(request: Request) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        try:
            await auth.start()
        except (RedisError, OSError) as exc:
            return _unavailable(exc)
        session = auth.load(request) or auth.new_session()
        target = _safe_next(base, request.query_params.get("next"))
        if request.method == "GET":
            if session.user is not None:
                return RedirectResponse(target, status_code=303)
            response: Response = ctx.render(
                request, session, "sign_in.html", next=target, error=None
            )
            auth.save(request, response, session)
            return response
        form = await request.form()
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        target = _safe_next(base, str(form.get("next", "")))
        token = form.get("csrf")
        if not auth.csrf_ok(session, token if isinstance(token, str) else None):
            response = ctx.render(
                request,
                session,
                "sign_in.html",
                403,
                next=target,
                error="The form expired: please sign in again.",
            )
            auth.save(request, response, session)
            return response
        client = request.client.host if request.client else "unknown"
        try:
            if await auth.locked_out(client, name):
                log.warning("console.sign_in_locked", user=name, client=client)
                return ctx.render(
                    request,
                    session,
                    "sign_in.html",
                    429,
                    next=target,
                    error="Too many failed sign-ins: wait a few minutes and try again.",
                )
            user = await asyncio.to_thread(auth.check_password, name, password)
            if user is None:
                await auth.note_failure(client, name)
                log.info("console.sign_in_failed", user=name, client=client)
                return ctx.render(
                    request,
                    session,
                    "sign_in.html",
                    401,
                    next=target,
                    error="Wrong name or password.",
                )
        except RedisError as exc:
            return ctx.error(
                request, session, 503, "Redis is unreachable", f"Sign-in needs Redis: {exc}"
            )
        fresh = Session(csrf=auth.new_session().csrf, user=user)
        log.info("console.signed_in", user=user.name, role=user.role)
        response = RedirectResponse(target, status_code=303)
        auth.save(request, response, fresh)
        return response

    async def sign_out(_ctx: Context, request: Request, session: Session, _: Any) -> Response:
        base = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{base}/sign-in", status_code=303)
        auth.save(request, response, auth.new_session())
        return response

    routes = [
        Route("/", gate(views.overview), methods=["GET"]),
        Route("/sign-in", sign_in, methods=["GET", "POST"]),
        Route("/sign-out", gate(sign_out), methods=["POST"]),
        Route("/events", gate(views.events), methods=["GET"]),
        Route("/events/rows", gate(views.event_rows), methods=["GET"]),
        Route("/events/{event_id}", gate(views.event), methods=["GET"]),
        Route("/rules", gate(views.rules), methods=["GET"]),
        Route("/rules/dry-run", gate(views.dry_run), methods=["POST"]),
        Route("/dead-letters", gate(views.dead_letters), methods=["GET"]),
        Route("/dead-letters/replay", gate(views.replay, operator=True), methods=["POST"]),
        Route("/dead-letters/drop", gate(views.drop_confirm), methods=["GET"]),
        Route("/dead-letters/drop", gate(views.drop, operator=True), methods=["POST"]),
        Route("/dead-letters/{entry_id}", gate(views.dead_letter), methods=["GET"]),
        Route("/webhooks", gate(views.webhooks), methods=["GET"]),
        Route("/webhooks/test", gate(views.send_test_delivery, operator=True), methods=["POST"]),
        Route("/connections", gate(views.connections), methods=["GET"]),
        Route("/reconciliation", gate(reconciliation.page), methods=["GET"]),
        Route("/reconciliation/run", gate(reconciliation.run_now, operator=True), methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        # Connected on first use: the web app starts (and takes deliveries) without Redis.
        plain = create_redis(settings, url=redis_url)
        redis = ArqRedis(
            connection_pool=plain.connection_pool,
            job_serializer=serialize_job,
            job_deserializer=deserialize_job,
            default_queue_name=settings.queue_name,
        )
        holder.append(redis)
        auth.redis = redis
        flusher = asyncio.create_task(_flush_forever(redis, settings, spool))
        log.info("console.started", users=len(users))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            with contextlib.suppress(RedisError, OSError):
                await timeseries.RECORDER.flush(redis)
            holder.clear()
            await redis.aclose()

    return Console(app, lifespan)


def _unavailable(exc: BaseException) -> Response:
    log.warning("console.redis_unavailable", error=str(exc))
    return HTMLResponse(
        "<!doctype html><title>Console unavailable</title><h1>Console unavailable</h1>"
        "<p>Redis did not answer; the console needs it. Retry in a moment.</p>",
        status_code=503,
        headers={"retry-after": "10", "cache-control": "no-store"},
    )


async def _flush_forever(redis: ArqRedis, settings: Settings, spool: Spool | None) -> None:
    """Every ``FLUSH_SECONDS``: sample the queue, dead letters and spool, write the counts."""
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(settings.queue_name)
                pipe.zcard(keys.dead_letter_index())
                depth, dead = await pipe.execute()
            timeseries.RECORDER.gauge("queue.depth", int(depth))
            timeseries.RECORDER.gauge("dlq.entries", int(dead))
            if spool is not None:
                timeseries.RECORDER.gauge("spool.bytes", spool.size)
            await timeseries.RECORDER.flush(redis)
        except (RedisError, OSError) as exc:
            log.debug("console.flush_failed", error=str(exc), at=time.time())
