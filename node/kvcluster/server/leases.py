"""Leases (issue 10): grant, keep alive, revoke, bind keys, and expire them by logged commands.

Where the registry lives, and why: in the meta group's document
(``storage/leasestate.py``). A lease's keys may sit in several partitions,
so no single data partition can own it; the meta group is already the one
replicated directory every node can reach, and a lease command is rare
next to key writes (a grant, a keep-alive every ttl/3, one bind per
lease-bound put).

Who decides an expiry: only the meta group's leader, with its own monotonic
clock, measuring durations it started itself. Nothing compares clocks across
nodes and no state machine reads a clock. The :class:`LeaseKeeper` of the
leader restarts a lease's countdown (a full ttl) whenever it sees a new
keep-alive applied, and whenever this node *becomes* leader it restarts every
countdown, as etcd does: the new leader cannot know when the old one last
heard a keep-alive, so it grants a fresh full ttl rather than risk expiring
a lease early. A lease therefore lives at least ttl after its last
acknowledged keep-alive, and at most ttl plus a leader change or two.

How an expiry happens: the keeper proposes ``lease_expire`` in the meta
group *on its own replica* (never forwarded: a deposed leader's decision must
die with its term, which Raft guarantees for a local proposal), then an
:class:`~kvcluster.storage.Expire` command for each bound key to that key's
partition, conditional on the version bound, then ``lease_remove``. Every
replica of a partition deletes the key at the same log index. A keeper that
fails half-way (or a new leader) finishes any lease found ``expiring``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from kvcluster.keyspace import META_PARTITION
from kvcluster.storage import MetaCommand
from kvcluster.storage.leasestate import EXPIRING, leases_of

from .config import NodeConfig
from .errors import ApiError, BadRequest, NotFound, RoutingSignal, VersionConflict
from .host import RaftHost
from .operations import Operation
from .router import Router

log = logging.getLogger(__name__)

MIN_TTL_S = 1.0
MAX_TTL_S = 7 * 86400.0
CHECK_INTERVAL_S = 0.1


def parse_ttl(body: object) -> float:
    """The ``ttl`` of a grant request, in seconds; bad input is a 400 that stores nothing."""
    if not isinstance(body, dict) or "ttl" not in body:
        raise BadRequest('the body must be a JSON object with "ttl" (seconds)')
    ttl = body["ttl"]
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise BadRequest("ttl must be a number of seconds")
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise BadRequest(f"ttl must be between {MIN_TTL_S:g} and {MAX_TTL_S:g} seconds")
    return float(ttl)


async def meta_command(router: Router, body: dict[str, Any]) -> dict[str, Any]:
    result = await router.execute_on(META_PARTITION, Operation("meta", args=body))
    answer: dict[str, Any] = result["answer"]
    return answer


def _no_lease(lease_id: int) -> NotFound:
    return NotFound(f"lease {lease_id} not found (never granted, revoked or expired)", lease=lease_id)


async def grant(router: Router, ttl: float) -> dict[str, Any]:
    answer = await meta_command(router, {"op": "lease_grant", "ttl": ttl})
    return {"id": answer["id"], "ttl": answer["ttl"]}


async def keepalive(router: Router, lease_id: int) -> dict[str, Any]:
    answer = await meta_command(router, {"op": "lease_keepalive", "id": lease_id})
    if not answer.get("ok"):
        raise _no_lease(lease_id)
    return {"id": lease_id, "ttl": answer["ttl"]}


async def delete_keys(router: Router, keys: dict[str, int], op: str) -> int:
    """Delete each bound key (``op`` delete or expire) if it still has the bound version."""

    async def one(hex_key: str, version: int) -> bool:
        try:
            await router.execute(Operation(op, key=bytes.fromhex(hex_key), if_version=version))
        except (NotFound, VersionConflict):
            return False  # already gone, or written again since it was bound: not the lease's any more
        return True

    done = await asyncio.gather(*(one(k, v) for k, v in sorted(keys.items())))
    return sum(done)


async def revoke(router: Router, lease_id: int) -> dict[str, Any]:
    """Revoke now: the lease is marked expiring first, so no key can be bound to it meanwhile."""
    answer = await meta_command(router, {"op": "lease_revoke", "id": lease_id})
    if not answer.get("ok"):
        raise _no_lease(lease_id)
    deleted = await delete_keys(router, answer["keys"], "delete")
    await meta_command(router, {"op": "lease_remove", "id": lease_id})
    return {"id": lease_id, "revoked": True, "deleted": deleted}


async def put_bound(router: Router, op: Operation, lease_id: int) -> dict[str, Any]:
    """A put whose key dies with the lease: check the lease, write, then bind the written version.

    The bind is what makes the key the lease's; it fails once the lease is
    expiring, and then this put undoes itself (a conditional delete of exactly
    the version it wrote) and answers 404, so a key never outlives its lease
    because the put raced the expiry.
    """
    state = (await router.execute_on(META_PARTITION, Operation("meta_read")))["state"]
    lease = leases_of(state).get(str(lease_id))
    if lease is None or lease["state"] == EXPIRING:
        raise _no_lease(lease_id)
    result = await router.execute(op)
    version = int(result["version"])
    answer = await meta_command(
        router, {"op": "lease_bind", "id": lease_id, "key": op.key.hex(), "version": version}
    )
    if not answer.get("ok"):
        with contextlib.suppress(NotFound, VersionConflict):
            await router.execute(Operation("delete", key=op.key, if_version=version))
        raise _no_lease(lease_id)
    return result


class LeaseKeeper:
    """Runs on every node; acts only while this node leads the meta group (see the module docstring)."""

    def __init__(self, cfg: NodeConfig, host: RaftHost, router: Router) -> None:
        self.cfg = cfg
        self.host = host
        self.router = router
        self._term: int | None = None
        self._countdowns: dict[str, tuple[int, float]] = {}
        """lease id -> (renewals seen, deadline on this node's monotonic clock)"""
        self._expiring_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            try:
                await self.check(time.monotonic())
            except asyncio.CancelledError:
                raise
            except (ApiError, RoutingSignal) as exc:
                log.info("lease expiry postponed: %s", exc)
            except Exception:
                log.exception("lease keeper failed; retrying")

    def deadlines(self) -> dict[str, float]:
        return {lease_id: deadline for lease_id, (_, deadline) in self._countdowns.items()}

    async def check(self, now: float) -> None:
        r = self.host.replicas.get(META_PARTITION)
        if r is None or r.removed or not r.is_leader:
            self._term = None
            self._countdowns.clear()
            self._expiring_since.clear()
            return
        if r.core.term != self._term:
            self._term = r.core.term
            log.info("leading the meta group at term %d: every lease gets a fresh full ttl", self._term)
            self._countdowns.clear()  # a fresh full ttl for every lease under the new leader
        leases = leases_of(r.state.meta)
        for gone in set(self._countdowns) - set(leases):
            del self._countdowns[gone]
        for gone in set(self._expiring_since) - set(leases):
            del self._expiring_since[gone]
        for lease_id, lease in list(leases.items()):
            if lease["state"] == EXPIRING:
                # A revoke finishes its own deletes; take over only one its node left half-done.
                since = self._expiring_since.setdefault(lease_id, now)
                if lease.get("reason") != "revoked" or now - since > 2 * self.cfg.request_timeout_s:
                    await self._finish(lease_id, lease["keys"])
                continue
            seen = self._countdowns.get(lease_id)
            renewals = int(lease["renewals"])
            if seen is None or seen[0] != renewals:
                log.debug("lease %s: countdown of %gs (re)started", lease_id, lease["ttl"])
                self._countdowns[lease_id] = (renewals, now + float(lease["ttl"]))
            elif now >= seen[1]:
                log.info("lease %s expired (ttl %gs)", lease_id, lease["ttl"])
                answer = await self._propose({"op": "lease_expire", "id": int(lease_id)})
                if answer.get("ok"):
                    await self._finish(lease_id, answer["keys"])

    async def _finish(self, lease_id: str, keys: dict[str, int]) -> None:
        started = time.monotonic()
        deleted = await delete_keys(self.router, keys, "expire")
        await self._propose({"op": "lease_remove", "id": int(lease_id)})
        log.info("lease %s: %d keys expired in %.2fs", lease_id, deleted, time.monotonic() - started)
        self._countdowns.pop(lease_id, None)

    async def _propose(self, body: dict[str, Any]) -> dict[str, Any]:
        outcome = await self.host.propose(META_PARTITION, MetaCommand(body), self.cfg.request_timeout_s)
        return outcome.body or {}
