"""The chaos run (``tests/workers/chaos.py``) at the default settings, with its figures.

Real processes on loopback - Redis with AOF, the sandbox Cal.com, two intakes, two workers
with ``examples/rules.yaml`` - through a Redis kill (``--redis-down`` s), a worker SIGKILL,
both intakes restarted with SIGTERM, 429 and 503 windows and answers slower than the API
timeout. Prints the report as JSON: lost, doubled and stray effects, unexpected exits, the
drain time after the last delivery, SIGKILL -> re-run, secrets found in logs and Redis' files.

    .venv/bin/python bench/chaos.py [--bookings 60] [--emit-seconds 60] [--redis-down 30]
        [--set worker_rate_limit_per_minute=0 ...] [--workdir DIR]

Bounded: at most ``bookings`` x 2 triggers x 2 deliveries, and ``--drain-deadline`` seconds
of waiting after the last delivery. Exit status 0 when the run is clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.workers.chaos import Plan, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=Plan.bookings)
    parser.add_argument("--cancel-every", type=int, default=Plan.cancel_every)
    parser.add_argument("--emit-seconds", type=float, default=Plan.emit_seconds)
    parser.add_argument("--redis-down", type=float, default=Plan.redis_down)
    parser.add_argument("--fault-window", type=float, default=Plan.fault_window)
    parser.add_argument("--drain-deadline", type=float, default=Plan.drain_deadline)
    parser.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    plan = Plan(
        bookings=args.bookings,
        cancel_every=args.cancel_every,
        emit_seconds=args.emit_seconds,
        redis_down=args.redis_down,
        fault_window=args.fault_window,
        drain_deadline=args.drain_deadline,
        settings=settings,
    )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="calhooks-chaos-"))
    report = asyncio.run(run(plan, workdir))
    print(
        json.dumps({"plan": plan.__dict__, "workdir": str(workdir), **report.to_dict()}, indent=2)
    )
    return 0 if report.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
