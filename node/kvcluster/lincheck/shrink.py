"""Cutting a non-linearizable key history down to a few operations a human can read.

Delta debugging (ddmin, complement-only): drop a chunk, keep the result if it
is still non-linearizable, refine the chunks when nothing can be dropped. It
ends 1-minimal (no single operation can go) unless the deadline stops it first;
every intermediate history has been verified to fail, so whatever it returns
is a true witness.

Dropping operations can also *create* violations -- drop a delete and a later
read of the absent key becomes impossible; drop a write and a read of its value
does -- so candidates are closed under observation: an operation stays only if
every operation that may have produced the state it saw stays too. Then
restricting any linearization of the whole history to a closed sub-history is
a linearization of it, so a closed sub-history that fails proves that the
whole history fails: the minimal history is a witness, not a hint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kvcluster.lincheck.intervals import Operation


def dependencies(operations: Sequence[Operation]) -> list[frozenset[int]]:
    """For each operation, the positions of every operation that may have produced the state it saw.

    What an operation observes -- a value, a version, or absence -- was set by
    the last state-changing operation before it in a linearization. Whenever
    that culprit is ambiguous, all candidates are kept: every write of a
    repeated value, every write of unknown version for a version no known
    write has, every delete that could precede an observation of absence.
    """
    writers = [
        position
        for position, operation in enumerate(operations)
        if operation.f in ("write", "cas") and operation.status != "fail"
    ]
    removers = [
        position
        for position, operation in enumerate(operations)
        if operation.f in ("delete", "cas_delete") and operation.status != "fail"
    ]
    by_value: dict[bytes | None, list[int]] = {}
    for position in writers:
        by_value.setdefault(operations[position].value, []).append(position)
    version_of = {position: operations[position].version for position in writers}
    for operation in operations:
        held = by_value.get(operation.value, [])
        learnable = operation.f == "read" and operation.status == "ok" and operation.version
        if learnable and len(held) == 1 and version_of[held[0]] is None:
            version_of[held[0]] = operation.version
    by_version: dict[int, list[int]] = {}
    for position, version in version_of.items():
        if version is not None:
            by_version.setdefault(version, []).append(position)
    unknown = [position for position, version in version_of.items() if version is None]

    deps: list[frozenset[int]] = []
    for position, operation in enumerate(operations):
        seen: set[int] = set()
        refs: list[int] = []
        if operation.status == "fail":
            refs = [operation.version or 0]
        elif operation.f == "read":
            if operation.status == "ok":
                if operation.value is None:
                    refs = [0]
                else:
                    seen.update(by_value.get(operation.value, []))
                    refs = [operation.version] if operation.version else []
        elif operation.f in ("cas", "cas_delete"):
            refs = [operation.expected_version or 0]
        for version in refs:
            if version == 0:
                seen.update(
                    p for p in removers if operation.ret is None or operations[p].call <= operation.ret
                )
            elif version in by_version:
                seen.update(by_version[version])
            else:
                seen.update(unknown)
        seen.discard(position)
        deps.append(frozenset(seen))
    return deps


def close(candidate: set[int], deps: Sequence[frozenset[int]]) -> set[int]:
    """The largest subset of ``candidate`` in which every observer keeps what it observed."""
    kept = set(candidate)
    changed = True
    while changed:
        changed = False
        for position in list(kept):
            if not deps[position] <= kept:
                kept.discard(position)
                changed = True
    return kept


def shrink(
    operations: Sequence[Operation],
    fails: Callable[[Sequence[Operation]], bool],
    deadline: float,
    *,
    start: Sequence[Operation] | None = None,
) -> list[Operation]:
    """A small sub-history of ``operations`` for which ``fails`` holds.

    ``operations`` must itself fail. ``start`` is an optional smaller
    candidate to try first (e.g. the history cut at the point where the
    search got stuck).
    """
    deps = dependencies(operations)
    position_of = {operation.index: position for position, operation in enumerate(operations)}
    current = sorted(range(len(operations)))

    def attempt(candidate: set[int]) -> bool:
        return (
            bool(candidate)
            and len(candidate) < len(current)
            and fails([operations[p] for p in sorted(candidate)])
        )

    if start is not None:
        candidate = close({position_of[operation.index] for operation in start}, deps)
        if attempt(candidate):
            current = sorted(candidate)
    chunks = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        size = -(-len(current) // chunks)
        reduced = False
        for begin in range(0, len(current), size):
            if time.monotonic() >= deadline:
                break
            candidate = close(set(current) - set(current[begin : begin + size]), deps)
            if attempt(candidate):
                current = sorted(candidate)
                chunks = max(chunks - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunks >= len(current):
                break
            chunks = min(chunks * 2, len(current))
    return [operations[p] for p in current]
