"""What calhooks wrote itself, measured side by side with the well-kept library doing the job.

A hand-written part stays only while one run of this script shows it at least 15 %
(``KEEP_AT``) better than the library on the figure it exists for; otherwise the library
replaces it. Each subcommand prints its figures, the gain and the verdict
(``docs/performance-handwritten.md`` holds the table):

* ``redispipe`` - ``service/intake/redispipe.py`` against redis-py (hiredis) running the same
  Lua script with the same group commit: the intake's throughput and p99 under wrk
  (``bench/ingest.py --targets intake,redispy``; extra arguments are passed on);
* ``accesslog`` - the per-delivery log line: the former hand-written batching writer against
  structlog's fast path (``BytesLogger``, orjson renderer, a cached
  ``make_filtering_bound_logger``; now ``service/intake/accesslog.py``) writing the same
  lines: CPU time per line in a running event loop, then the intake's throughput (the
  figure), CPU per request and p99 under wrk (``bench/ingest.py --targets handlog,intake``);
* ``probes`` - the workers' former hand-written probe server against ``aiohttp.web`` (now
  ``workers/health.py``) serving the same three routes: the worker process' memory (the
  figure), start-up and probe latency, each server in a fresh process that first imports the
  worker's modules but its probe server;
* ``yaml`` - the rules' YAML 1.2 scalar resolver on PyYAML (``workers/rules/yamlsource.py``)
  against ruamel.yaml's YAML 1.2 loader: time to read the rules files, and whether the two
  read the same values (ruamel.yaml is not a calhooks dependency:
  ``.venv/bin/pip install ruamel.yaml`` to run this row);
* ``cel`` - references from CEL source by regular expressions (``workers/rules/expressions.py``)
  against the ``cel`` package's parse tree: checks what the installed package exposes.

    .venv/bin/python bench/handwritten.py {redispipe,accesslog,probes,yaml,cel} [--rounds N]

Rounds are interleaved (ours, library, ours, library ...) and each side's best round is
kept (for the wrk runs: best req/s, median latency and CPU per request), so a neighbour's burst
on this shared machine slows one round, not one side. The parts a measurement replaced live on
in ``bench/replaced.py``, only to reproduce their rows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The gain a hand-written part must show to stay.
KEEP_AT = 0.15


def verdict(name: str, gain: float, figure: str) -> None:
    """Print the gain of ours over the library on ``figure`` and what follows from it."""
    decision = "KEEP the hand-written part" if gain >= KEEP_AT else "REPLACE it with the library"
    print(
        f"\n{name}: hand-written is {gain:+.0%} on {figure} (keep at >= {KEEP_AT:.0%}): {decision}"
    )


def best_of(rounds: int, sides: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each side's figure per round, sides interleaved within a round."""
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            figures[name].append(run())
    return figures


# ---------------------------------------------------------------- redispipe: the ingest run


def ingest_run(targets: str, rounds: int, extra: list[str]) -> dict[str, dict[str, float]]:
    """``bench/ingest.py`` on ``targets`` (its output shown); each target's summary.

    One body size (its summary is one figure per target): 1.5 KB, the size these parts were
    measured at, unless ``extra`` gives ``--sizes``.
    """
    if not any(arg == "--sizes" or arg.startswith("--sizes=") for arg in extra):
        extra = ["--sizes", "1500", *extra]
    with tempfile.TemporaryDirectory(prefix="calhooks-handwritten-") as tmp:
        summary = Path(tmp) / "summary.json"
        command = [
            sys.executable, str(ROOT / "bench/ingest.py"), "--targets", targets,
            "--rounds", str(rounds), "--json", str(summary), *extra,
        ]  # fmt: skip
        print(f"$ bench/ingest.py --targets {targets} --rounds {rounds}", *extra, flush=True)
        subprocess.run(command, check=True, cwd=ROOT)
        result: dict[str, dict[str, float]] = json.loads(summary.read_text())
        return result


def redispipe(args: argparse.Namespace, extra: list[str]) -> None:
    runs = ingest_run("intake,redispy", args.rounds or 3, extra)
    ours, library = runs["intake"], runs["redispy"]
    throughput = ours["requests_per_second"] / library["requests_per_second"] - 1
    p99 = library["p99_ms"] / ours["p99_ms"] - 1
    figure, gain = max((("throughput", throughput), ("p99", p99)), key=lambda item: item[1])
    verdict(
        "redispipe", gain, f"the intake's {figure} (throughput {throughput:+.0%}, p99 {p99:+.0%})"
    )


# ---------------------------------------------------------------- accesslog


def _delivery_fields(n: int) -> dict[str, Any]:
    return {
        "request_id": f"a1b2c3{n:010x}",
        "outcome": "accepted",
        "status": 202,
        "latency_ms": 0.412,
        "event_id": f"evt-{n}",
        "trigger": "BOOKING_CREATED",
    }


def accesslog(args: argparse.Namespace, extra: list[str]) -> None:
    import structlog
    from replaced import BatchedDeliveryLog

    from calhooks.service.core.logs import configure_logging
    from calhooks.service.intake.accesslog import AccessLog

    lines, per_turn = args.lines, args.per_turn
    fields = [_delivery_fields(n) for n in range(per_turn)]
    structlog.contextvars.bind_contextvars(pod="web-0")

    with tempfile.TemporaryDirectory(prefix="calhooks-accesslog-") as tmp:
        ours_path, library_path = Path(tmp) / "ours.log", Path(tmp) / "library.log"
        ours_file = open(ours_path, "a", encoding="utf-8")  # noqa: SIM115
        library_file = open(library_path, "a", encoding="utf-8")  # noqa: SIM115
        # The production set-up (service.core.logs: JSON lines on one stream handler); each
        # writer takes the handler configured when it is built.
        configure_logging("info", "json", stream=ours_file)
        ours = BatchedDeliveryLog()
        configure_logging("info", "json", stream=library_file)
        library = AccessLog()
        assert ours.fast, "the batching writer did not take its fast path"
        assert library.fast, "AccessLog did not take its fast path"

        def run(write: Callable[[dict[str, Any]], None]) -> float:
            async def requests() -> None:
                for _ in range(lines // per_turn):  # a turn answers per_turn requests
                    for one in fields:
                        write(one)
                    await asyncio.sleep(0)

            gc.collect()
            started = time.process_time()
            asyncio.run(requests())
            return (time.process_time() - started) / lines * 1e6

        sides = {
            "hand-written (batching)": lambda: run(lambda f: ours.log("info", "delivery", **f)),
            "structlog fast path": lambda: run(lambda f: library.log("info", "delivery", **f)),
        }
        figures = best_of(5, sides)
        ours_file.close()
        library_file.close()
        same = _same_lines(ours_path, library_path)

    print(f"{lines} lines, {per_turn} per event-loop turn, to a file; CPU µs per line:")
    for name, values in figures.items():
        print(f"  {name:>23}: best {min(values):6.2f}  median {statistics.median(values):6.2f}")
    print(f"  same lines (timestamps aside): {same}")
    ours_us = min(figures["hand-written (batching)"])
    library_us = min(figures["structlog fast path"])
    print(f"  per line, hand-written: {library_us / ours_us - 1:+.0%}\n", flush=True)
    # The line exists to cost the intake no throughput: that is the figure, measured end to
    # end with each writer.
    runs = ingest_run("handlog,intake", args.rounds or 3, extra)
    ours_run, library_run = runs["handlog"], runs["intake"]
    saved = library_us - ours_us
    print(
        f"\nthe per-line saving ({saved:.1f} us) is {saved / library_run['cpu_us']:.1%} of the "
        f"intake's CPU per request ({library_run['cpu_us']:.0f} us)"
    )
    throughput = ours_run["requests_per_second"] / library_run["requests_per_second"] - 1
    verdict(
        "accesslog",
        throughput,
        f"the intake's throughput (CPU per request "
        f"{library_run['cpu_us'] / ours_run['cpu_us'] - 1:+.0%}, p99 "
        f"{library_run['p99_ms'] / ours_run['p99_ms'] - 1:+.0%})",
    )


def _same_lines(first: Path, second: Path) -> bool:
    def records(path: Path) -> Iterator[dict[str, Any]]:
        with path.open("rb") as handle:
            for line in handle:
                record = json.loads(line)
                stamp = record.pop("timestamp")
                assert stamp.endswith("Z"), stamp
                yield record

    return all(a == b for a, b in zip(records(first), records(second), strict=True))


# ---------------------------------------------------------------- probes


def _rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _serve_probes(kind: str) -> None:
    """The probe-server process: the worker without its probe server, then one server.

    The base is every ``calhooks.workers`` module but ``health`` and ``bootstrap`` (which
    imports it), so what the server loads - ``aiohttp.web`` for the library - counts as its
    own cost. Handlers answer at once (Redis and the rules are not what is measured).
    """
    import importlib
    import pkgutil

    import calhooks.workers

    started = time.perf_counter()
    for module in pkgutil.walk_packages(calhooks.workers.__path__, "calhooks.workers."):
        if module.name not in ("calhooks.workers.health", "calhooks.workers.bootstrap"):
            importlib.import_module(module.name)
    from calhooks.workers.metrics import render

    assert "aiohttp.web" not in sys.modules, "the base already holds aiohttp.web"
    base_rss = _rss_kib()
    imported = time.perf_counter()
    loop = asyncio.get_running_loop()

    began = time.perf_counter()
    server: Any
    if kind == "ours":
        from replaced import HandWrittenProbeServer as server
        from replaced import Reply
    else:
        from calhooks.workers.health import ProbeServer as server
        from calhooks.workers.health import Reply  # type: ignore[assignment]

    async def ok() -> Any:
        return Reply(200, b"ok\n")

    async def scrape() -> Any:
        return Reply(200, render(), "text/plain; version=0.0.4; charset=utf-8")

    routes = {"/livez": ok, "/readyz": ok, "/metrics": scrape}
    probe_server = server(routes, host="127.0.0.1", port=0)
    await probe_server.start()
    port = probe_server.port
    ready = time.perf_counter()
    report = {
        "port": port,
        "worker_import_ms": (imported - started) * 1000,
        "server_start_ms": (ready - began) * 1000,
        "base_rss_kib": base_rss,
    }
    print("PROBE-REPORT", json.dumps(report), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # until the driver is done
    await probe_server.stop()


def _probe(port: int, path: str) -> tuple[float, bytes]:
    """One probe as the kubelet sends it: a new connection, GET, read to close."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.31\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return time.perf_counter() - started, b"".join(chunks)


def _probe_round(kind: str, requests: int) -> dict[str, float]:
    process = subprocess.Popen(
        [sys.executable, __file__, "_probe_server", kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        while line and not line.startswith("PROBE-REPORT "):  # the server's own log lines
            line = process.stdout.readline()
        report = json.loads(line.split(" ", 1)[1])
        port = report["port"]
        latencies = []
        for n in range(requests):
            path = ("/livez", "/readyz", "/metrics")[n % 3]
            elapsed, answer = _probe(port, path)
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{kind} {path}: {answer[:80]!r}")
            latencies.append(elapsed * 1000)
        rss = _rss_kib(process.pid)
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    latencies.sort()
    return {
        "added_rss_kib": rss - report["base_rss_kib"],
        "worker_rss_kib": rss,
        "start_ms": report["server_start_ms"],
        "worker_start_ms": report["worker_import_ms"] + report["server_start_ms"],
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
    }


def probes(args: argparse.Namespace) -> None:
    rounds, requests = args.rounds or 3, args.requests
    results: dict[str, list[dict[str, float]]] = {"ours": [], "aiohttp": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(_probe_round(kind, requests))
    print(
        f"{rounds} rounds; each: a fresh process importing the worker's modules but its probe "
        f"server, then one server, {requests} probes (new connection each, /livez /readyz "
        f"/metrics in turn); best of the rounds"
    )
    print(
        "| server | worker RSS MiB | RSS added MiB | worker start ms | server start ms "
        "| probe p50 ms | probe p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    best: dict[str, dict[str, float]] = {}
    for kind, runs in results.items():
        best[kind] = {key: min(run[key] for run in runs) for key in runs[0]}
        b = best[kind]
        print(
            f"| {kind} | {b['worker_rss_kib'] / 1024:.1f} | {b['added_rss_kib'] / 1024:.2f} | "
            f"{b['worker_start_ms']:.0f} | {b['start_ms']:.2f} | {b['p50_ms']:.3f} | "
            f"{b['p99_ms']:.3f} |"
        )
    ours, library = best["ours"], best["aiohttp"]
    print(
        f"\nother figures, hand-written against aiohttp.web: added RSS "
        f"{library['added_rss_kib'] / max(ours['added_rss_kib'], 1) - 1:+.0%}, server start "
        f"{library['start_ms'] / ours['start_ms'] - 1:+.0%}, worker start (imports + server) "
        f"{library['worker_start_ms'] / ours['worker_start_ms'] - 1:+.0%}, probe p50 "
        f"{library['p50_ms'] / ours['p50_ms'] - 1:+.0%}, probe p99 "
        f"{library['p99_ms'] / ours['p99_ms'] - 1:+.0%}"
    )
    verdict(
        "probes",
        library["worker_rss_kib"] / ours["worker_rss_kib"] - 1,
        "the worker process' memory (RSS with the server started and probed)",
    )


# ---------------------------------------------------------------- yaml


def _rules_corpus() -> list[str]:
    texts = [(ROOT / "examples/rules.yaml").read_text()]
    texts += [path.read_text() for path in sorted((ROOT / "tests").rglob("*.yaml"))]
    return texts


def ruamel_plain(text: str) -> Any:
    """The document read with ruamel.yaml's YAML 1.2 safe loader (plain Python values)."""
    from ruamel.yaml import YAML

    loader = YAML(typ="safe", pure=True)
    loader.version = (1, 2)  # type: ignore[assignment]
    return loader.load(text)


def ruamel_nodes(text: str) -> Any:
    """ruamel.yaml's YAML 1.2 node graph (values and lines), what yamlsource builds on."""
    from ruamel.yaml import YAML

    loader = YAML(typ="safe", pure=True)
    loader.version = (1, 2)  # type: ignore[assignment]
    return loader.compose(text)


def yaml_bench(args: argparse.Namespace) -> None:
    try:
        import ruamel.yaml
    except ImportError:
        sys.exit("ruamel.yaml is not installed: .venv/bin/pip install ruamel.yaml")
    import yaml

    from calhooks.workers.rules.yamlsource import _Loader, parse_yaml

    corpus = _rules_corpus()
    size = sum(len(text) for text in corpus)

    def timed(read: Callable[[str], Any]) -> Callable[[], float]:
        def run() -> float:
            gc.collect()
            started = time.perf_counter()
            for _ in range(args.number):
                for text in corpus:
                    read(text)
            return (time.perf_counter() - started) / args.number * 1000

        return run

    def pyyaml_nodes(text: str) -> Any:
        loader = _Loader(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()

    figures = best_of(
        args.rounds or 5,
        {
            "compose: PyYAML + our resolver": timed(pyyaml_nodes),
            "compose: ruamel.yaml 1.2": timed(ruamel_nodes),
            "parse_yaml (ours, Node tree)": timed(parse_yaml),
            "ruamel.yaml 1.2 safe load": timed(ruamel_plain),
        },
    )
    print(
        f"{len(corpus)} rules files ({size} characters), read {args.number} times per round; "
        f"ms per pass over the corpus (PyYAML {yaml.__version__}, ruamel.yaml "
        f"{ruamel.yaml.__version__}):"
    )
    for name, values in figures.items():
        print(f"  {name:>32}: best {min(values):7.2f}  median {statistics.median(values):7.2f}")

    print("\nscalars where the two read differently (yamlsource's tested YAML 1.2 behaviour):")
    differ = 0
    for text in SCALARS:
        ours = _ours_or_error(text)
        try:
            theirs = ruamel_plain(text)
        except Exception as error:
            theirs = f"error: {type(error).__name__}"
        if ours != theirs:
            differ += 1
            print(f"  {text!r:>28}: ours {ours!r}, ruamel.yaml {theirs!r}")
    if not differ:
        print("  none")
    ours_ms = min(figures["compose: PyYAML + our resolver"])
    library_ms = min(figures["compose: ruamel.yaml 1.2"])
    verdict("yaml", library_ms / ours_ms - 1, "time to read the rules files (compose)")


#: The scalar table of tests/rules/test_yamlsource.py, plus a few neighbours.
SCALARS = [
    "on: x", "a: yes", "a: off", "a: NO", "a: true", "a: False", "a: 2025-07-01",
    "a: 2025-07-01T00:00:00Z", "a: 017", "a: 0x1F", "a: 0o17", "a: 1:30", "a: 1_000", "a: -12",
    "a: 1.5e3", "a: .inf", "a: .nan", "a: ~", "a:", "a: '12'", "a: 1\na: 2",
]  # fmt: skip


def _ours_or_error(text: str) -> Any:
    from calhooks.workers.rules.yamlsource import YamlProblem, parse_yaml

    try:
        node = parse_yaml(text)
    except YamlProblem as error:
        return f"error: {type(error).__name__}"
    return node.plain() if node is not None else None


# ---------------------------------------------------------------- cel


def cel_check(_: argparse.Namespace) -> None:
    import importlib.metadata

    import cel

    version = importlib.metadata.version("common-expression-language")
    program = cel.compile('steps.user[0].id + env["org"] + event.trigger')
    public = sorted(name for name in dir(cel) if not name.startswith("_"))
    members = sorted(name for name in dir(program) if not name.startswith("_"))
    print(f"common-expression-language {version}")
    print(f"  module cel exposes: {', '.join(public)}")
    print(f"  a compiled Program exposes: {', '.join(members)}")
    print(f"  program.references() = {program.references()}")
    tree = [name for name in (*public, *members) if any(k in name.lower() for k in _TREE_WORDS)]
    if tree:
        print(f"  parse-tree access found: {tree}: compare it with the regular expressions")
        return
    print(
        "  no parse tree, AST or field selections: references() gives top-level variable and"
        " function names only, so `steps.<id>`, `env.<name>` and `event.<field>` cannot come"
        " from the package. There is nothing to replace the regular expressions with:"
        " KEEP them (no measurement possible)."
    )


_TREE_WORDS = ("ast", "tree", "parse", "expr", "select", "node")


# ---------------------------------------------------------------- main


def main() -> None:
    if sys.argv[1:2] == ["_probe_server"]:
        asyncio.run(_serve_probes(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["redispipe", "accesslog", "probes", "yaml", "cel"])
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (best kept)")
    parser.add_argument("--lines", type=int, default=200_000, help="accesslog: lines per round")
    parser.add_argument("--per-turn", type=int, default=32, help="accesslog: lines per loop turn")
    parser.add_argument("--requests", type=int, default=2000, help="probes: probes per round")
    parser.add_argument("--number", type=int, default=20, help="yaml: passes per round")
    args, extra = parser.parse_known_args()
    if extra and args.part not in ("redispipe", "accesslog"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}", flush=True)
    if args.part == "redispipe":
        redispipe(args, extra)
    elif args.part == "accesslog":
        accesslog(args, extra)
    elif args.part == "probes":
        probes(args)
    elif args.part == "yaml":
        yaml_bench(args)
    else:
        cel_check(args)


if __name__ == "__main__":
    main()
