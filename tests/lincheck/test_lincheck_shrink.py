"""The smallest failing sub-history: smaller, still failing, and meaningful."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcluster.lincheck import Verdict, check, unpair
from kvcluster.lincheck.intervals import pair
from kvcluster.lincheck.prepare import relevant
from kvcluster.lincheck.shrink import close, dependencies

from .builders import Builder
from .simulate import simulate


def buried_stale_read() -> Builder:
    """A long, busy, correct history with one stale read in the middle."""
    builder = Builder()
    t = 0
    for n in range(40):
        version = n + 1
        builder.write(f"x{n}", t, t + 3, version=version)
        builder.read(f"x{n}", version, t + 4, t + 5)
        builder.read(None, 0, t, t + 1) if n == 0 else builder.read(f"x{n - 1}", version - 1, t, t + 2)
        if n == 20:
            builder.read(f"x{n - 2}", version - 2, t + 6, t + 7)  # x19 and x20 came after
        t += 8
    return builder


def test_minimal_history_is_smaller_and_still_fails() -> None:
    ops = buried_stale_read().ops()
    result = check(ops, 30.0)
    [bad] = result.violations
    assert bad.operations == 120 + 1
    assert len(bad.minimal) <= 4, bad.explain()
    # replayed on its own, the minimal history still fails
    again = check(bad.minimal_history(), 30.0)
    assert again.verdict == Verdict.VIOLATION
    # it keeps the write the stale read saw (no bogus "never written" read) and one that overwrote it
    written = {operation.value for operation in bad.minimal if operation.f == "write"}
    assert b"x18" in written and written & {b"x19", b"x20"}


def test_minimal_history_of_a_generated_violation() -> None:
    """A busy concurrent history plus, at the end, a read of the first value ever written."""
    ops = simulate(random.Random(7), processes=4, keys=1, steps=300, functions=("read", "write", "cas"))
    writes = [o for o in pair(ops) if o.f == "write" and o.status == "ok"]
    first = min(writes, key=lambda o: o.ret or 0)
    assert first.value is not None
    end = max(op.time for op in ops) + 1
    stale = Builder().add(
        "read", call=end, ret=end + 1, key="k0", value=first.value.decode(), version=first.version
    )
    ops += [dataclasses.replace(op, process=10_000) for op in stale.ops()]
    result = check(ops, 30.0)
    [bad] = result.violations
    assert len(bad.minimal) < bad.operations // 10
    assert check(unpair(bad.minimal), 30.0).verdict == Verdict.VIOLATION


def test_without_shrinking_the_whole_key_is_reported() -> None:
    result = check(buried_stale_read().ops(), 30.0, shrink=False)
    [bad] = result.violations
    assert len(bad.minimal) == bad.operations


def test_closure_keeps_the_writes_that_reads_saw() -> None:
    ops = Builder().write("a", 0, 1, version=1).read("a", 1, 2, 3).cas(1, "b", 4, 5, version=2).ops()
    operations = pair(ops)
    deps = dependencies(operations)
    assert deps == [frozenset(), frozenset({0}), frozenset({0})]
    assert close({1, 2}, deps) == set()
    assert close({0, 2}, deps) == {0, 2}


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.data())
def test_closed_sub_histories_of_linearizable_histories_are_linearizable(
    rng: random.Random, data: st.DataObject
) -> None:
    """What makes the minimal history a proof: failing on a closed subset implies failing on the whole."""
    ops = simulate(rng, processes=rng.randint(1, 4), keys=1, steps=rng.randint(0, 80))
    operations = [operation for operation in pair(ops) if relevant(operation)]
    subset = data.draw(st.sets(st.integers(0, max(len(operations) - 1, 0))))
    kept = close(subset & set(range(len(operations))), dependencies(operations))
    sub = [operations[p] for p in sorted(kept)]
    assert check(unpair(sub), 30.0).verdict == Verdict.OK
