"""Per-suite counts of a pytest run: which test directories ran, which skipped, and why."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

OUTCOMES = ("passed", "failed", "error", "skipped", "deselected")


def _suite(nodeid: str) -> str:
    """``tests/torture/test_x.py::test_y`` -> ``tests/torture``."""
    parts = nodeid.split("::", 1)[0].split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0]


def _skip_reason(report: Any) -> str:
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def suite_lines(stats: dict[str, list[Any]]) -> list[str]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, set[str]] = defaultdict(set)
    for outcome in OUTCOMES:
        for report in stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if outcome in ("passed", "failed") and getattr(report, "when", "call") != "call":
                # A teardown error of a passed test is counted under "error", not as a second test.
                continue
            suite = _suite(nodeid)
            counts[suite][outcome] += 1
            if outcome == "skipped":
                reasons[suite].add(_skip_reason(report))
    lines = []
    for suite in sorted(counts):
        c = counts[suite]
        line = f"{suite:<22} " + "  ".join(f"{c[o]} {o}" for o in OUTCOMES if c[o])
        lines.append(line)
        lines.extend(f"{'':<22}   skipped: {reason}" for reason in sorted(reasons[suite]))
    return lines
