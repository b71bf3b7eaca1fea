"""Checking what watch streams delivered against what the clients did (issue 10).

A torture run keeps watch streams open over the keys of the register
workload (its history, ``history.py``) and of the lease workload (its
events, ``leases.py``), and records each change delivered with the watcher's
local monotonic time of receipt (:class:`WatchRecord`). After the run, every
acknowledged write having been awaited, :func:`check_watch` judges them.

The rules, each sound (a correct store and watch never break one):

``missing`` / ``duplicate`` (exactly once)
    An acknowledged put of the register workload (write or cas answered with
    version ``V``) is applied at revision ``V``, so the stream must deliver a
    ``put`` of that key at ``V`` with the value written -- once. The same for
    an acknowledged delete (its answer is the delete's revision) and for an
    acknowledged lease-bound put (by its value, unique in the run).
    ``missing`` is only judged when the record is ``complete`` (the
    watcher caught up and kept every event).
``repeated-revision``
    No ``(key, revision)`` is delivered twice, whatever the change.
``out-of-order``
    A key's revisions strictly increase in delivery order.
``unwritten`` / ``failed-write`` / ``wrong-revision`` / ``unasked-delete`` / ``foreign-key``
    Every change corresponds to a write that was acknowledged (at that
    revision) or whose outcome is unknown -- never to one that definitely
    failed, never to a value nobody wrote, never to a key nobody writes. A
    delete that is not an acknowledged one must be covered by an unknown-outcome
    delete of that key (each applies at most once). A lease-bound put that was
    answered "no such lease" may have been applied and undone (the server
    deletes it again): allowed only if a removal of the key follows it.
    Register keys are never lease-bound, so an ``expire`` of one is wrong.
``read-after-expire``
    Once the watcher has *received* a lease key's ``expire`` (or ``delete``,
    as a revoke does) event, the removal is applied; a linearizable read
    that was *invoked* later (on the same clock) must not return the
    lease-bound value -- unless the key was put again after that removal.
``compacted``
    The history kept per partition is far larger than a run writes, so a
    ``compacted`` notice means the watch fell behind it or lost its place.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kvcluster.lincheck.history import Op
from kvcluster.lincheck.intervals import Operation, pair
from kvcluster.lincheck.leases import LeaseEvent
from kvcluster.lincheck.render import show_bytes

WatchType = Literal["put", "delete", "expire", "compacted"]
REMOVALS = frozenset({"delete", "expire"})
MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class WatchRecord:
    """One delivered event; ``received`` on the watcher's monotonic clock (seconds, as leases.py)."""

    type: WatchType
    key: bytes
    value: bytes | None
    revision: int
    received: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "type": self.type,
                "key": self.key.hex(),
                "value": None if self.value is None else self.value.hex(),
                "revision": self.revision,
                "received": self.received,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> WatchRecord:
        raw = json.loads(line)
        value = raw.get("value")
        return cls(
            raw["type"],
            bytes.fromhex(raw["key"]),
            None if value is None else bytes.fromhex(value),
            int(raw["revision"]),
            float(raw["received"]),
        )


@dataclass
class WatchReport:
    violations: list[str] = field(default_factory=list)
    events: int = 0
    """Events delivered (changes and notices) and judged."""
    puts: int = 0
    deletes: int = 0
    expires: int = 0
    acknowledged: int = 0
    """Acknowledged writes (register puts and deletes, lease puts) looked for in the events."""
    unknown_applied: int = 0
    """Events of writes whose outcome was unknown (they did take effect)."""
    lease_reads_checked: int = 0
    """Lease reads invoked after the watcher had received the key's removal."""
    complete: bool = True
    """Every delivered event was kept (the watcher's record has a size bound)."""
    errors: list[str] = field(default_factory=list)
    """Streams that ended early or never started (also listed as violations)."""

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "puts": self.puts,
            "deletes": self.deletes,
            "expires": self.expires,
            "acknowledged": self.acknowledged,
            "unknown_applied": self.unknown_applied,
            "lease_reads_checked": self.lease_reads_checked,
            "complete": self.complete,
            "errors": self.errors[:MAX_LISTED],
            "violation_count": len(self.violations),
            "violations": self.violations[:MAX_LISTED],
        }


def _mutations(ops: Iterable[Op]) -> list[Operation]:
    return [o for o in pair(ops) if o.f != "read"]


def awaited(ops: Iterable[Op], lease_events: Iterable[LeaseEvent]) -> set[tuple[bytes, int | bytes]]:
    """What a caught-up watcher must have delivered: ``(key, revision)`` of each acknowledged
    register write and ``(key, value)`` of each acknowledged lease-bound put."""
    wanted: set[tuple[bytes, int | bytes]] = set()
    for o in _mutations(ops):
        if o.status == "ok" and o.version is not None:
            wanted.add((o.key, o.version))
    for ev in lease_events:
        if ev.op == "put" and ev.outcome == "ok" and ev.key is not None and ev.value is not None:
            wanted.add((ev.key.encode(), ev.value.encode()))
    return wanted


def delivered(record: WatchRecord) -> tuple[tuple[bytes, int | bytes], ...]:
    """The :func:`awaited` entries one delivered event satisfies."""
    if record.type == "put" and record.value is not None:
        return ((record.key, record.revision), (record.key, record.value))
    return ((record.key, record.revision),)


def check_watch(
    records: Sequence[WatchRecord],
    ops: Iterable[Op],
    lease_events: Iterable[LeaseEvent],
    *,
    complete: bool = True,
    stream_errors: Sequence[str] = (),
) -> WatchReport:
    """Apply the module's rules; ``records`` in delivery order, ``ops`` the register history.

    ``complete``: every event was kept (else ``missing`` is not judged).
    ``stream_errors``: what ended a stream early (each one a violation: a
    watch must outlive any fault).
    """
    report = WatchReport(events=len(records), complete=complete, errors=list(stream_errors))
    violations = report.violations
    violations += [f"stream: {error}" for error in stream_errors]
    lease_events = list(lease_events)
    mutations = _mutations(ops)

    # ---- what the clients did ------------------------------------------------------------------
    writes: dict[tuple[bytes, bytes], Operation] = {}
    """(key, value) -> the write or cas that stored it (values are unique in a run)."""
    acked_deletes: set[tuple[bytes, int]] = set()
    unknown_deletes: Counter[bytes] = Counter()
    register_keys: set[bytes] = set()
    for o in mutations:
        register_keys.add(o.key)
        if o.f in ("write", "cas") and o.value is not None:
            writes[(o.key, o.value)] = o
        elif o.status == "ok" and o.version is not None:
            acked_deletes.add((o.key, o.version))
        elif o.status == "info":
            unknown_deletes[o.key] += 1
    lease_puts: dict[tuple[bytes, bytes], LeaseEvent] = {}
    lease_reads: dict[bytes, list[LeaseEvent]] = defaultdict(list)
    for ev in lease_events:
        if ev.key is None:
            continue
        key = ev.key.encode()
        if ev.op == "put" and ev.value is not None:
            lease_puts[(key, ev.value.encode())] = ev
        elif ev.op == "read" and ev.outcome == "ok":
            lease_reads[key].append(ev)
    lease_keys = {k for k, _ in lease_puts}

    # ---- order and repetition -------------------------------------------------------------------
    last: dict[bytes, int] = {}
    seen: Counter[tuple[bytes, int]] = Counter()
    per_key: dict[bytes, list[WatchRecord]] = defaultdict(list)
    for r in records:
        if r.type == "compacted":
            violations.append(
                f"compacted: the watch was told the history below revision {r.revision} is gone"
                f" (received at {r.received:.3f})"
            )
            continue
        name = show_bytes(r.key)
        if r.type == "put":
            report.puts += 1
        elif r.type == "delete":
            report.deletes += 1
        else:
            report.expires += 1
        seen[(r.key, r.revision)] += 1
        if seen[(r.key, r.revision)] == 2:
            violations.append(f"repeated-revision: key {name} revision {r.revision} delivered more than once")
        previous = last.get(r.key)
        if previous is not None and r.revision <= previous:
            violations.append(
                f"out-of-order: key {name}: {r.type} at revision {r.revision}"
                f" delivered after revision {previous}"
            )
        last[r.key] = max(r.revision, previous or 0)
        per_key[r.key].append(r)

    # ---- every change was written by someone, and not by a failed write --------------------------
    put_values: Counter[tuple[bytes, bytes]] = Counter()
    unmatched_deletes: Counter[bytes] = Counter()
    for key, evs in per_key.items():
        name = show_bytes(key)
        register, lease = key in register_keys, key in lease_keys
        if not register and not lease:
            violations.append(
                f"foreign-key: {evs[0].type} of key {name} at revision {evs[0].revision}:"
                " no client writes that key"
            )
            continue
        for i, r in enumerate(evs):
            where = f"key {name} {r.type} at revision {r.revision}"
            if r.type == "put":
                value = r.value if r.value is not None else b""
                put_values[(key, value)] += 1
                if put_values[(key, value)] == 2:
                    violations.append(f"duplicate: {where}: value {show_bytes(value)} applied more than once")
                if register:
                    write = writes.get((key, value))
                    if write is None:
                        violations.append(f"unwritten: {where}: value {show_bytes(value)} nobody wrote")
                    elif write.status == "fail":
                        violations.append(
                            f"failed-write: {where}: value {show_bytes(value)} of #{write.index}"
                            f" p{write.process} {write.f}, which failed ({write.error})"
                        )
                    elif write.status == "ok" and write.version != r.revision:
                        violations.append(
                            f"wrong-revision: {where}: #{write.index} p{write.process} {write.f}"
                            f" was acknowledged at version {write.version}"
                        )
                    elif write.status == "info":
                        report.unknown_applied += 1
                else:
                    put = lease_puts.get((key, value))
                    if put is None:
                        violations.append(f"unwritten: {where}: value {show_bytes(value)} nobody wrote")
                    elif put.outcome == "fail" and not any(e.type in REMOVALS for e in evs[i + 1 :]):
                        violations.append(
                            f"failed-write: {where}: the lease-bound put of episode {put.episode} failed"
                            " and was not undone"
                        )
                    elif put.outcome == "info":
                        report.unknown_applied += 1
                continue
            if not any(e.type == "put" for e in evs[:i]):
                violations.append(f"unwritten: {where}: the key was never delivered as written before")
            if register:
                if r.type == "expire":
                    violations.append(f"unasked-delete: {where}: register keys are never lease-bound")
                elif (key, r.revision) not in acked_deletes:
                    unmatched_deletes[key] += 1
                    if unmatched_deletes[key] > unknown_deletes[key]:
                        violations.append(
                            f"unasked-delete: {where}: neither an acknowledged delete nor covered by one"
                            f" of the {unknown_deletes[key]} deletes of unknown outcome"
                        )
                    else:
                        report.unknown_applied += 1

    # ---- every acknowledged write was delivered exactly once --------------------------------------
    for (key, value), write in writes.items():
        if write.status != "ok" or write.version is None:
            continue
        report.acknowledged += 1
        if put_values[(key, value)]:
            continue
        if seen[(key, write.version)]:
            violations.append(
                f"wrong-value: key {show_bytes(key)} revision {write.version} delivered, but not as"
                f" the put of {show_bytes(value)} acknowledged there"
            )
        elif complete:
            violations.append(
                f"missing: key {show_bytes(key)}: #{write.index} p{write.process} {write.f}"
                f" {show_bytes(value)} acknowledged at version {write.version}, never delivered"
            )
    for key, version in sorted(acked_deletes):
        report.acknowledged += 1
        delivered_as = [r.type for r in per_key.get(key, ()) if r.revision == version]
        if complete and not delivered_as:
            violations.append(
                f"missing: key {show_bytes(key)}: a delete acknowledged at revision {version},"
                " never delivered"
            )
        elif delivered_as and "delete" not in delivered_as:
            violations.append(
                f"wrong-change: key {show_bytes(key)} revision {version}: a delete was acknowledged there,"
                f" {delivered_as[0]} was delivered"
            )
    for (key, value), put in lease_puts.items():
        if put.outcome != "ok":
            continue
        report.acknowledged += 1
        if complete and put_values[(key, value)] == 0:
            violations.append(
                f"missing: key {show_bytes(key)}: the lease-bound put of episode {put.episode}"
                f" ({show_bytes(value)}) was acknowledged, never delivered"
            )

    # ---- nothing readable after the watcher saw the lease-bound key removed -------------------------
    for key in lease_keys:
        evs = per_key.get(key, [])
        for i, r in enumerate(evs):
            if r.type not in REMOVALS or any(e.type == "put" for e in evs[i + 1 :]):
                continue  # put again afterwards: later reads may see that
            for read in lease_reads.get(key, ()):
                if read.invoked <= r.received:
                    continue
                report.lease_reads_checked += 1
                if read.value is not None:
                    violations.append(
                        f"read-after-expire: key {show_bytes(key)} episode {read.episode}: a read invoked at"
                        f" {read.invoked:.3f} returned {read.value!r}, but the watcher had received its"
                        f" {r.type} (revision {r.revision}) at {r.received:.3f}"
                    )
            break  # the first removal after which nothing was put judges every later read
    return report
