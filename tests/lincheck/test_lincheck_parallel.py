"""Worker processes give the same verdicts as the in-process path."""

from __future__ import annotations

import random

import pytest

from kvcluster.lincheck import check

from .builders import Builder
from .simulate import simulate


@pytest.mark.slow
def test_parallel_matches_in_process() -> None:
    ops = simulate(random.Random(3), processes=4, keys=6, steps=600)
    end = max(op.time for op in ops) + 1
    offset = max(op.process for op in ops)
    bad = Builder().add("write", call=end, ret=end + 1, key="bad", value="a", version=1)
    bad.add("read", call=end + 2, ret=end + 3, key="bad", value=None, version=0)
    ops += [
        op.__class__(**{**{n: getattr(op, n) for n in op.__slots__}, "process": op.process + offset})
        for op in bad.ops()
    ]
    alone = check(ops, 30.0)
    together = check(ops, 30.0, workers=3)
    assert {k: r.verdict for k, r in alone.keys.items()} == {k: r.verdict for k, r in together.keys.items()}
    assert together.keys[b"bad"].minimal == alone.keys[b"bad"].minimal
