"""Operations as time intervals: an invocation paired with its completion.

Linearizability is about intervals, not records, and it is local: a history is
linearizable iff each key's sub-history is, so the checker works on the
per-key lists built here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from kvcluster.lincheck.history import Func, HistoryError, Op

Status = Literal["ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: invoked at ``call``, completed at ``ret`` (``None``: never, i.e. info).

    ``value`` is the value written (write, cas) or read (read; ``None`` when
    the key was absent). ``version`` is what the store reported: the new
    version, the version read, or the current version of a conflict.
    ``index`` is the position of the invocation in the history, a stable name
    for the operation in reports.
    """

    index: int
    process: int
    f: Func
    key: bytes
    status: Status
    call: int
    ret: int | None
    value: bytes | None = None
    version: int | None = None
    expected_version: int | None = None
    error: str | None = None


def pair(ops: Iterable[Op]) -> list[Operation]:
    """Pair each invoke with the next completion of its process, in history order.

    Raises :class:`HistoryError` for records that cannot come from a correct
    recorder: a completion without an invocation, two invocations in flight on
    one process, a process reused after ``info``, a completion before its
    invocation.
    """
    in_flight: dict[int, tuple[int, Op]] = {}
    retired: set[int] = set()
    done: list[Operation] = []
    for index, op in enumerate(ops):
        if op.type == "invoke":
            if op.process in in_flight:
                raise HistoryError(f"record {index}: process {op.process} invoked twice without a completion")
            if op.process in retired:
                raise HistoryError(f"record {index}: process {op.process} reused after an info outcome")
            in_flight[op.process] = (index, op)
            continue
        started = in_flight.pop(op.process, None)
        if started is None:
            raise HistoryError(f"record {index}: {op.type} of process {op.process} without an invocation")
        start, invocation = started
        if invocation.f != op.f or invocation.key != op.key:
            raise HistoryError(f"record {index}: completion does not match the invocation at record {start}")
        if op.type == "info":
            retired.add(op.process)
            done.append(_operation(start, invocation, status="info", ret=None, error=op.error))
            continue
        if op.time < invocation.time:
            raise HistoryError(f"record {index}: completes before its invocation at record {start}")
        value = op.value if op.f == "read" else invocation.value
        if op.type == "fail" and op.f == "read":
            value = None
        done.append(
            _operation(
                start,
                invocation,
                status=op.type,
                ret=op.time,
                read_value=value,
                version=op.version,
                error=op.error,
            )
        )
    for start, invocation in in_flight.values():
        done.append(_operation(start, invocation, status="info", ret=None))
    done.sort(key=lambda operation: operation.index)
    return done


def _operation(
    index: int,
    invocation: Op,
    *,
    status: Status,
    ret: int | None,
    read_value: bytes | None = None,
    version: int | None = None,
    error: str | None = None,
) -> Operation:
    return Operation(
        index=index,
        process=invocation.process,
        f=invocation.f,
        key=invocation.key,
        status=status,
        call=invocation.time,
        ret=ret,
        value=read_value if invocation.f == "read" else invocation.value,
        version=version,
        expected_version=invocation.expected_version,
        error=error,
    )


def by_key(operations: Iterable[Operation]) -> dict[bytes, list[Operation]]:
    keys: dict[bytes, list[Operation]] = {}
    for operation in operations:
        keys.setdefault(operation.key, []).append(operation)
    return keys


def unpair(operations: Sequence[Operation]) -> list[Op]:
    """Records that pair back into ``operations`` (to save a minimal failing history for replay).

    Info completions are written at their invocation's time: an info interval
    is open-ended whatever its record says. Records are merged by time, but
    each process's own records keep their order, which is all pairing needs.
    """
    per_process: dict[int, list[tuple[int, int, int, Op]]] = {}
    for operation in sorted(operations, key=lambda operation: operation.index):
        events = per_process.setdefault(operation.process, [])
        events.append(
            (
                operation.call,
                1,
                operation.index,
                Op(
                    process=operation.process,
                    type="invoke",
                    f=operation.f,
                    key=operation.key,
                    value=None if operation.f == "read" else operation.value,
                    expected_version=operation.expected_version,
                    time=operation.call,
                ),
            )
        )
        completed = operation.call if operation.ret is None else operation.ret
        events.append(
            (
                completed,
                0,
                operation.index,
                Op(
                    process=operation.process,
                    type=operation.status,
                    f=operation.f,
                    key=operation.key,
                    value=operation.value,
                    version=operation.version,
                    expected_version=operation.expected_version,
                    time=completed,
                    error=operation.error,
                ),
            )
        )
    merged = heapq.merge(*per_process.values(), key=lambda event: event[:3])
    return [event[3] for event in merged]
