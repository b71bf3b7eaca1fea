"""A brute-force reference checker for tiny single-key histories.

Independent of the search under test: it tries every order of the operations
that respects real time, every subset of the info operations, and, for a write
whose version is unknown, every version the history mentions plus a fresh one
just above the current floor (versions are dense in the model). Exponential,
so only for a handful of operations.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvcluster.lincheck.intervals import Operation

Version = int | float
State = tuple[bytes | None, Version, Version]


def _keep(operation: Operation) -> bool:
    if operation.status == "ok":
        return True
    if operation.status == "info":
        return operation.f != "read"
    return (
        operation.f in ("cas", "cas_delete")
        and operation.error == "version_conflict"
        and operation.version is not None
        and operation.expected_version is not None
    )


def _successors(operation: Operation, state: State, mentioned: Sequence[int]) -> list[State]:
    value, version, floor = state
    if operation.status == "fail":
        current = operation.version
        return [state] if current == version and current != operation.expected_version else []
    if operation.f == "read":
        if operation.value is None:
            return [state] if value is None and not operation.version else []
        if value != operation.value or (operation.version is not None and operation.version != version):
            return []
        return [state]
    if operation.f in ("cas", "cas_delete") and version != operation.expected_version:
        return []
    if operation.f in ("delete", "cas_delete"):
        return [(None, 0, floor)]
    if operation.version is not None:
        choices: list[Version] = [operation.version]
    else:
        choices = [floor + 1e-6, *mentioned]
    return [(operation.value, choice, choice) for choice in choices if choice > floor]


def linearizable(operations: Sequence[Operation]) -> bool:
    ops = [operation for operation in operations if _keep(operation)]
    mentioned = sorted({v for o in ops for v in (o.version, o.expected_version) if v})
    definite = frozenset(i for i, operation in enumerate(ops) if operation.status != "info")

    def ready(i: int, done: frozenset[int]) -> bool:
        call = ops[i].call
        return all(
            j in done or ops[j].ret is None or ops[j].ret >= call  # type: ignore[operator]
            for j in definite
            if j != i
        )

    def explore(done: frozenset[int], state: State) -> bool:
        if definite <= done:
            return True
        for i in range(len(ops)):
            if i in done or not ready(i, done):
                continue
            for after in _successors(ops[i], state, mentioned):
                if explore(done | {i}, after):
                    return True
        return False

    return explore(frozenset(), (None, 0, 0))
