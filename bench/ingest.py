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
  row measures plus whatever the command adds.

The load generator is ``wrk`` (Debian: ``apt-get install wrk``) with ``-t2 -c64`` by default
and a Lua script that sends distinct Cal.com-shaped bodies, each signed with HMAC-SHA256
here (so every intake request is a new delivery that gets queued; the script counts any
wrap-around, which would turn deliveries into cheaper duplicates). Every target is measured
with bodies of each size in ``--sizes`` (1.5, 2 and 4 KB by default: Cal.com's booking
bodies are 2-4 KB). Prints req/s, p50/p99 latency and each target's ratio to ``bare`` per
size, then what the intake queued.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 64] [--threads 2]
        [--sizes 1500,2048,4096] [--targets bare,naive,intake,serve]

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
TARGETS = ("bare", "naive", "intake", "serve")

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


def _intake_app(redis_url: str, spool_dir: str, log_file: str) -> Any:
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
        _env_file=None,
    )
    return create_app(settings)


def serve(target: str, port: int, redis_url: str, work_dir: str) -> None:
    import uvicorn

    from calhooks.service.cli.serve import server_options
    from calhooks.service.core.settings import Settings

    if target == "bare":
        app = _bare_app()
    elif target == "naive":
        app = _naive_app(redis_url)
    else:
        app = _intake_app(redis_url, f"{work_dir}/spool", f"{work_dir}/intake.log")
    options = server_options(Settings(_env_file=None))
    options.update(loop="uvloop", http="httptools", log_level="warning")
    if target != "intake":
        options["log_config"] = uvicorn.config.LOGGING_CONFIG
    uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options)).run()


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
    directory: Path, prefix: str, count: int, threads: int, first: int, size: int
) -> Path:
    template = _template()
    key = SECRET.encode()
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
def server(target: str, redis_url: str, work_dir: Path) -> Iterator[str]:
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
        yield url
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


def wrk(url: str, script: Path, pool: Path, args: argparse.Namespace, seconds: float) -> Result:
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--latency",
        "--timeout", "5s", "-s", str(script), url + PATH, "--", str(pool), PATH,
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
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="body bytes, comma-separated"
    )
    parser.add_argument("--serve", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis, args.work_dir)
        return
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    with tempfile.TemporaryDirectory(prefix="calhooks-bench-") as tmp, EmbeddedRedis() as redis:
        work = Path(tmp)
        script = work / "ingest.lua"
        script.write_text(LUA)
        by_size: dict[int, dict[str, Result]] = {}
        for size in sizes:
            warm_pool = write_pools(work, f"warm-{size}", 5000, args.threads, 10**9, size)
            results = by_size[size] = {}
            for target in targets:
                results[target] = measure(target, size, redis, work, script, warm_pool, args)
        for size, results in by_size.items():
            _report(results, args, size)


def measure(
    target: str,
    size: int,
    redis: EmbeddedRedis,
    work: Path,
    script: Path,
    warm_pool: Path,
    args: argparse.Namespace,
) -> Result:
    """One target with bodies of ``size`` bytes: warm-up, then the measured run."""
    subprocess.run(
        [*_redis_cli(), "-p", str(redis.port), "FLUSHALL"], check=True, capture_output=True
    )
    queues = target in ("intake", "serve")
    with server(target, redis.url, work) as url:
        warm = wrk(url, script, warm_pool, args, args.warmup)
        # Only the intake needs every body distinct (a repeat is a cheaper duplicate):
        # size its pool from the warm-up rate, with room to spare.
        # A slow warm-up (the first requests pay for connections) must not undersize it.
        count = int(max(warm.requests_per_second * 2.5, 8_000) * args.duration)
        if not queues:
            count = min(count, 20_000)
        pool = write_pools(work, f"pool-{target}", count, args.threads, 0, size)
        before = _intake_counts(url) if queues else {}
        result = wrk(url, script, pool, args, args.duration)
        result.target = target
        if queues:
            after = _intake_counts(url)
            counts = {k: v - before.get(k, 0) for k, v in after.items()}
            result.errors += f"; outcomes {counts}, queued {_zcard(redis.port)}"
        for path in work.glob(f"pool-{target}-*.txt"):
            path.unlink()
    print(
        f"{size:>5} B {target:>7}: {result.requests_per_second:9.0f} req/s  "
        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
        f"({result.requests} requests, errors: {result.errors}, pool wraps: {result.wraps})",
        flush=True,
    )
    return result


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
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, "
        f"~{size} B signed bodies; {os.cpu_count()} CPUs ({cpu}), Python "
        f"{sys.version.split()[0]}"
    )
    print("| target | req/s | p50 ms | p99 ms | ratio to bare |")
    print("|---|---:|---:|---:|---:|")
    bare = results.get("bare")
    for result in results.values():
        ratio = f"{result.requests_per_second / bare.requests_per_second:.2f}x" if bare else "-"
        print(
            f"| {result.target} | {result.requests_per_second:.0f} | {result.p50_ms:.2f} | "
            f"{result.p99_ms:.2f} | {ratio} |"
        )
    if "intake" in results and "naive" in results:
        gain = results["intake"].requests_per_second / results["naive"].requests_per_second
        print(f"intake / naive: {gain:.1f}x")


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
