"""Did every acknowledged write survive? Judged from the history and one final read per key.

After the run every node is stopped and started again, then each key is read
once (``final``). The question for each key: is the value read consistent
with *every* acknowledged mutation of that key having taken effect?

The value read was produced by one mutation, its *producer*: the write or
compare-and-set that stored that value (values are unique, so it is
identified), or, for an absent key, some delete or the initial state. The
producer must have taken effect *last* among the mutations that took effect.
An acknowledged mutation ``a`` can have come before the producer ``p`` in some
linearization unless ``p`` completed before ``a`` was even invoked
(``p.ret < a.call``): then ``p`` precedes ``a`` in real time, ``a`` took effect
after it, and ``p``'s value should have been overwritten -- ``a`` is **lost**.
Mutations whose outcome is unknown (``info``) never completed: they may take
effect at any later time, so as producers they excuse every acknowledged
mutation, and they are never counted as lost. Failed mutations did not happen.

Precisely, with ``ret = +inf`` for info and ``-inf`` for the initial state:

* value ``v`` read: ``p`` = the write/cas (ok or info) that stored ``v``;
  ``lost = {a acknowledged, a != p, p.ret < a.call}``. A value no mutation
  stored is *phantom* (corruption): every acknowledged mutation of the key
  counts as lost. A version read that differs from the version ``p`` was
  acknowledged with is a *version mismatch*.
* key absent: any delete (ok or info) could be the producer; the one that
  excuses most is the one that completed last, so ``p`` = the delete with the
  greatest ``ret`` (or the initial state if there is none) and ``lost`` as above.

Checking each acknowledged mutation against ``p`` alone is exact: ``p`` can be
placed last iff no mutation that took effect was invoked after ``p``
completed, and that is the condition tested for each of them. (Whether the
whole history is linearizable is the checker's question, not this one.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvcluster.lincheck import Op, Operation, pair
from kvcluster.lincheck.render import describe, show_bytes

MUTATIONS = frozenset({"write", "cas", "delete", "cas_delete"})
_INF = float("inf")


@dataclass(frozen=True)
class Observed:
    """What the final read returned: ``value`` None means absent (``version`` 0)."""

    value: bytes | None
    version: int


@dataclass(frozen=True)
class Lost:
    key: bytes
    operation: Operation
    """The acknowledged mutation that is missing."""
    producer: Operation | None
    """The mutation whose result was read instead (None: the initial state or a phantom value)."""
    observed: Observed
    reason: str

    def describe(self) -> str:
        return (
            f"key {show_bytes(self.key)}: #{self.operation.index} p{self.operation.process} "
            f"{describe(self.operation)} is missing; read {show_bytes(self.observed.value)}"
            f" v{self.observed.version} ({self.reason})"
        )


@dataclass
class DurabilityReport:
    keys: int = 0
    acknowledged: int = 0
    """Acknowledged mutations (ok write, cas, delete, cas_delete) of the keys checked."""
    lost: list[Lost] = field(default_factory=list)
    phantoms: list[bytes] = field(default_factory=list)
    version_mismatches: list[str] = field(default_factory=list)
    unread: list[bytes] = field(default_factory=list)
    """Keys the history touched but the final reads could not read."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.phantoms or self.version_mismatches or self.unread)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": self.keys,
            "acknowledged": self.acknowledged,
            "lost": len(self.lost),
            "lost_details": [lost.describe() for lost in self.lost[:50]],
            "phantoms": [show_bytes(k) for k in self.phantoms],
            "version_mismatches": self.version_mismatches,
            "unread": [show_bytes(k) for k in self.unread],
        }


def _ret(operation: Operation) -> float:
    return _INF if operation.ret is None else operation.ret


def check_durability(ops: Iterable[Op], final: Mapping[bytes, Observed]) -> DurabilityReport:
    """Judge ``final`` (one read per key after the restart) against the history ``ops``.

    ``ops`` must not contain the final reads themselves (reads are ignored
    anyway). Keys in ``final`` the history never touched must be absent.
    """
    per_key: dict[bytes, list[Operation]] = {}
    for operation in pair(ops):
        if operation.f in MUTATIONS and operation.status != "fail":
            per_key.setdefault(operation.key, []).append(operation)
    report = DurabilityReport()
    for key in sorted(set(per_key) | set(final)):
        mutations = per_key.get(key, [])
        report.keys += 1
        acked = [m for m in mutations if m.status == "ok"]
        report.acknowledged += len(acked)
        observed = final.get(key)
        if observed is None:
            if mutations:
                report.unread.append(key)
            continue
        if observed.value is None:
            deletes = [m for m in mutations if m.f in ("delete", "cas_delete")]
            producer = max(deletes, key=_ret, default=None)
            produced_at = -_INF if producer is None else _ret(producer)
            reason = "absent" if producer is None else f"deleted by #{producer.index}"
        else:
            writers = [m for m in mutations if m.f in ("write", "cas") and m.value == observed.value]
            if not writers:
                report.phantoms.append(key)
                report.lost += [Lost(key, a, None, observed, "a value no write stored") for a in acked]
                continue
            producer = max(writers, key=_ret)  # values are unique; max() only guards against repeats
            produced_at = _ret(producer)
            reason = f"written by #{producer.index}"
            if (
                producer.status == "ok"
                and producer.version is not None
                and producer.version != observed.version
            ):
                report.version_mismatches.append(
                    f"key {show_bytes(key)}: read v{observed.version} for the value #{producer.index}"
                    f" was acknowledged with v{producer.version}"
                )
        for a in acked:
            if a is not producer and produced_at < a.call:
                report.lost.append(Lost(key, a, producer, observed, f"{reason}, which completed before it"))
    return report
