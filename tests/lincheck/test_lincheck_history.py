"""Recording, the JSON-lines format, and pairing records into intervals."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcluster.lincheck import History, HistoryError, Op, load_history, pair, save_history, unpair
from kvcluster.lincheck.history import dump_ops, load_ops, op_from_json, op_to_json


def counting_clock() -> History:
    ticks = itertools.count()
    return History(clock=lambda: next(ticks))


def test_recorder_pairs_invocations_with_outcomes() -> None:
    history = counting_clock()
    history.invoke(1, "write", "k", value="a").ok(version=3)
    history.invoke(2, "read", b"k").ok(value=b"a", version=3)
    history.invoke(3, "cas", "k", value="b", expected_version=2).fail(current_version=3)
    history.invoke(4, "delete", "k").info(error="timeout")
    history.invoke(5, "cas_delete", "k", expected_version=3)  # still in flight at the end
    ops = history.ops
    assert [op.type for op in ops] == [
        "invoke",
        "ok",
        "invoke",
        "ok",
        "invoke",
        "fail",
        "invoke",
        "info",
        "invoke",
    ]
    assert [op.time for op in ops] == list(range(9))
    assert ops[1].value == b"a", "a write's completion repeats its value"
    write, read, cas, delete, cas_delete = pair(ops)
    assert (write.status, write.call, write.ret, write.version) == ("ok", 0, 1, 3)
    assert (read.value, read.version) == (b"a", 3)
    assert (cas.status, cas.version, cas.expected_version, cas.error) == ("fail", 3, 2, "version_conflict")
    assert (delete.status, delete.ret) == ("info", None)
    assert (cas_delete.status, cas_delete.ret) == ("info", None)


def test_recorder_enforces_process_discipline() -> None:
    history = counting_clock()
    pending = history.invoke(1, "read", "k")
    with pytest.raises(ValueError, match="in flight"):
        history.invoke(1, "read", "k")
    pending.info()
    with pytest.raises(ValueError, match="already completed"):
        pending.ok(value="x")
    with pytest.raises(ValueError, match="retired"):
        history.invoke(1, "read", "k")
    assert history.fresh_process() == 2
    with pytest.raises(ValueError, match="needs value"):
        history.invoke(2, "write", "k")
    with pytest.raises(ValueError, match="expected_version"):
        history.invoke(2, "cas", "k", value="v")
    with pytest.raises(ValueError, match="only a read"):
        history.invoke(2, "write", "k", value="v").ok(value="v", version=1)


def test_recorder_is_thread_safe_and_time_ordered() -> None:
    history = History()

    def client(process: int) -> None:
        for n in range(200):
            history.invoke(process, "write", "k", value=f"{process}-{n}").ok(version=n + 1)

    threads = [threading.Thread(target=client, args=(p,)) for p in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ops = history.ops
    assert len(ops) == 8 * 200 * 2
    assert [op.time for op in ops] == sorted(op.time for op in ops)
    assert len(pair(ops)) == 1600


async def test_recorder_from_asyncio_tasks() -> None:
    history = History()

    async def client(process: int) -> None:
        for n in range(50):
            pending = history.invoke(process, "read", "k")
            await asyncio.sleep(0)
            pending.ok(value=None, version=0 * n)

    await asyncio.gather(*(client(p) for p in range(1, 6)))
    assert len(pair(history.ops)) == 250


def test_journal_receives_every_record() -> None:
    journal = io.StringIO()
    history = History(journal=journal)
    history.invoke(1, "write", "k", value=b"\xff\x00").ok(version=1)
    journal.seek(0)
    assert load_ops(journal) == history.ops


keys_or_values = st.one_of(st.binary(max_size=12), st.text(max_size=8).map(lambda text: text.encode()))
records = st.builds(
    Op,
    process=st.integers(0, 2**40),
    type=st.sampled_from(["invoke", "ok", "fail", "info"]),
    f=st.sampled_from(["read", "write", "cas", "delete", "cas_delete"]),
    key=keys_or_values,
    value=st.none() | keys_or_values,
    version=st.none() | st.integers(0, 2**62),
    expected_version=st.none() | st.integers(0, 2**62),
    time=st.integers(0, 2**63),
    error=st.none() | st.sampled_from(["version_conflict", "timeout", "ünïcode"]),
)


@given(st.lists(records, max_size=20))
def test_jsonl_round_trip(ops: list[Op]) -> None:
    buffer = io.StringIO()
    dump_ops(ops, buffer)
    buffer.seek(0)
    assert load_ops(buffer) == ops


def test_jsonl_file_round_trip_and_encoding(tmp_path: Path) -> None:
    history = counting_clock()
    history.invoke(1, "write", b"bin\xfekey", value=b"\x00\xff").ok(version=7)
    history.invoke(2, "read", "tëxt").ok(value="välue", version=9)
    path = tmp_path / "history.jsonl"
    history.save(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["key"] == {"base64": base64.b64encode(b"bin\xfekey").decode()}
    assert lines[0]["value"] == {"base64": "AP8="}
    assert lines[2]["key"] == "tëxt" and lines[3]["value"] == "välue"
    assert "version" not in lines[0], "fields that are None are left out"
    assert load_history(path) == history.ops
    assert History.load(path).ops == history.ops


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"process": 1, "type": "invoke", "f": "read"}', "missing field"),
        ('{"process": 1, "type": "begin", "f": "read", "key": "k"}', "unknown record type"),
        ('{"process": 1, "type": "ok", "f": "scan", "key": "k"}', "unknown function"),
        ('{"process": 1, "type": "ok", "f": "read", "key": 5}', "key"),
        ('{"process": 1, "type": "ok", "f": "read", "key": "k", "version": "3"}', "version"),
    ],
)
def test_bad_records_are_rejected(line: str, message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        op_from_json(line)


def test_line_numbers_in_load_errors() -> None:
    good = op_to_json(Op(process=1, type="invoke", f="read", key=b"k"))
    with pytest.raises(HistoryError, match="line 2"):
        load_ops(io.StringIO(good + "\n{}\n"))


def _op(process: int, type_: str, time: int, f: str = "read") -> Op:
    return Op(process=process, type=type_, f=f, key=b"k", time=time)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([_op(1, "ok", 0)], "without an invocation"),
        ([_op(1, "invoke", 0), _op(1, "invoke", 1)], "invoked twice"),
        ([_op(1, "invoke", 0), _op(1, "info", 1), _op(1, "invoke", 2)], "reused"),
        ([_op(1, "invoke", 5), _op(1, "ok", 4)], "before its invocation"),
        ([_op(1, "invoke", 0), _op(1, "ok", 1, f="write")], "does not match"),
    ],
)
def test_malformed_histories(ops: list[Op], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        pair(ops)


def test_unpair_inverts_pair() -> None:
    history = counting_clock()
    history.invoke(1, "write", "k", value="a").ok(version=1)
    history.invoke(1, "cas", "k", value="b", expected_version=1).fail(current_version=2)
    history.invoke(2, "read", "k").ok(value="a", version=1)
    history.invoke(3, "delete", "k").info()
    history.invoke(1, "read", "k")
    operations = pair(history.ops)
    again = pair(unpair(operations))
    assert [(o.f, o.status, o.call, o.ret, o.value, o.version) for o in again] == [
        (o.f, o.status, o.call, o.ret, o.value, o.version) for o in operations
    ]


def test_save_history_accepts_plain_lists(tmp_path: Path) -> None:
    ops = [_op(1, "invoke", 0), _op(1, "ok", 1)]
    save_history(ops, tmp_path / "h.jsonl")
    assert load_history(tmp_path / "h.jsonl") == ops
