"""Histories that are linearizable by construction.

A real sequential store (one revision counter, versions from it, compare-and-set
decided when the command is applied) executes operations at random points
between their invocation and completion; clients complete in random order, some
with ``info`` -- after the operation was applied, before, or never. Info
operations that were not applied may still be applied later ("took effect
late"). Whatever the interleaving, the store's apply order is a linearization.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvcluster.lincheck.history import Func, History, Op, Pending


@dataclass
class _InFlight:
    pending: Pending
    f: Func
    key: str
    value: str | None
    expected: int | None
    result: tuple[str, object, int | None] | None = None  # (outcome, value read, version)


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, tuple[str, int]] = {}
        self.revision = 0

    def apply(self, op: _InFlight) -> tuple[str, object, int | None]:
        current = self.data.get(op.key)
        version = current[1] if current else 0
        if op.f == "read":
            return ("ok", current[0] if current else None, version)
        if op.f in ("cas", "cas_delete") and op.expected != version:
            return ("fail", None, version)
        if op.f in ("delete", "cas_delete"):
            self.data.pop(op.key, None)
            return ("ok", None, None)
        self.revision += 1
        assert op.value is not None
        self.data[op.key] = (op.value, self.revision)
        return ("ok", None, self.revision)


def simulate(
    rng: random.Random,
    *,
    processes: int = 3,
    keys: int = 2,
    steps: int = 60,
    info_rate: float = 0.08,
    tie_rate: float = 0.1,
    functions: tuple[Func, ...] = ("read", "read", "write", "write", "cas", "cas", "delete", "cas_delete"),
) -> list[Op]:
    now = [0]
    history = History(clock=lambda: now[0])
    store = _Store()
    names = [f"k{i}" for i in range(keys)]
    slots: list[int] = [history.fresh_process() for _ in range(processes)]
    flight: list[_InFlight | None] = [None] * processes
    zombies: list[_InFlight] = []  # info, not applied yet: may still take effect
    seen: dict[tuple[int, str], int] = {}
    serial = 0
    for _ in range(steps):
        if rng.random() >= tie_rate:
            now[0] += rng.randint(1, 3)
        if zombies and rng.random() < 0.15:
            zombie = zombies.pop(rng.randrange(len(zombies)))
            if rng.random() < 0.6:
                store.apply(zombie)
            continue
        slot = rng.randrange(processes)
        op = flight[slot]
        if op is None:
            f = rng.choice(functions)
            key = rng.choice(names)
            value = expected = None
            if f in ("write", "cas"):
                serial += 1
                value = f"{key}-{serial}"
            if f in ("cas", "cas_delete"):
                current = store.data.get(key)
                expected = rng.choice(
                    [
                        0,
                        current[1] if current else 0,
                        seen.get((slot, key), 0),
                        rng.randint(1, store.revision + 1),
                    ]
                )
            pending = history.invoke(slots[slot], f, key, value=value, expected_version=expected)
            flight[slot] = _InFlight(pending, f, key, value, expected)
            continue
        if op.result is None and rng.random() >= info_rate:
            op.result = store.apply(op)
            continue
        if rng.random() < info_rate or op.result is None:
            op.pending.info(error="timeout")
            if op.result is None:
                zombies.append(op)
            slots[slot] = history.fresh_process()
            flight[slot] = None
            continue
        outcome, read, version = op.result
        if outcome == "fail":
            op.pending.fail(current_version=version)
        elif op.f == "read":
            assert read is None or isinstance(read, str)
            op.pending.ok(value=read, version=version)
        else:
            op.pending.ok(version=version)
        if version:
            seen[(slot, op.key)] = version
        flight[slot] = None
    return history.ops
