"""Session-wide: the per-suite summary at the end of a run.

``-ra`` lists every skip with its reason, but among hundreds of lines; CI wants to see at a glance
which suites ran and which did not. So the run ends with one line per test directory (passed,
failed, errors, skipped, deselected) and the distinct skip reasons of that directory. With
``KVCLUSTER_SUITE_SUMMARY=FILE`` the same lines are appended to FILE (``.ci/run`` prints it last).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.suites import suite_lines

SUMMARY_ENV = "KVCLUSTER_SUITE_SUMMARY"


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
