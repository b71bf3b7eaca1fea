"""The rules the suites run by: as root on Linux a test that cannot run fails, elsewhere it skips;
and the per-suite summary counts what ran, what skipped and why."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from tests import environment
from tests.suites import suite_lines


@pytest.mark.skipif(sys.platform != "linux", reason="the rule is about Linux")
def test_root_fails_where_others_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.ALLOW_SKIPS_ENV, raising=False)
    monkeypatch.setattr(environment.os, "geteuid", lambda: 0)
    with pytest.raises(pytest.fail.Exception, match="no iptables -- as root on Linux this must run"):
        environment.cannot_run("no iptables")
    monkeypatch.setenv(environment.ALLOW_SKIPS_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="no iptables"):
        environment.cannot_run("no iptables")
    monkeypatch.delenv(environment.ALLOW_SKIPS_ENV)
    monkeypatch.setattr(environment.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="no iptables"):
        environment.cannot_run("no iptables")


def report(nodeid: str, when: str = "call", reason: str | None = None) -> SimpleNamespace:
    longrepr = (nodeid.split("::", maxsplit=1)[0], 1, f"Skipped: {reason}") if reason else None
    return SimpleNamespace(nodeid=nodeid, when=when, longrepr=longrepr)


def test_suite_lines_count_per_directory_with_skip_reasons() -> None:
    stats = {
        "passed": [report("tests/raft/test_a.py::t1"), report("tests/raft/test_a.py::t2"),
                   report("tests/raft/test_a.py::t1", when="teardown")],
        "failed": [report("tests/torture/test_n.py::t")],
        "skipped": [report("tests/e2e_kind/test_kind.py::t", when="setup", reason="kind not installed"),
                    report("tests/e2e_kind/test_kind.py::u", when="setup", reason="kind not installed")],
        "deselected": [SimpleNamespace(nodeid="tests/deploy/test_container.py::t")],
    }  # fmt: skip
    lines = suite_lines(stats)
    assert [line.split()[0] for line in lines if not line.startswith(" ")] == [
        "tests/deploy", "tests/e2e_kind", "tests/raft", "tests/torture"
    ]  # fmt: skip
    text = "\n".join(lines)
    assert "tests/raft             2 passed" in text  # a teardown report is not a second test
    assert "tests/e2e_kind         2 skipped" in text
    assert text.count("skipped: kind not installed") == 1
    assert "tests/deploy           1 deselected" in text and "1 failed" in text
