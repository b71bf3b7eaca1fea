"""The durability check on hand-made histories: what counts as a lost acknowledged write, and what not."""

from __future__ import annotations

import itertools

from kvcluster.lincheck import Op
from kvcluster.lincheck.history import Func, OpType
from kvcluster.torture import Observed, Summary, check_durability
from kvcluster.torture.runner import finals_from_history, judge_ops


class H:
    """Operations with explicit times; each gets its own process."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int, Op]] = []
        self._process = itertools.count(1)
        self._seq = itertools.count()

    def add(
        self,
        f: Func,
        call: int,
        ret: int | None,
        status: OpType = "ok",
        *,
        key: str = "k",
        value: str | None = None,
        version: int | None = None,
        expected: int | None = None,
        error: str | None = None,
        process: int | None = None,
    ) -> H:
        p = process if process is not None else next(self._process)
        data = value.encode() if value is not None else None
        invoke_value = None if f == "read" else data
        self.ops.append(
            (
                call,
                next(self._seq),
                Op(p, "invoke", f, key.encode(), invoke_value, expected_version=expected, time=call),
            )
        )
        if ret is not None:
            done_value = data if f != "read" or status == "ok" else None
            op = Op(p, status, f, key.encode(), done_value, version, expected, ret, error)
            self.ops.append((ret, next(self._seq), op))
        return self

    def history(self) -> list[Op]:
        return [op for _, _, op in sorted(self.ops, key=lambda t: (t[0], t[1]))]


def final(value: str | None, version: int = 0) -> Observed:
    return Observed(value.encode() if value is not None else None, version)


def test_last_acknowledged_write_read_back_is_fine() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("write", 20, 30, value="b", version=2)
    report = check_durability(h.history(), {b"k": final("b", 2)})
    assert report.ok and report.acknowledged == 2 and not report.lost


def test_older_value_after_a_later_acknowledged_write_is_a_loss() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("write", 20, 30, value="b", version=2)
    report = check_durability(h.history(), {b"k": final("a", 1)})
    assert not report.ok
    assert [lost.operation.value for lost in report.lost] == [b"b"]
    assert "is missing" in report.lost[0].describe()


def test_a_concurrent_write_may_win() -> None:
    # a = [0, 30], b = [10, 20]: a may take effect after b, so reading a loses nothing.
    h = H().add("write", 0, 30, value="a", version=2).add("write", 10, 20, value="b", version=1)
    assert check_durability(h.history(), {b"k": final("a", 2)}).ok


def test_an_unknown_write_may_take_effect_at_any_later_time() -> None:
    # The info write was invoked before the acknowledged one and never completed: it may land last.
    h = H().add("write", 0, None, "info", value="x").add("write", 50, 60, value="b", version=3)
    assert check_durability(h.history(), {b"k": final("x", 4)}).ok


def test_unknown_writes_are_never_lost() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("write", 20, None, "info", value="x")
    assert check_durability(h.history(), {b"k": final("a", 1)}).ok


def test_failed_writes_did_not_happen() -> None:
    h = H().add("write", 0, 10, value="a", version=1)
    h.add("cas", 20, 30, "fail", value="c", expected=7, version=1, error="version_conflict")
    assert check_durability(h.history(), {b"k": final("a", 1)}).ok
    # ... so reading a failed write's value is a phantom.
    report = check_durability(h.history(), {b"k": final("c", 9)})
    assert report.phantoms == [b"k"] and len(report.lost) == 1


def test_absent_after_an_acknowledged_delete_is_fine_but_not_before_a_later_write() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("delete", 20, 30, version=2)
    assert check_durability(h.history(), {b"k": final(None)}).ok
    h.add("write", 40, 50, value="b", version=3)
    report = check_durability(h.history(), {b"k": final(None)})
    assert [lost.operation.value for lost in report.lost] == [b"b"]


def test_absent_without_any_delete_loses_every_acknowledged_write() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("cas", 20, 30, value="b", expected=1, version=2)
    report = check_durability(h.history(), {b"k": final(None)})
    assert len(report.lost) == 2


def test_an_unknown_delete_excuses_an_absent_key() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("cas_delete", 5, None, "info", expected=1)
    assert check_durability(h.history(), {b"k": final(None)}).ok


def test_version_mismatch_and_unread_keys_are_reported() -> None:
    h = H().add("write", 0, 10, value="a", version=1).add("write", 0, 10, key="j", value="z", version=1)
    report = check_durability(h.history(), {b"k": final("a", 5)})
    assert report.version_mismatches and report.unread == [b"j"] and not report.ok


def test_a_key_nobody_wrote_must_be_absent() -> None:
    assert check_durability([], {b"k": final(None)}).ok
    assert check_durability([], {b"k": final("ghost", 1)}).phantoms == [b"k"]


def test_judging_a_history_with_a_lost_write_fails_the_run() -> None:
    """End to end through ``judge_ops``: the final reads live in the history, the verdict in the summary."""
    h = H().add("write", 0, 10, value="a", version=1).add("write", 20, 30, value="b", version=2)
    # The final read after the restart returns the older value: linearizability and durability both object.
    h.add("read", 100, 110, value="a", version=1, process=99)
    ops = h.history()
    finals = finals_from_history(ops, {"after_restart": 99})
    assert finals["after_restart"] == {b"k": final("a", 1)}
    summary = Summary(config={}, started_wall=0.0)
    judge_ops(ops, {"after_restart": 99}, None, summary, budget=5.0)
    summary.decide()
    assert summary.lost == 1
    assert summary.verdict == "violation"
    assert summary.exit_code == 1
    assert summary.operations == {"write": {"ok": 2, "fail": 0, "info": 0}}
    assert summary.final_reads == {"read": {"ok": 1, "fail": 0, "info": 0}}
