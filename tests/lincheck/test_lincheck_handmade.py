"""Hand-made histories, each small enough to check by eye, with the verdict it must get."""

from __future__ import annotations

import pytest

from kvcluster.lincheck import Verdict, check, pair
from kvcluster.lincheck.checker import Result

from .builders import Builder
from .oracle import linearizable


def verdict(builder: Builder) -> Result:
    ops = builder.ops()
    result = check(ops, 10.0)
    # every hand-made history is tiny: the brute-force reference must agree
    expected = all(linearizable(key_ops) for key_ops in _per_key(ops))
    assert (result.verdict == Verdict.OK) == expected, result.explain()
    return result


def _per_key(ops: list) -> list:  # type: ignore[type-arg]
    by_key: dict[bytes, list] = {}  # type: ignore[type-arg]
    for operation in pair(ops):
        by_key.setdefault(operation.key, []).append(operation)
    return list(by_key.values())


LINEARIZABLE = {
    "empty history": Builder(),
    "read of an absent key": Builder().read(None, 0, 0, 1),
    "write then read": Builder().write("a", 0, 1, version=1).read("a", 1, 2, 3),
    # two concurrent writes may take effect in either order; versions tell which came last
    "concurrent writes, a first": Builder()
    .write("a", 0, 10, version=1)
    .write("b", 1, 9, version=2)
    .read("b", 2, 11, 12),
    "concurrent writes, b first": Builder()
    .write("a", 0, 10, version=2)
    .write("b", 1, 9, version=1)
    .read("a", 2, 11, 12),
    "concurrent reads see either side of a concurrent write": Builder()
    .write("a", 0, 1, version=1)
    .write("b", 2, 10, version=2)
    .read("a", 1, 3, 4)
    .read("b", 2, 5, 6),
    "read concurrent with a write may see the old value": Builder()
    .write("a", 0, 1, version=1)
    .write("b", 2, 10, version=2)
    .read("a", 1, 9, 11),
    "info write took effect late": Builder()
    .write("a", 0, status="info")
    .read(None, 0, 10, 11)
    .read("a", 5, 20, 21),
    "info write that completed with an info record took effect late": Builder()
    .write("a", 0, 2, status="info")
    .read(None, 0, 10, 11)
    .read("a", 5, 20, 21),
    "info write never took effect": Builder()
    .write("a", 0, status="info")
    .read(None, 0, 10, 11)
    .write("b", 12, 13, version=3)
    .read("b", 3, 20, 21),
    "info write took effect before a later write overwrote it": Builder()
    .write("a", 0, status="info")
    .read("a", 4, 2, 3)
    .write("b", 5, 6, version=7)
    .read("b", 7, 8, 9),
    "CAS chain": Builder()
    .write("a", 0, 1, version=1)
    .cas(1, "b", 2, 3, version=2)
    .cas(2, "c", 4, 5, version=3)
    .read("c", 3, 6, 7),
    "concurrent CAS on one version: one wins, one conflicts": Builder()
    .write("a", 0, 1, version=1)
    .cas(1, "b", 2, 10, version=2)
    .cas(1, "c", 3, 9, status="fail", current=2)
    .read("b", 2, 11, 12),
    "CAS on absent key": Builder().cas(0, "a", 0, 1, version=4).read("a", 4, 2, 3),
    "conflict reports the version of the time": Builder()
    .write("a", 0, 1, version=1)
    .cas(7, "x", 2, 3, status="fail", current=1),
    "conflict on an absent key": Builder().cas(3, "x", 0, 1, status="fail", current=0),
    "deletes": Builder()
    .write("a", 0, 1, version=1)
    .delete(2, 3)
    .read(None, 0, 4, 5)
    .cas(0, "b", 6, 7, version=3)
    .read("b", 3, 8, 9)
    .cas_delete(3, 10, 11)
    .read(None, 0, 12, 13),
    "delete of an absent key": Builder().delete(0, 1).read(None, 0, 2, 3),
    "info delete took effect": Builder()
    .write("a", 0, 1, version=1)
    .delete(2, status="info")
    .read(None, 0, 5, 6),
    "info CAS took effect late, seen through its version": Builder()
    .write("a", 0, 1, version=1)
    .cas(1, "b", 2, status="info")
    .read("a", 1, 3, 4)
    .cas(9, "c", 5, 6, status="fail", current=5)
    .read("b", 5, 7, 8),
    "conflict pins the version of an unread info write": Builder()
    .write("a", 0, status="info")
    .cas(0, "b", 1, 2, status="fail", current=6)
    .cas(6, "c", 3, 4, version=8)
    .read("c", 8, 5, 6),
    "versions with gaps (other keys share the revision counter)": Builder()
    .write("a", 0, 1, version=10)
    .write("b", 2, 3, version=25)
    .read("b", 25, 4, 5),
    "touching intervals count as concurrent": Builder().write("a", 0, 5, version=1).read(None, 0, 5, 6),
    "independent keys": Builder()
    .add("write", call=0, ret=1, key="x", value="a", version=1)
    .add("read", call=2, ret=3, key="y", value=None, version=0)
    .add("read", call=2, ret=3, key="x", value="a", version=1),
}

VIOLATIONS = {
    "stale read after a completed write": Builder()
    .write("a", 0, 1, version=1)
    .write("b", 2, 3, version=2)
    .read("a", 1, 4, 5),
    "lost write: acknowledged, then absent": Builder().write("a", 0, 1, version=1).read(None, 0, 2, 3),
    "lost write: concurrent writes, the later version lost": Builder()
    .write("a", 0, 10, version=1)
    .write("b", 0, 10, version=2)
    .read("a", 1, 11, 12),
    "CAS succeeded twice on the same expected version": Builder()
    .write("a", 0, 1, version=1)
    .cas(1, "b", 2, 5, version=2)
    .cas(1, "c", 3, 6, version=3),
    "CAS on absent succeeded twice": Builder().cas(0, "a", 0, 5, version=1).cas(0, "b", 1, 6, version=2),
    "read of a value never written": Builder().write("a", 0, 1, version=1).read("zzz", 9, 2, 3),
    "read going back in time": Builder()
    .write("a", 0, 1, version=1)
    .write("b", 2, 10, version=2)
    .read("b", 2, 3, 4)
    .read("a", 1, 5, 6),
    "failed CAS reporting absent for a present key": Builder()
    .write("a", 0, 1, version=1)
    .cas(1, "b", 2, 3, status="fail", current=0),
    "failed CAS conflicting with the version it expected": Builder()
    .write("a", 0, 1, version=1)
    .cas(1, "b", 2, 3, status="fail", current=1),
    "failed CAS reporting a version that never existed": Builder()
    .write("a", 0, 1, version=1)
    .cas(7, "b", 2, 3, status="fail", current=4),
    "version went backwards": Builder().write("a", 0, 1, version=5).write("b", 2, 3, version=3),
    "read with the right value but the wrong version": Builder()
    .write("a", 0, 1, version=1)
    .read("a", 2, 2, 3),
    "read of a write before it was invoked": Builder().read("a", 1, 0, 1).write("a", 2, 3, version=1),
    "info write seen, then gone without a delete": Builder()
    .write("a", 0, status="info")
    .read("a", 4, 10, 11)
    .read(None, 0, 12, 13),
    "CAS on a version that was deleted": Builder()
    .write("a", 0, 1, version=1)
    .delete(2, 3)
    .cas(1, "b", 4, 5, version=2),
    "read absent after delete was overwritten": Builder()
    .write("a", 0, 1, version=1)
    .delete(2, 3)
    .write("b", 4, 5, version=2)
    .read(None, 0, 6, 7),
}


@pytest.mark.parametrize("name", list(LINEARIZABLE))
def test_linearizable(name: str) -> None:
    result = verdict(LINEARIZABLE[name])
    assert result.verdict == Verdict.OK, result.explain()


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_violation(name: str) -> None:
    result = verdict(VIOLATIONS[name])
    assert result.verdict == Verdict.VIOLATION
    [bad] = result.violations
    assert bad.minimal, "a violation comes with a failing sub-history"
    assert "violation" in bad.explain()


def test_failed_cas_as_no_op_is_weaker() -> None:
    history = VIOLATIONS["failed CAS reporting absent for a present key"].ops()
    assert check(history, 5.0, use_conflicts=False).verdict == Verdict.OK


def test_other_failures_did_not_happen() -> None:
    history = (
        Builder()
        .write("a", 0, 1, version=1)
        .add("write", call=2, ret=3, status="fail", value="b", error="unavailable")
        .add("cas", call=2, ret=3, status="fail", value="c", expected=1, error="unavailable")
        .read("a", 1, 4, 5)
        .ops()
    )
    assert check(history, 5.0).verdict == Verdict.OK


def test_violation_on_one_key_leaves_others_ok() -> None:
    history = (
        Builder()
        .add("write", call=0, ret=1, key="good", value="a", version=1)
        .add("read", call=2, ret=3, key="good", value="a", version=1)
        .add("write", call=0, ret=1, key="bad", value="a", version=2)
        .add("read", call=2, ret=3, key="bad", value=None, version=0)
        .ops()
    )
    result = check(history, 5.0)
    assert result.verdict == Verdict.VIOLATION
    assert result.keys[b"good"].verdict == Verdict.OK
    assert result.keys[b"bad"].verdict == Verdict.VIOLATION


def test_explanation_shows_the_stuck_operation() -> None:
    result = check(VIOLATIONS["stale read after a completed write"].ops(), 5.0)
    [bad] = result.violations
    assert bad.stuck is not None and bad.stuck.f == "read"
    assert [operation.f for operation in bad.linearized] == ["write", "write"]
    text = bad.explain()
    assert "read -> 'a' v1" in text and "longest linearizable prefix" in text
