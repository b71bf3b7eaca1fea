"""The time budget: a hard history yields 'unknown' promptly instead of hanging."""

from __future__ import annotations

import time

from kvcluster.lincheck import Verdict, check

from .builders import Builder


def pathological(writers: int = 30) -> Builder:
    """Many fully concurrent writes whose versions were not recorded, then an impossible read.

    Nothing orders the writes, so before giving up the search must consider
    every subset of them (2**30 configurations): far beyond any budget.
    """
    builder = Builder()
    for n in range(writers):
        builder.write(f"w{n}", 0, 100)
    return builder.read(None, 0, 200, 201)


def test_pathological_history_is_unknown_within_budget() -> None:
    started = time.monotonic()
    result = check(pathological().ops(), 0.3)
    elapsed = time.monotonic() - started
    assert result.verdict == Verdict.UNKNOWN
    assert result.keys[b"k"].reason == "time budget exhausted"
    assert elapsed < 5.0, f"budget 0.3s, took {elapsed:.1f}s"


def test_a_hard_key_does_not_starve_the_others() -> None:
    builder = pathological()
    for n in range(20):
        builder.add("write", call=300 + 2 * n, ret=301 + 2 * n, key=f"easy{n}", value="v", version=1)
        builder.add("read", call=400 + 2 * n, ret=401 + 2 * n, key=f"easy{n}", value=None, version=0)
    result = check(builder.ops(), 0.5)
    assert result.verdict == Verdict.VIOLATION, "the easy keys still get checked"
    assert result.keys[b"k"].verdict == Verdict.UNKNOWN
    assert len(result.violations) == 20


def test_small_pathological_history_is_decided() -> None:
    result = check(pathological(writers=8).ops(), 30.0)
    assert result.verdict == Verdict.VIOLATION
