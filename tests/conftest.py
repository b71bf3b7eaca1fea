"""Session-wide: the per-suite summary at the end of a run.

``-ra`` lists every skip with its reason, but among hundreds of lines; CI wants to see at a glance
which suites ran and which did not. So the run ends with one line per test directory (passed,
failed, errors, skipped, deselected) and the distinct skip reasons of that directory. With
``KVCLUSTER_SUITE_SUMMARY=FILE`` the same lines are appended to FILE (``.ci/run`` prints it last).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

SUMMARY_ENV = "KVCLUSTER_SUITE_SUMMARY"
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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = suite_lines(terminalreporter.stats)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        lines.append("no tests ran (pytest exit status 5): a failure")
    if not lines:
        return
    terminalreporter.section("suites")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get(SUMMARY_ENV)
    if target:
        args = " ".join(str(a) for a in config.invocation_params.args) or "(testpaths)"
        with Path(target).open("a", encoding="utf-8") as fp:
            fp.write(f"pytest {args}: exit status {int(exitstatus)}\n")
            fp.writelines(f"  {line}\n" for line in lines)
