"""The command-line entry point, called as a function."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcluster.lincheck import save_history
from kvcluster.lincheck.cli import main

from .builders import Builder
from .test_lincheck_budget import pathological


def test_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.jsonl"
    save_history(Builder().write("a", 0, 1, version=1).read("a", 1, 2, 3).ops(), path)
    assert main([str(path)]) == 0
    assert "ok: 2 operations on 1 keys" in capsys.readouterr().out


def test_violation_prints_the_smallest_failing_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    history = Builder().write("a", 0, 1, version=1).write("b", 2, 3, version=2).read("a", 1, 4, 5)
    save_history(history.ops(), path)
    assert main([str(path), "--budget", "10"]) == 1
    out = capsys.readouterr().out
    assert "violation" in out
    assert "write 'b' -> ok v2" in out and "[" in out, "the timeline survives rich's markup"
    assert "longest linearizable prefix" in out


def test_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hard.jsonl"
    save_history(pathological().ops(), path)
    assert main([str(path), "--budget", "0.2", "--no-shrink"]) == 3
    assert "time budget exhausted" in capsys.readouterr().out


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    path = tmp_path / "garbage.jsonl"
    path.write_text("{nope\n")
    assert main([str(path)]) == 2
    assert "line 1" in capsys.readouterr().out
    assert main(["--budget"]) == 2
    assert main(["--help"]) == 0
