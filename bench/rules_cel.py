"""The two Python CEL implementations side by side: speed, and a few behaviours that matter.

The rules engine (``workers/rules/expressions.py``) uses ``common-expression-language``
(import ``cel``, Rust-backed). This script is the measurement behind that choice, kept so
it can be re-run when either library moves. It compares against ``cel-python`` (import
``celpy``, pure Python), which is not a calhooks dependency: install it in the venv to
compare (``.venv/bin/pip install cel-python``); without it only ``cel`` is measured.

For each representative expression over Cal.com's example BOOKING_CREATED payload it
prints compile and evaluate times (median of several rounds, microseconds per operation)
and the ratio; then the cost of handing one event's variables to each library (done once
per event and rule run); then a table of behaviours (missing fields, ``has()``, mixed
int/double equality, the optional type, string helpers). ``cel`` is measured as the rules
engine configures it (``calhooks.workers.rules.evaluation.new_context``: extension functions on).

    .venv/bin/python bench/rules_cel.py [--rounds 5] [--number 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calhooks.workers.rules.evaluation import new_context  # noqa: E402

PAYLOAD = json.loads((ROOT / "tests/fixtures/webhooks/BOOKING_CREATED.json").read_text())["payload"]
VARIABLES: dict[str, Any] = {
    "payload": PAYLOAD,
    "event": {"trigger": "BOOKING_CREATED", "createdAt": "2025-10-10T09:12:44.301Z"},
    "env": {"org_id": 1, "org_domain": "acme.example"},
    "steps": {"user": [{"id": 101, "email": "dana@acme.example"}]},
}

#: What rules really evaluate: conditions, a comprehension, parameter values.
EXPRESSIONS = {
    "equality": 'payload.type == "30min-intro"',
    "string method": 'payload.organizer.email.endsWith("@" + env.org_domain)',
    "has() guard": 'has(payload.team) ? payload.team.name : "none"',
    "comprehension": 'payload.attendees.exists(a, a.email.endsWith("@client.example"))',
    "step output": "steps.user[0].id",
    "concatenation": '"calhooks booking " + payload.uid',
}

#: Behaviours (name, expression); the printed value or error is what each library does.
BEHAVIOURS = {
    "missing field": "payload.nope == 1",
    "has(missing)": "has(payload.nope)",
    "int == double": "payload.price == 0.0",
    "error || true": "payload.nope == 1 || true",
    "optional.of().orValue()": "optional.of(1).orValue(2)",
    "optional field .?": 'payload.?team.orValue("none")',
    "lowerAscii()": "payload.organizer.email.lowerAscii()",
    "timestamp()": "timestamp(payload.startTime)",
}


def per_op(function: Callable[[], object], rounds: int, number: int) -> float:
    """Median microseconds per call over ``rounds`` rounds of ``number`` calls."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(number):
            function()
        timings.append((time.perf_counter() - started) / number * 1e6)
    return statistics.median(timings)


class RustCel:
    name = "common-expression-language (cel)"

    def __init__(self) -> None:
        self.context = self.variables()

    @staticmethod
    def variables() -> Any:
        return new_context(VARIABLES)

    def compile(self, source: str) -> Any:
        import cel

        return cel.compile(source)

    def evaluate(self, program: Any) -> Any:
        return program.execute(self.context)


class PyCel:
    name = "cel-python (celpy)"

    def __init__(self) -> None:
        import celpy

        self.celpy = celpy
        self.environment = celpy.Environment()
        self.activation = self.variables()

    def variables(self) -> Any:
        convert = self.celpy.json_to_cel
        return {name: convert(value) for name, value in VARIABLES.items()}

    def compile(self, source: str) -> Any:
        return self.environment.program(self.environment.compile(source))

    def evaluate(self, program: Any) -> Any:
        return program.evaluate(self.activation)


def outcome(library: Any, source: str) -> str:
    try:
        value = library.evaluate(library.compile(source))
    except Exception as error:
        return f"error: {type(error).__name__}"
    if type(value).__name__ == "CELEvalError":  # celpy returns some errors as values
        return "error: CELEvalError"
    return repr(value)[:40]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()

    libraries: list[Any] = [RustCel()]
    try:
        libraries.append(PyCel())
    except ImportError:
        print("cel-python is not installed: measuring cel only (pip install cel-python)\n")
    import logging

    logging.disable(logging.WARNING)  # celpy logs every evaluation error

    print(f"{'expression':<16}" + "".join(f"{lib.name:>48}" for lib in libraries), end="")
    print(f"{'ratio':>8}" if len(libraries) == 2 else "")
    print(f"{'':<16}" + "".join(f"{'compile µs':>32}{'eval µs':>16}" for _ in libraries))
    ratios = []
    for label, source in EXPRESSIONS.items():
        row = f"{label:<16}"
        evals = []
        for library in libraries:
            program = library.compile(source)
            compile_us = per_op(partial(library.compile, source), args.rounds, 200)
            eval_us = per_op(partial(library.evaluate, program), args.rounds, args.number)
            evals.append(eval_us)
            row += f"{compile_us:>32.1f}{eval_us:>16.2f}"
        if len(evals) == 2:
            ratios.append(evals[1] / evals[0])
            row += f"{evals[1] / evals[0]:>7.1f}x"
        print(row)
    if ratios:
        print(f"\nevaluation: cel is {statistics.median(ratios):.1f}x faster (median ratio)")
    costs = [per_op(library.variables, args.rounds, 200) for library in libraries]
    shown = "   ".join(
        f"{lib.name}: {cost:.1f} µs" for lib, cost in zip(libraries, costs, strict=True)
    )
    print(f"one event's variables: {shown}")

    print(f"\n{'behaviour':<26}" + "".join(f"{lib.name:>40}" for lib in libraries))
    for label, source in BEHAVIOURS.items():
        print(f"{label:<26}" + "".join(f"{outcome(lib, source):>40}" for lib in libraries))


if __name__ == "__main__":
    main()
