"""What the clients did, recorded so the checker can judge it and a failing run can be replayed.

A history is a flat list of :class:`Op` records in the order they were taken:
each operation is an ``invoke`` record followed later by exactly one completion
from the same process (``ok``, ``fail`` or ``info``). ``info`` means the outcome
is unknown (a timeout, a dropped connection): the operation may take effect at
any later time or never, so the process that got it is retired and never used
again -- a new process id takes its place. An invoke with no completion at the
end of a history is treated as ``info``.

Keys and values are ``bytes`` in records (the store's types); the recorder
accepts ``str`` for convenience and encodes it as UTF-8.

File format (JSON lines): one record per line, an object with the fields of
:class:`Op`; fields that are ``None`` are left out. A key or value is written
as a JSON string when its bytes are valid UTF-8 and as ``{"base64": "..."}``
otherwise, so the file stays readable for the common case and round-trips
arbitrary bytes exactly.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, get_args

OpType = Literal["invoke", "ok", "fail", "info"]
Func = Literal["read", "write", "cas", "delete", "cas_delete"]

OP_TYPES: frozenset[str] = frozenset(get_args(OpType))
FUNCS: frozenset[str] = frozenset(get_args(Func))
#: Functions whose invocation carries a value to store.
WRITING_FUNCS: frozenset[str] = frozenset({"write", "cas"})
#: Functions whose invocation carries an expected version.
CONDITIONAL_FUNCS: frozenset[str] = frozenset({"cas", "cas_delete"})


class HistoryError(ValueError):
    """The records do not form a well-formed history (a recording bug, not a store bug)."""


def as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


@dataclass(frozen=True, slots=True)
class Op:
    """One record of a history.

    ``version`` is the version the store reported with this record: the new
    version on an ok write/cas, the version read on an ok read (0 when the key
    was absent), the ``current_version`` on a ``version_conflict`` failure.
    Completions repeat the invocation's ``value`` (for writes) and
    ``expected_version`` so every line of a file reads on its own.
    """

    process: int
    type: OpType
    f: Func
    key: bytes
    value: bytes | None = None
    version: int | None = None
    expected_version: int | None = None
    time: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        if self.type not in OP_TYPES:
            raise HistoryError(f"unknown record type {self.type!r}")
        if self.f not in FUNCS:
            raise HistoryError(f"unknown function {self.f!r}")
        if not isinstance(self.key, bytes) or (self.value is not None and not isinstance(self.value, bytes)):
            raise HistoryError("keys and values in records must be bytes")


class Pending:
    """An invoked operation waiting for its outcome; complete it exactly once."""

    __slots__ = ("_history", "invocation")

    def __init__(self, history: History, invocation: Op) -> None:
        self._history = history
        self.invocation = invocation

    def ok(self, *, value: str | bytes | None = None, version: int | None = None) -> Op:
        """The store acknowledged: ``value``/``version`` read, or the version a write created."""
        if value is not None and self.invocation.f != "read":
            raise ValueError("only a read completes with a value; a write's value is its invocation's")
        read_value = None if value is None else as_bytes(value)
        return self._history._complete(self.invocation, "ok", read_value, version, None)

    def fail(self, *, current_version: int | None = None, error: str = "version_conflict") -> Op:
        """The store definitely did not apply the operation (for a conflict: the version it saw)."""
        return self._history._complete(self.invocation, "fail", None, current_version, error)

    def info(self, *, error: str | None = None) -> Op:
        """The outcome is unknown; the process is retired."""
        return self._history._complete(self.invocation, "info", None, None, error)


class History:
    """Thread-safe recorder of a run's operations.

    Completion and invocation take their timestamp under the same lock as the
    append, so record order and time order agree even with many threads or
    tasks. The lock is never held across I/O other than the optional journal,
    so using it from asyncio code is fine. A ``journal`` (an open text file)
    receives every record as a JSON line as it is taken, so a run that dies
    still leaves a history behind.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        journal: IO[str] | None = None,
    ) -> None:
        self._clock = clock
        self._journal = journal
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._in_flight: dict[int, Op] = {}
        self._used: set[int] = set()
        self._retired: set[int] = set()
        self._next_process = itertools.count(1)

    @classmethod
    def from_ops(cls, ops: Iterable[Op]) -> History:
        """Wrap records taken elsewhere (a loaded file) without replaying the lifecycle checks."""
        history = cls()
        history._ops = list(ops)
        history._used = {op.process for op in history._ops}
        return history

    @property
    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def fresh_process(self) -> int:
        """A process id never used in this history (to replace a retired one)."""
        with self._lock:
            while True:
                process = next(self._next_process)
                if process not in self._used:
                    self._used.add(process)
                    return process

    def invoke(
        self,
        process: int,
        f: Func,
        key: str | bytes,
        *,
        value: str | bytes | None = None,
        expected_version: int | None = None,
    ) -> Pending:
        if f not in FUNCS:
            raise ValueError(f"unknown function {f!r}")
        if (value is None) == (f in WRITING_FUNCS):
            raise ValueError(f"{f} {'needs' if f in WRITING_FUNCS else 'takes no'} value")
        if (expected_version is None) == (f in CONDITIONAL_FUNCS):
            raise ValueError(f"{f} {'needs' if f in CONDITIONAL_FUNCS else 'takes no'} expected_version")
        with self._lock:
            if process in self._retired:
                raise ValueError(f"process {process} got an info outcome and is retired")
            if process in self._in_flight:
                raise ValueError(f"process {process} already has an operation in flight")
            op = Op(
                process=process,
                type="invoke",
                f=f,
                key=as_bytes(key),
                value=None if value is None else as_bytes(value),
                expected_version=expected_version,
                time=self._clock(),
            )
            self._in_flight[process] = op
            self._used.add(process)
            self._append(op)
        return Pending(self, op)

    def _complete(
        self,
        invocation: Op,
        type_: OpType,
        read_value: bytes | None,
        version: int | None,
        error: str | None,
    ) -> Op:
        with self._lock:
            if self._in_flight.get(invocation.process) is not invocation:
                raise ValueError(f"operation of process {invocation.process} already completed")
            del self._in_flight[invocation.process]
            if type_ == "info":
                self._retired.add(invocation.process)
            op = Op(
                process=invocation.process,
                type=type_,
                f=invocation.f,
                key=invocation.key,
                value=read_value if invocation.f == "read" else invocation.value,
                version=version,
                expected_version=invocation.expected_version,
                time=self._clock(),
                error=error,
            )
            self._append(op)
        return op

    def _append(self, op: Op) -> None:
        self._ops.append(op)
        if self._journal is not None:
            self._journal.write(op_to_json(op) + "\n")
            self._journal.flush()

    def save(self, path: str | Path) -> None:
        save_history(self.ops, path)

    @classmethod
    def load(cls, path: str | Path) -> History:
        return cls.from_ops(load_history(path))


def _encode_bytes(data: bytes) -> str | dict[str, str]:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _decode_bytes(obj: Any, field: str) -> bytes:
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, dict) and isinstance(obj.get("base64"), str):
        return base64.b64decode(obj["base64"], validate=True)
    raise HistoryError(f"{field}: expected a string or {{'base64': ...}}, got {obj!r}")


def _optional_int(record: dict[str, Any], field: str) -> int | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HistoryError(f"{field}: expected an integer, got {value!r}")
    return value


def op_to_json(op: Op) -> str:
    record: dict[str, Any] = {"process": op.process, "type": op.type, "f": op.f, "key": _encode_bytes(op.key)}
    if op.value is not None:
        record["value"] = _encode_bytes(op.value)
    if op.version is not None:
        record["version"] = op.version
    if op.expected_version is not None:
        record["expected_version"] = op.expected_version
    record["time"] = op.time
    if op.error is not None:
        record["error"] = op.error
    return json.dumps(record, separators=(",", ":"))


def op_from_json(line: str) -> Op:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HistoryError(f"not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise HistoryError("a record must be a JSON object")
    try:
        process, type_, f, key = record["process"], record["type"], record["f"], record["key"]
    except KeyError as exc:
        raise HistoryError(f"missing field {exc}") from exc
    if not isinstance(process, int) or not isinstance(type_, str) or not isinstance(f, str):
        raise HistoryError("process must be an integer, type and f strings")
    error = record.get("error")
    if error is not None and not isinstance(error, str):
        raise HistoryError("error must be a string")
    time_ = _optional_int(record, "time")
    return Op(
        process=process,
        type=type_,  # type: ignore[arg-type]  # validated by Op
        f=f,  # type: ignore[arg-type]
        key=_decode_bytes(key, "key"),
        value=None if record.get("value") is None else _decode_bytes(record["value"], "value"),
        version=_optional_int(record, "version"),
        expected_version=_optional_int(record, "expected_version"),
        time=0 if time_ is None else time_,
        error=error,
    )


def dump_ops(ops: Iterable[Op], fp: IO[str]) -> None:
    for op in ops:
        fp.write(op_to_json(op) + "\n")


def load_ops(fp: IO[str]) -> list[Op]:
    ops = []
    for number, line in enumerate(fp, 1):
        if not line.strip():
            continue
        try:
            ops.append(op_from_json(line))
        except HistoryError as exc:
            raise HistoryError(f"line {number}: {exc}") from exc
    return ops


def save_history(ops: Iterable[Op], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as fp:
        dump_ops(ops, fp)


def load_history(path: str | Path) -> list[Op]:
    with open(path, encoding="utf-8") as fp:
        return load_ops(fp)
