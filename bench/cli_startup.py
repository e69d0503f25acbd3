"""How fast `calhooks` starts: whole processes, median of several runs, side by side.

Runs each light command (``--help``, every command group's ``--help``, a few subcommands'
``--help``, ``tools list``, ``tools describe``, ``keygen``) as its own process, interleaved
with two references measured in the same run: the bare interpreter (``python -c pass``, the
floor) and every command module imported eagerly (what ``calhooks --help`` would cost if
commands loaded up front). Prints the median wall time and peak memory of each, the
ratio to the eager import, and whether it meets the target (at most 0.2 s).

    .venv/bin/python bench/cli_startup.py [--runs 15]

Every group's ``--help`` is measured (the groups are read from ``calhooks.service.cli.main``'s
``COMMANDS``, so a new group is measured too): typer builds a group's help from its module,
so a module that imports something heavy at its top shows up here as SLOW.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from calhooks.service.cli.main import COMMANDS

TARGET_SECONDS = 0.2
CALHOOKS = Path(os.path.abspath(sys.executable)).parent / "calhooks"
GROUPS = tuple(COMMANDS)
MODULES = tuple(sorted({lazy.module.rsplit(".", 1)[1] for lazy in COMMANDS.values()}))
EAGER = "; ".join(f"import calhooks.service.cli.{name}" for name in MODULES)

CASES: dict[str, list[str]] = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "every command module (eager)": [sys.executable, "-c", EAGER],
    "calhooks --help": [str(CALHOOKS), "--help"],
    **{f"calhooks {group} --help": [str(CALHOOKS), group, "--help"] for group in GROUPS},
    "calhooks webhooks plan --help": [str(CALHOOKS), "webhooks", "plan", "--help"],
    "calhooks sandbox emit --help": [str(CALHOOKS), "sandbox", "emit", "--help"],
    "calhooks rules test --help": [str(CALHOOKS), "rules", "test", "--help"],
    "calhooks connections add --help": [str(CALHOOKS), "connections", "add", "--help"],
    "calhooks mcp serve --help": [str(CALHOOKS), "mcp", "serve", "--help"],
    "calhooks tools list": [str(CALHOOKS), "tools", "list"],
    "calhooks tools describe": [
        str(CALHOOKS),
        "tools",
        "describe",
        "cal_organizations_users_ooocontroller_get_organization_user_ooo",
    ],
    "calhooks keygen": [str(CALHOOKS), "keygen"],
}
REFERENCES = ("python -c pass (floor)", "every command module (eager)")


def run_once(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in CASES}
    memory: dict[str, list[float]] = {name: [] for name in CASES}
    for command in CASES.values():
        run_once(command)  # warm the file cache and the bytecode
    for _ in range(runs):
        for name, command in CASES.items():  # interleaved: the same machine load for all
            seconds, mib = run_once(command)
            times[name].append(seconds)
            memory[name].append(mib)
    eager = statistics.median(times["every command module (eager)"])
    print(f"{runs} runs each, interleaved; median wall time and peak RSS of the whole process")
    print(f"{'command':<34} {'median s':>9} {'MiB':>6} {'vs eager':>9}  target <= {TARGET_SECONDS}")
    slow = []
    for name in CASES:
        median = statistics.median(times[name])
        mib = statistics.median(memory[name])
        verdict = "" if name in REFERENCES else ("ok" if median <= TARGET_SECONDS else "SLOW")
        if verdict == "SLOW":
            slow.append(name)
        print(f"{name:<34} {median:>9.3f} {mib:>6.1f} {median / eager:>8.2f}x  {verdict}")
    measured = len(CASES) - len(REFERENCES)
    print(f"{measured - len(slow)} of {measured} commands within {TARGET_SECONDS} s")


if __name__ == "__main__":
    main()
