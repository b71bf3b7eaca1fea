"""Checking leases from a client-side record: no early expiry, nothing readable after its end.

Why not the WGL register model: an expiry deletes a key although no client
asked for it, at a moment only the meta group's leader chooses. The model
would have to allow a delete "somewhere after the ttl" -- a bound the client
cannot know exactly. Lease keys are therefore kept out of the linearizability
check and judged here, by rules that need only the client's own clock. Each
lease key has exactly one writer (one put, of a value unique in the run), so
what a read returns is either that value or nothing.

The rules, and why each is sound (never reports a correct store):

``early-expiry``
    A lease lives at least ``ttl`` after the *invocation* of its grant or of
    its last acknowledged keep-alive: the leader starts (or restarts) the
    countdown only once it has applied the command, which is after the
    request was sent; a new leader starts a fresh full ttl. So a
    linearizable read invoked after the acknowledged lease-bound put, and
    completed before that bound (less ``drift``, for the two clocks measuring
    the same duration), must still return the value -- unless a revoke was
    invoked before the read completed. Keep-alives with an unknown outcome
    are ignored: they can only have made the lease live longer.
``read-after-revoke``
    After an acknowledged revoke (which answers once its keys are deleted),
    a read invoked later must not return the value. Only when the put was
    acknowledged: a put whose answer was lost may still be in flight, and it
    undoes itself once it finds the lease gone, but may be visible meanwhile.
``resurrection``
    Once a read invoked after the acknowledged put returned nothing, the key
    is gone (expired or revoked) and no later read may return the value.

``late`` expiries (a key still there well after its ttl) are reported, not
failed on: under faults an expiry waits for a meta leader, so how late it
may be has no bound a test could rely on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

LeaseOp = Literal["grant", "put", "keepalive", "revoke", "read"]
Outcome = Literal["ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """One completed lease-workload operation; times on the client's monotonic clock (seconds)."""

    episode: int
    op: LeaseOp
    invoked: float
    completed: float
    outcome: Outcome
    lease: int | None = None
    key: str | None = None
    value: str | None = None
    """put: the value written; read: the value returned (None: the key was absent)."""
    ttl: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> LeaseEvent:
        return cls(**json.loads(line))


@dataclass
class LeaseReport:
    violations: list[str] = field(default_factory=list)
    episodes: int = 0
    checked_reads: int = 0
    revoked: int = 0
    expired: int = 0
    late: list[str] = field(default_factory=list)
    """Keys still readable more than ``late_after`` seconds past their guaranteed lifetime."""

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "episodes": self.episodes,
            "checked_reads": self.checked_reads,
            "revoked": self.revoked,
            "expired": self.expired,
            "late": self.late[:20],
            "violations": self.violations[:20],
        }


def check_leases(
    events: Iterable[LeaseEvent], *, drift: float = 0.25, late_after: float = 10.0
) -> LeaseReport:
    """Apply the module's rules to every episode (one lease, one key, one put)."""
    report = LeaseReport()
    by_episode: dict[int, list[LeaseEvent]] = defaultdict(list)
    for ev in events:
        by_episode[ev.episode].append(ev)
    for episode, evs in sorted(by_episode.items()):
        report.episodes += 1
        _check_episode(episode, sorted(evs, key=lambda e: e.invoked), drift, late_after, report)
    return report


def _check_episode(
    episode: int, evs: list[LeaseEvent], drift: float, late_after: float, report: LeaseReport
) -> None:
    grant = next((e for e in evs if e.op == "grant" and e.outcome == "ok"), None)
    put = next((e for e in evs if e.op == "put"), None)
    if grant is None or grant.ttl is None or put is None or put.outcome != "ok":
        return
    ttl, value = grant.ttl, put.value
    renewals = [grant.invoked] + [e.invoked for e in evs if e.op == "keepalive" and e.outcome == "ok"]
    revokes = [e for e in evs if e.op == "revoke"]
    first_revoke_invoked = min((e.invoked for e in revokes), default=float("inf"))
    revoke_acked = min((e.completed for e in revokes if e.outcome == "ok"), default=None)
    reads = [e for e in evs if e.op == "read" and e.outcome == "ok" and e.invoked > put.completed]
    gone_at: float | None = None
    """Completion of the first read that found the key absent."""
    for read in reads:
        report.checked_reads += 1
        where = f"episode {episode} lease {grant.lease} key {put.key}"
        # The lease is alive at least until the last renewal invoked before this read completed + ttl.
        alive_until = max(t for t in renewals if t < read.completed) + ttl - drift
        if read.value is None:
            if read.completed < alive_until and read.completed < first_revoke_invoked:
                report.violations.append(
                    f"early-expiry: {where}: read at {read.invoked:.3f}-{read.completed:.3f} found the key"
                    f" gone, but the lease (ttl {ttl:g}s) was alive until at least {alive_until + drift:.3f}"
                )
            if gone_at is None:
                gone_at = read.completed
            continue
        if read.value != value:
            report.violations.append(f"foreign-value: {where}: read returned {read.value!r}, wrote {value!r}")
        if revoke_acked is not None and read.invoked > revoke_acked:
            report.violations.append(
                f"read-after-revoke: {where}: read at {read.invoked:.3f} returned the value after the"
                f" revoke was acknowledged at {revoke_acked:.3f}"
            )
        if gone_at is not None and read.invoked > gone_at:
            report.violations.append(
                f"resurrection: {where}: read at {read.invoked:.3f} returned the value after a read"
                f" completed at {gone_at:.3f} found it gone"
            )
        last_renewal = max(t for t in renewals if t < read.invoked)
        if not revokes and read.invoked > last_renewal + ttl + late_after:
            report.late.append(
                f"{where}: still readable {read.invoked - last_renewal - ttl:.1f}s past its ttl"
            )
    if revoke_acked is not None:
        report.revoked += 1
    elif gone_at is not None:
        report.expired += 1
