"""The smallest failing sub-history: smaller, still failing, and meaningful."""

from __future__ import annotations

import random

from kvcluster.lincheck import Verdict, check, unpair
from kvcluster.lincheck.intervals import pair
from kvcluster.lincheck.shrink import close, dependencies

from .builders import Builder
from .simulate import simulate


def buried_stale_read() -> Builder:
    """A long, busy, correct history with one stale read in the middle."""
    builder = Builder()
    t = 0
    version = 0
    for n in range(40):
        version += 1
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
    again = check(unpair(bad.minimal), 30.0)
    assert again.verdict == Verdict.VIOLATION
    # it keeps the write the stale read saw (no bogus "never written" read) and one that overwrote it
    written = {operation.value for operation in bad.minimal if operation.f == "write"}
    assert b"x18" in written and written & {b"x19", b"x20"}


def test_minimal_history_of_a_generated_violation() -> None:
    ops = simulate(random.Random(7), processes=4, keys=1, steps=300, functions=("read", "write", "cas"))
    operations = pair(ops)
    last_write = max((o for o in operations if o.f == "write" and o.status == "ok"), key=lambda o: o.ret or 0)
    first_write = min(
        (o for o in operations if o.f == "write" and o.status == "ok"), key=lambda o: o.ret or 0
    )
    end = max(op.time for op in ops) + 1
    stale = Builder().read(
        first_write.value.decode() if first_write.value else None, first_write.version, end, end + 1
    )
    ops += [op.__class__(**{**_fields(op), "process": 10_000}) for op in stale.ops()]
    result = check(ops, 30.0)
    [bad] = result.violations
    assert last_write.ret is not None
    assert len(bad.minimal) < bad.operations
    assert check(unpair(bad.minimal), 30.0).verdict == Verdict.VIOLATION


def _fields(op: object) -> dict[str, object]:
    return {name: getattr(op, name) for name in op.__slots__}  # type: ignore[attr-defined]


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
