"""Ingest throughput: the real intake against a bare endpoint and a naive arq peer, under wrk.

One run, on loopback, each server in its own process with the same uvicorn options as
``calhooks serve`` (one worker, uvloop + httptools), against the same redis-server:

* ``bare``   - a Starlette endpoint that reads the body and answers 202: the ceiling;
* ``naive``  - the same endpoint calling arq's ``enqueue_job`` per request (what a
  straightforward receiver does: several Redis round trips per delivery, no verification);
* ``intake`` - ``calhooks.service.app.create_app``: signature check, JSON validation, dedupe and
  enqueue, JSON log line per request (written to a file), metrics;
* ``serve``  - ``calhooks serve`` itself, as shipped (the console script, configured by
  ``CALHOOKS_*`` variables, JSON logs on its stdout redirected to a file): what the intake
  row measures plus whatever the command adds;
* ``redispy`` - the same intake with its Redis pipe (``service/intake/redispipe.py``) swapped
  for ``RedisPyPipe`` below: redis-py (hiredis parser) running the same ``ENQUEUE`` script
  with the same group commit - every command of one event-loop turn goes out in one redis-py
  pipeline. ``intake`` against ``redispy`` is what justifies keeping the hand-written pipe;
* ``handlog`` - the same intake with its per-delivery line written by the hand-written
  batching writer that structlog's fast path replaced (``bench/replaced.py``), to reproduce
  that measurement;
* ``connection`` - the same intake with ``CONNECTIONS`` connections stored, every delivery
  posted to one connection's URL (``/webhooks/cal/<pcid>``) and signed with that connection's
  secret (kept in its store in Redis): the per-connection path against ``intake``.

The load generator is ``wrk`` (Debian: ``apt-get install wrk``) with ``-t2 -c64`` by default
and a Lua script that sends distinct Cal.com-shaped bodies, each signed with HMAC-SHA256
here (so every intake request is a new delivery that gets queued; the script counts any
wrap-around, which would turn deliveries into cheaper duplicates). Every target is measured
with bodies of each size in ``--sizes`` (1.5, 2 and 4 KB by default: Cal.com's booking
bodies are 2-4 KB). Prints req/s, p50/p99 latency, the server's CPU time per request and
each target's ratio to ``bare`` per size, what each queueing target did with the deliveries,
and the hand-written parts against the library (``intake``/``redispy``, ``handlog``/``intake``).

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 64] [--threads 2]
        [--sizes 1500,2048,4096]
        [--targets bare,naive,intake,serve,redispy,handlog,connection]
        [--rounds 1] [--json summary.json] [--profile DIR]

``--rounds N`` measures the targets N times, interleaved (A B A B ...) at each size, and keeps
each target's best round (best req/s; median latencies and CPU per request): on a shared
machine that filters out rounds slowed by a neighbour. ``--json`` writes each target's summary
(``{target: {requests_per_second, p50_ms, p99_ms, cpu_us, ...}}``) for ``bench/handwritten.py``;
it takes one size.

The machine is shared: keep runs short. Speed is measured here, never in a timed test.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.service.core.embedded_redis import EmbeddedRedis, free_port  # noqa: E402

PATH = "/webhooks/cal"
SECRET = "bench-signing-secret"  # noqa: S105 - a benchmark's own key
SIZES = (1500, 2048, 4096)
TARGETS = ("bare", "naive", "intake", "serve", "redispy", "handlog", "connection")
#: Connections stored for the ``connection`` target (one of them receives the deliveries).
CONNECTIONS = 200
#: What a run measures unless ``--targets`` says otherwise (``redispy`` and ``handlog`` are
#: for ``bench/handwritten.py``, which names them).
DEFAULT_TARGETS = ("bare", "naive", "intake", "serve")
#: The intake built in this script's own server process (``create_app``), as configured here.
INTAKES = ("intake", "redispy", "handlog", "connection")
#: The targets that queue deliveries (their outcomes and queue are reported).
QUEUEING = (*INTAKES, "serve")

LUA = r"""
-- Each thread sends its own pool of pre-signed requests (one "signature body" per line).
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  local path = args[1] .. "-" .. id .. ".txt"
  for line in io.lines(path) do
    local space = line:find(" ", 1, true)
    local headers = {
      ["Content-Type"] = "application/json",
      ["X-Cal-Signature-256"] = line:sub(1, space - 1),
    }
    requests[#requests + 1] = wrk.format("POST", args[2], headers, line:sub(space + 1))
  end
  index = 0
  wraps = 0
end

function request()
  index = index + 1
  if index > #requests then
    index = 1
    wraps = wraps + 1
  end
  return requests[index]
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("wraps")
  end
  io.write(string.format("POOL_WRAPS %d\n", total))
end
"""


# ---------------------------------------------------------------- redis-py doing the pipe's job


class RedisPyPipe:
    """``RedisPipe``'s interface on redis-py (hiredis parser): the library side of the comparison.

    Same group commit as ``RedisPipe``: the commands issued during one turn of the event loop
    are sent as one redis-py pipeline (``transaction=False``) and each caller gets its own
    reply or error. Scripts go as ``EVALSHA`` and fall back to ``EVAL`` on ``NOSCRIPT``, like
    the pipe (redis-py's own ``Script`` in a pipeline would add a ``SCRIPT EXISTS`` round trip
    per pipeline). Errors are mapped to the pipe's three, so the acceptor treats both alike.
    """

    def __init__(self, url: str, address: Any) -> None:
        import redis.asyncio as aioredis

        self.address = address  # what the intake logs
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0)
        self._pending: list[tuple[tuple[Any, ...], Any]] = []
        self._tasks: set[Any] = set()

    def _send(self, args: tuple[Any, ...], deadline: float | None) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((args, future))
        if deadline is not None:
            timer = loop.call_later(deadline, _expire, future)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    def _flush(self) -> None:
        import asyncio

        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[tuple[Any, ...], Any]]) -> None:
        from redis.exceptions import ConnectionError as LostConnection
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeout

        from calhooks.service.intake.redispipe import RedisReplyError, RedisUnavailable

        pipeline = self.client.pipeline(transaction=False)
        for args, _ in batch:
            pipeline.execute_command(*args)
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except (LostConnection, RedisTimeout, OSError) as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RedisUnavailable(str(error)))
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    async def execute(self, *args: Any, deadline: float | None = None) -> Any:
        return await self._send(args, deadline)

    async def evalsha(self, script: Any, keys: Any, args: Any, *, deadline: float | None) -> Any:
        from calhooks.service.intake.redispipe import RedisReplyError

        try:
            return await self._send(("EVALSHA", script.sha, len(keys), *keys, *args), deadline)
        except RedisReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await self._send(("EVAL", script.source, len(keys), *keys, *args), deadline)

    async def ping(self, deadline: float) -> bool:
        try:
            return bool(await self.execute("PING", deadline=deadline))
        except Exception:
            return False

    def reset(self) -> None:
        pass  # redis-py drops a broken connection from its pool by itself

    async def aclose(self) -> None:
        await self.client.aclose()


def _expire(future: Any) -> None:
    from calhooks.service.intake.redispipe import RedisDeadline

    if not future.done():
        future.set_exception(RedisDeadline("Redis did not answer in time"))


# ---------------------------------------------------------------- the servers (own processes)


# ---------------------------------------------------------------- the servers (own processes)


def _bare_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        await request.body()
        return Response(b'{"id":"bare"}', status_code=202, media_type="application/json")

    return Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])


def _naive_app(redis_url: str) -> Any:
    import contextlib

    from arq.connections import ArqRedis, RedisSettings, create_pool
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    pool: list[ArqRedis] = []

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        pool.append(await create_pool(RedisSettings.from_dsn(redis_url)))
        yield
        await pool[0].aclose()

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        job = await pool[0].enqueue_job("process_event", body.decode())
        assert job is not None
        return Response(b'{"id":"%s"}' % job.job_id.encode(), status_code=202)

    return Starlette(routes=[Route(PATH, endpoint, methods=["POST"])], lifespan=lifespan)


def _intake_app(
    redis_url: str,
    spool_dir: str,
    log_file: str,
    *,
    redis_py: bool = False,
    handlog: bool = False,
    encryption_key: str | None = None,
) -> Any:
    from calhooks.service.app import create_app
    from calhooks.service.core.logs import configure_logging
    from calhooks.service.core.settings import Settings

    # A production log configuration (JSON lines, info), written to a file as a container's
    # stdout would be; that cost is part of the intake's.
    configure_logging("info", "json", stream=open(log_file, "a"))  # noqa: SIM115
    settings = Settings(
        redis_url=redis_url,
        webhook_secrets=SECRET,
        spool_dir=Path(spool_dir),
        data_dir=Path(spool_dir),
        encryption_key=encryption_key,
        _env_file=None,
    )
    app = create_app(settings)
    if handlog:  # built after configure_logging: it writes to the root handler's stream
        from bench.replaced import BatchedDeliveryLog

        app.state.intake.endpoint.log = BatchedDeliveryLog()
    if redis_py:  # the acceptor, the queue and the probes all reach Redis through queue.pipe
        intake = app.state.intake
        intake.queue.pipe = RedisPyPipe(redis_url, intake.pipe.address)
    return app


def serve(target: str, port: int, redis_url: str, work_dir: str) -> None:
    import uvicorn

    from calhooks.service.cli.serve import server_options
    from calhooks.service.core.settings import Settings

    if target == "bare":
        app = _bare_app()
    elif target == "naive":
        app = _naive_app(redis_url)
    else:
        app = _intake_app(
            redis_url, f"{work_dir}/spool", f"{work_dir}/{target}.log",
            redis_py=target == "redispy", handlog=target == "handlog",
            encryption_key=_key(work_dir) if target == "connection" else None,
        )  # fmt: skip
    options = server_options(Settings(_env_file=None))
    options.update(loop="uvloop", http="httptools", log_level="warning")
    if target not in INTAKES:
        options["log_config"] = uvicorn.config.LOGGING_CONFIG
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options)).run()


# ---------------------------------------------------------------- the connection target


def _key(work_dir: str | Path) -> str:
    """The run's encryption key (written once by the driver, read by the server process)."""
    path = Path(work_dir) / "encryption.key"
    if not path.exists():
        from calhooks.service.core.secretbox import generate_key

        path.write_text(generate_key())
    return path.read_text().strip()


def seed_connections(redis_url: str, work_dir: Path) -> tuple[str, str]:
    """``CONNECTIONS`` connections, each with a webhook secret in its own store, as
    ``calhooks webhooks apply --all-connections`` leaves them; the path of the one receiving
    the deliveries and its secret."""
    import asyncio

    import redis.asyncio as aioredis

    from calhooks.service.calcom.client import Credentials
    from calhooks.service.connections.store import ConnectionStore
    from calhooks.service.core.secretbox import SecretBox
    from calhooks.service.subscriptions.secret_store import WebhookSecretStore, store_name

    async def seed() -> tuple[str, str]:
        client = aioredis.Redis.from_url(redis_url)
        box = SecretBox(_key(work_dir))
        try:
            connections = ConnectionStore(client, box)
            found = []
            for n in range(CONNECTIONS):
                info = await connections.add(
                    f"org-{n}", Credentials(api_key=f"cal_bench_{n}"), org_id=n + 1
                )
                store = WebhookSecretStore(client, box, deployment=store_name("default", info.pcid))
                found.append((info.pcid, (await store.add(make_current=True)).value))
        finally:
            await client.aclose()
        pcid, secret = found[CONNECTIONS // 2]
        return f"{PATH}/{pcid}", secret

    return asyncio.run(seed())


# ---------------------------------------------------------------- the driver


@dataclass
class Result:
    target: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str
    wraps: int
    #: The server process' CPU time (user + system) per request of the measured run: unlike
    #: req/s it hardly moves when neighbours on a shared machine take CPU away.
    cpu_us: float = 0.0
    #: What a queueing target did with the measured run's deliveries (empty for the others).
    outcome: str = ""


def _body(serial: int, template: dict[str, Any], size: int) -> bytes:
    """A distinct BOOKING_CREATED delivery of about ``size`` bytes, compact as Cal.com sends."""
    body = json.loads(json.dumps(template))
    payload = body["payload"]
    payload["uid"] = f"bench{serial:012d}"
    payload["bookingId"] = 1_000_000 + serial
    body["createdAt"] = (
        f"2025-10-10T09:{serial // 60000 % 60:02d}:{serial // 1000 % 60:02d}.{serial % 1000:03d}Z"
    )
    raw = json.dumps(body, separators=(",", ":"))
    padding = size - len(raw.encode())
    if padding > 0:
        payload["additionalNotes"] = "n" * padding
        raw = json.dumps(body, separators=(",", ":"))
    return raw.encode()


def _template() -> dict[str, Any]:
    fixture = json.loads((ROOT / "tests/fixtures/webhooks/BOOKING_CREATED.json").read_text())
    payload = fixture["payload"]
    for key in ("description", "additionalNotes", "responses", "userFieldsResponses"):
        payload.pop(key, None)
    fixture["payload"] = payload
    return dict(fixture)


def write_pools(
    directory: Path,
    prefix: str,
    count: int,
    threads: int,
    first: int,
    size: int,
    secret: str = SECRET,
) -> Path:
    template = _template()
    key = secret.encode()
    files = [open(directory / f"{prefix}-{t}.txt", "wb") for t in range(threads)]  # noqa: SIM115
    try:
        for n in range(count):
            body = _body(first + n, template, size)
            signature = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
            files[n % threads].write(signature + b" " + body + b"\n")
    finally:
        for handle in files:
            handle.close()
    return directory / prefix


@contextmanager
def server(target: str, redis_url: str, work_dir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    log = open(work_dir / f"{target}.out", "wb")  # noqa: SIM115
    command = [sys.executable, __file__, "--serve", target, "--port", str(port), "--redis",
               redis_url, "--work-dir", str(work_dir)]  # fmt: skip
    env = None
    if target == "serve":  # the shipped command, configured as a deployment is
        command = [str(Path(sys.executable).with_name("calhooks")), "serve", "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALHOOKS_")}
        env.update(
            CALHOOKS_REDIS_URL=redis_url,
            CALHOOKS_WEBHOOK_SECRETS=SECRET,
            CALHOOKS_HOST="127.0.0.1",
            CALHOOKS_DATA_DIR=str(work_dir / "serve-data"),
            CALHOOKS_LOG_LEVEL="info",
            CALHOOKS_LOG_FORMAT="json",
        )
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{target} did not start; see {log.name}") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


_DURATION = r"([\d.]+)(us|ms|s|m)"


def _milliseconds(text: str) -> float:
    found = re.fullmatch(_DURATION, text)
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def _need(pattern: str, text: str, what: str) -> re.Match[str]:
    found = re.search(pattern, text, re.M)
    if found is None:
        raise ValueError(f"wrk's output has no {what}:\n{text}")
    return found


def parse_wrk(output: str) -> Result:
    r"""wrk's report (with ``--latency``) as a ``Result``.

    The percentiles are read only from the "Latency Distribution" block, each on a line of its
    own (`  50%  1.23ms`): a loose ``50%\s+(\S+)`` also matches the end of the thread stats'
    `+/- Stdev` column (`85.50%` followed by the next line's `Req/Sec`).
    """
    block = _need(
        r"^\s*Latency Distribution\n((?:\s+\d+(?:\.\d+)?%\s+\S+\n?)+)",
        output,
        "latency distribution (was --latency given?)",
    )[1]
    percentiles = dict(re.findall(r"^\s+(\d+(?:\.\d+)?)%\s+(\S+)\s*$", block, re.M))
    if "50" not in percentiles or "99" not in percentiles:
        raise ValueError(f"wrk's latency distribution lacks 50% or 99%:\n{block}")
    rate = float(_need(r"^Requests/sec:\s+([\d.]+)\s*$", output, "Requests/sec")[1])
    total = int(_need(r"^\s*(\d+) requests in ", output, "request count")[1])
    errors = []
    if match := re.search(r"^\s*Non-2xx or 3xx responses: (\d+)", output, re.M):
        errors.append(f"{match[1]} non-2xx")
    if match := re.search(r"^\s*Socket errors: (.*)$", output, re.M):
        errors.append(match[1].strip())
    wraps = int(_need(r"^POOL_WRAPS (\d+)\s*$", output, "POOL_WRAPS line")[1])
    return Result(
        "",
        rate,
        _milliseconds(percentiles["50"]),
        _milliseconds(percentiles["99"]),
        total,
        "; ".join(errors) or "none",
        wraps,
    )


def wrk(
    url: str,
    script: Path,
    pool: Path,
    args: argparse.Namespace,
    seconds: float,
    path: str = PATH,
) -> Result:
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--latency",
        "--timeout", "5s", "-s", str(script), url + path, "--", str(pool), path,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def _intake_counts(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(url + "/metrics").text
    found = re.findall(
        r'^calhooks_intake_deliveries_total\{outcome="(\w+)"\} ([\d.e+]+)$', text, re.M
    )
    return {outcome: float(value) for outcome, value in found if float(value)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated, of {','.join(TARGETS)}",
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="body bytes, comma-separated"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds; each target's best is kept"
    )
    parser.add_argument(
        "--json", type=Path, help="also write each target's summary here (one size only)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="write py-spy's raw stacks of each target's server here (pip install py-spy)",
    )
    parser.add_argument("--serve", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis, args.work_dir)
        return

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := sorted(set(targets) - set(TARGETS)):
        parser.error(f"unknown targets {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    try:
        sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes takes byte counts separated by commas, not {args.sizes!r}")
    if not targets or not sizes:
        parser.error("--targets and --sizes need at least one entry each")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.json and len(sizes) != 1:
        parser.error("--json writes one summary per target: give one size (--sizes 1500)")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="calhooks-bench-") as tmp, EmbeddedRedis() as redis:
        work = Path(tmp)
        script = work / "ingest.lua"
        script.write_text(LUA)
        by_size: dict[int, dict[str, Result]] = {}
        for size in sizes:
            warm_pool = write_pools(work, f"warm-{size}", 5000, args.threads, 10**9, size)
            rounds: dict[str, list[Result]] = {target: [] for target in targets}
            for round_number in range(1, args.rounds + 1):
                for target in targets:
                    result = measure(target, size, redis, work, script, warm_pool, args)
                    label = f"{target} (round {round_number})" if args.rounds > 1 else target
                    _print_run(size, label, result)
                    rounds[target].append(result)
            by_size[size] = {target: _summary(results) for target, results in rounds.items()}
        for size, summaries in by_size.items():
            _report(summaries, args, size)
        if args.json:
            (summaries,) = by_size.values()
            args.json.write_text(json.dumps({t: vars(r) for t, r in summaries.items()}))


def _print_run(size: int, label: str, result: Result) -> None:
    print(
        f"{size:>5} B {label:>17}: {result.requests_per_second:9.0f} req/s  "
        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
        f"CPU {result.cpu_us:5.0f} us/req  ({result.requests} requests, errors: "
        f"{result.errors}, pool wraps: {result.wraps})",
        flush=True,
    )
    if result.outcome:
        print(f"{'':>27}{result.outcome}", flush=True)


def _summary(results: list[Result]) -> Result:
    """A target over its rounds: best req/s; median latencies and CPU per request."""
    return Result(
        results[0].target,
        max(r.requests_per_second for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.requests for r in results),
        "; ".join(sorted({r.errors for r in results})),
        sum(r.wraps for r in results),
        statistics.median(r.cpu_us for r in results),
        results[-1].outcome,
    )


def measure(
    target: str,
    size: int,
    redis: EmbeddedRedis,
    work: Path,
    script: Path,
    warm_pool: Path,
    args: argparse.Namespace,
) -> Result:
    """One target with bodies of ``size`` bytes, on a flushed Redis: warm-up, then the
    measured run (and, for a queueing target, what it did with the deliveries)."""
    subprocess.run(
        [*_redis_cli(), "-p", str(redis.port), "FLUSHALL"], check=True, capture_output=True
    )
    queues = target in QUEUEING
    path, secret = PATH, SECRET
    if target == "connection":
        path, secret = seed_connections(redis.url, work)
        warm_pool = write_pools(work, f"warm-{target}", 5000, args.threads, 10**9, size, secret)
    with server(target, redis.url, work) as (url, pid):
        warm = wrk(url, script, warm_pool, args, args.warmup, path)
        # Only the intake needs every body distinct (a repeat is a cheaper duplicate):
        # size its pool from the warm-up rate, with room to spare.
        # A slow warm-up (the first requests pay for connections) must not undersize it.
        count = int(max(warm.requests_per_second * 2.5, 8_000) * args.duration)
        if not queues:
            count = min(count, 20_000)
        pool = write_pools(work, f"pool-{target}", count, args.threads, 0, size, secret)
        before = _intake_counts(url) if queues else {}
        spy = _start_spy(pid, args.profile / f"{target}-{size}.txt") if args.profile else None
        cpu_before = _cpu_seconds(pid)
        result = wrk(url, script, pool, args, args.duration, path)
        result.cpu_us = (_cpu_seconds(pid) - cpu_before) / max(result.requests, 1) * 1e6
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=120)
        result.target = target
        if queues:
            after = _intake_counts(url)
            counts = {k: v - before.get(k, 0) for k, v in after.items()}
            result.outcome = (
                f"outcomes in the measured run: {counts}; jobs in the arq queue "
                f"(warm-up included): {_zcard(redis.port)}"
            )
        for written in work.glob(f"pool-{target}-*.txt"):
            written.unlink()
    return result


def _start_spy(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid``'s raw (collapsed) stacks into ``output`` until SIGINT."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw",
         "--rate", "500", "--nonblocking", "--pid", str(pid), "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _redis_cli() -> list[str]:
    from calhooks.service.core.embedded_redis import redis_server_binary

    cli = Path(redis_server_binary()).with_name("redis-cli")
    return [str(cli) if cli.exists() else "redis-cli"]


def _zcard(port: int) -> int:
    output = subprocess.run(
        [*_redis_cli(), "-p", str(port), "ZCARD", "arq:queue"], check=True, capture_output=True,
        text=True,
    )  # fmt: skip
    return int(output.stdout.strip())


def _report(results: dict[str, Result], args: argparse.Namespace, size: int) -> None:
    cpu = _cpu_model()
    rounds = f", best of {args.rounds} rounds" if args.rounds > 1 else ""
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"~{size} B signed bodies{rounds}; {os.cpu_count()} CPUs ({cpu}), Python "
        f"{sys.version.split()[0]}"
    )
    print(
        "| target | req/s (best) | p50 ms (median) | p99 ms (median) | server CPU us/request "
        "(median) | ratio to bare |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    bare = results.get("bare")
    for result in results.values():
        ratio = f"{result.requests_per_second / bare.requests_per_second:.2f}x" if bare else "-"
        print(
            f"| {result.target} | {result.requests_per_second:.0f} | {result.p50_ms:.2f} | "
            f"{result.p99_ms:.2f} | {result.cpu_us:.0f} | {ratio} |"
        )
    if "intake" in results and "naive" in results:
        gain = results["intake"].requests_per_second / results["naive"].requests_per_second
        print(f"intake / naive: {gain:.1f}x")
    if "intake" in results and "redispy" in results:
        _compare("RedisPipe against redis-py", results["intake"], results["redispy"])
    if "connection" in results and "intake" in results:
        share = results["connection"].requests_per_second / results["intake"].requests_per_second
        print(
            f"connection / intake: {share:.2f}x ({CONNECTIONS} connections stored; the"
            " environment's URL against one connection's)"
        )
    if "handlog" in results and "intake" in results:
        _compare(
            "the replaced batching writer against structlog's fast path",
            results["handlog"],
            results["intake"],
        )


def _compare(part: str, ours: Result, library: Result) -> None:
    """The hand-written part's gain on each figure (positive: ours is better)."""
    gains = {
        "throughput": ours.requests_per_second / library.requests_per_second - 1,
        "p99": library.p99_ms / ours.p99_ms - 1,
        "CPU per request": library.cpu_us / max(ours.cpu_us, 1e-9) - 1,
    }
    shown = ", ".join(f"{name} {gain:+.0%}" for name, gain in gains.items())
    print(f"{part}: {shown} (positive: the hand-written part is better; keep at >= +15%)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
