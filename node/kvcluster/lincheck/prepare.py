"""Turning one key's operations into search steps, and everything we can decide before searching.

The search is exponential in the worst case; what makes it fast in practice is
shrinking the problem first with transformations that provably keep the
verdict. All of them lean on the store's guarantees -- versions identify
writes -- and on the workload's: every write stores a unique value, so a value
identifies its write. Value-based reasoning is only applied to values that are
in fact unique in the history; version-based reasoning is always sound because
a history with a reused version is non-linearizable under the model anyway.

1. Operations that cannot constrain anything are dropped: reads that did not
   succeed, writes and deletes that definitely failed, failures other than a
   version conflict (they did not take effect and observed nothing).
2. A failed compare-and-set with ``version_conflict`` and a ``current_version``
   is kept as a *conflict* observation: at some point inside its interval the
   key's version was ``current_version`` (the store decides a conflict when the
   command is applied, at a single point). With ``use_conflicts=False`` it is
   dropped instead, the weaker reading "a failure did not happen".
3. A read of a value no write ever stored is a violation on its own.
4. Learned versions: a write whose version we never heard (info) gets it from a
   read that returned its unique value.
5. Observer bounds: an operation that saw a write's effect (a read of its value
   or version, a compare-and-set that expected its version, a conflict that
   reported it) must be linearized after that write, so the write took effect
   before the observer returned. The write's interval ends there, and an info
   write becomes definite. An observer that returned before the write was even
   invoked is a violation with a two-operation witness.
6. Optional writes nobody observed are dropped, all together, when none of
   the operations that stay could pin an unknown version (every version they
   mention belongs to a known write): had the dropped writes taken effect, a
   remaining operation could only have noticed through such a pin. (The
   dropped writes' own expected versions do not count: they go too.)
   Then optional deletes are dropped when no remaining operation that could
   come after them depends on the key being absent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kvcluster.lincheck.intervals import Operation
from kvcluster.lincheck.model import (
    CAS,
    CAS_DELETE,
    CONFLICT,
    DELETE,
    NO_DUTY,
    PIN,
    READ,
    SEE_ABSENT,
    WRITE,
    Step,
)

_KINDS = {"read": READ, "write": WRITE, "cas": CAS, "delete": DELETE, "cas_delete": CAS_DELETE}


@dataclass(frozen=True, slots=True)
class Prepared:
    """The search problem for one key, or a violation found without searching."""

    steps: list[Step]
    known: dict[int, bytes]
    witness: tuple[Operation, ...] = ()
    reason: str = ""
    dropped: int = 0


def relevant(operation: Operation, *, use_conflicts: bool = True) -> bool:
    """Whether the operation can constrain a linearization at all."""
    if operation.status == "ok":
        return True
    if operation.status == "info":
        return operation.f != "read"
    return (
        use_conflicts
        and operation.f in ("cas", "cas_delete")
        and operation.error == "version_conflict"
        and operation.version is not None
        and operation.expected_version is not None
    )


def _step(operation: Operation, version: int | None, ret: int | None, duty: int) -> Step:
    kind = CONFLICT if operation.status == "fail" else _KINDS[operation.f]
    return Step(
        kind=kind,
        value=operation.value,
        version=version,
        expected=operation.expected_version,
        call=operation.call,
        ret=ret,
        source=operation,
        duty=duty,
    )


def _is_writer(operation: Operation) -> bool:
    return operation.f in ("write", "cas") and operation.status != "fail"


def _refs(operation: Operation) -> tuple[bytes | None, list[int]]:
    """The value and the non-zero versions whose writes ``operation`` saw, if it completed."""
    if operation.status == "info":
        return None, []
    if operation.f == "read":
        return operation.value, [operation.version] if operation.version else []
    if operation.status == "fail":
        assert operation.version is not None
        return None, [operation.version] if operation.version else []
    if operation.f in ("cas", "cas_delete") and operation.expected_version:
        return None, [operation.expected_version]
    return None, []


def _needs_absent(operation: Operation) -> bool:
    if operation.f == "read":
        return operation.value is None
    if operation.status == "fail":
        return operation.version == 0
    return operation.f in ("cas", "cas_delete") and operation.expected_version == 0


def prepare(operations: Sequence[Operation], *, use_conflicts: bool = True) -> Prepared:
    ops = [operation for operation in operations if relevant(operation, use_conflicts=use_conflicts)]
    dropped = len(operations) - len(ops)
    writers = [operation for operation in ops if _is_writer(operation)]
    counts = Counter(operation.value for operation in writers)
    by_value = {operation.value: operation for operation in writers if counts[operation.value] == 1}

    for operation in ops:
        if operation.f == "read" and operation.value is not None and operation.value not in counts:
            return Prepared([], {}, (operation,), "read a value no write stored", dropped)

    # 4. learned versions
    versions: dict[int, int | None] = {operation.index: operation.version for operation in writers}
    for operation in ops:
        if operation.f == "read" and operation.version and operation.value in by_value:
            writer = by_value[operation.value]
            if versions[writer.index] is None:
                versions[writer.index] = operation.version
    known: dict[int, bytes] = {}
    holders: dict[int, list[Operation]] = {}
    for operation in writers:
        version = versions[operation.index]
        if version is not None:
            assert operation.value is not None
            known[version] = operation.value
            holders.setdefault(version, []).append(operation)
    by_version = {version: held[0] for version, held in holders.items() if len(held) == 1}

    # 5. observer bounds
    bound: dict[int, tuple[int, Operation]] = {}
    for operation in ops:
        value, refs = _refs(operation)
        if operation.ret is None:
            continue
        seen = [by_value[value]] if value is not None and value in by_value else []
        seen += [by_version[version] for version in refs if version in by_version]
        for writer in seen:
            if writer is operation:
                continue
            if writer.index not in bound or operation.ret < bound[writer.index][0]:
                bound[writer.index] = (operation.ret, operation)
    for writer in writers:
        if writer.index in bound and bound[writer.index][0] < writer.call:
            return Prepared(
                [], known, (writer, bound[writer.index][1]), "saw a write before it was invoked", dropped
            )

    def ret_of(operation: Operation) -> int | None:
        limit = bound.get(operation.index)
        if limit is None:
            return operation.ret
        return limit[0] if operation.ret is None else min(operation.ret, limit[0])

    # 6. unobservable optional operations
    removable = {
        operation.index
        for operation in writers
        if ret_of(operation) is None and versions[operation.index] is None and operation.value in by_value
    }
    kept = [operation for operation in ops if operation.index not in removable]
    mentioned: set[int] = set()
    for operation in kept:
        if operation.f == "read" and operation.version:
            mentioned.add(operation.version)
        if operation.expected_version:
            mentioned.add(operation.expected_version)
        if operation.status == "fail" and operation.version:
            mentioned.add(operation.version)
    if mentioned - set(known):
        kept = ops  # some version nobody can name may belong to an unobserved write: keep them all
    absent_needed = [operation for operation in kept if _needs_absent(operation)]

    steps: list[Step] = []
    for operation in kept:
        ret = ret_of(operation)
        if (
            ret is None
            and operation.f in ("delete", "cas_delete")
            and not any(other.ret is None or other.ret >= operation.call for other in absent_needed)
        ):
            continue
        version = versions.get(operation.index, operation.version)
        if operation.index in removable:
            duty = PIN
        elif ret is None and operation.f in ("delete", "cas_delete"):
            duty = SEE_ABSENT
        else:
            duty = NO_DUTY
        steps.append(_step(operation, version, ret, duty))
    dropped += len(ops) - len(steps)
    steps.sort(key=lambda step: (step.call, step.source.index))
    return Prepared(steps, known, dropped=dropped)
