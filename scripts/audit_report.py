"""Judge one pip-audit JSON report (see scripts/audit): the exit status and what to print.

Usage: python scripts/audit_report.py LOCK REPORT
Exits 1 on any known vulnerability or a partial audit; 0 with a loud warning when no
package at all could be checked (no advisory source reachable), unless
CALHOOKS_AUDIT_REQUIRED=1.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def judge(lock: str, report: dict[str, Any], *, required: bool) -> tuple[int, list[str]]:
    """The exit status and the lines to print for ``report`` of ``lock``."""
    deps = report.get("dependencies", [])
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    lines: list[str] = []
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            lines.append(
                f"audit {lock}: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})"
            )
    if vulnerable:
        return 1, [*lines, f"audit {lock}: {len(vulnerable)} vulnerable package(s)"]
    if deps and len(skipped) == len(deps):
        message = (
            f"audit {lock}: NOT AUDITED - no advisory source answered for any of its "
            f"{len(deps)} packages ({skipped[0]['skip_reason']})"
        )
        return (1, [message]) if required else (0, ["WARNING: " + message])
    if skipped:
        names = ", ".join(d["name"] for d in skipped)
        return 1, [f"audit {lock}: could not check {len(skipped)} package(s): {names}"]
    if not deps:
        return 1, [f"audit {lock}: pip-audit listed no packages"]
    return 0, [f"audit {lock}: {len(deps)} packages, no known vulnerabilities"]


def main() -> int:
    lock, path = sys.argv[1], sys.argv[2]
    try:
        with open(path) as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        print(f"audit {lock}: pip-audit produced no report", file=sys.stderr)
        return 1
    status, lines = judge(lock, report, required=os.environ.get("CALHOOKS_AUDIT_REQUIRED") == "1")
    for line in lines:
        print(line, file=sys.stderr if status or line.startswith("WARNING") else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
