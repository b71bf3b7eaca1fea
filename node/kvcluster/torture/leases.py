"""Lease episodes next to the register workload: grant, bind a key, keep alive, then revoke or let go.

Each slot plays episodes one after the other. An episode grants a lease with
a short ttl, puts a fresh key (``lease-<slot>-<n>``, a value unique in the
run) bound to it, keeps the lease alive for a while with reads in between,
and then either revokes it or stops renewing and reads until the key is
gone. Everything is recorded as :class:`~kvcluster.lincheck.leases.LeaseEvent`
(``leases.jsonl``) for :func:`~kvcluster.lincheck.leases.check_leases`.

The lease keys are not in the register history: see the checker's docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, Any

from kvcluster.client import AsyncClient, KVError
from kvcluster.lincheck.leases import LeaseEvent, LeaseOp, Outcome

from .workload import ClientSettings

READ_GAP_S = 0.2
GIVE_UP_AFTER_TTLS = 6.0
"""An expiring key is read until gone, or this many ttls after the last renewal (then reported late)."""


class LeaseWorkload:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        slots: int,
        ttl: float,
        seed: int,
        settings: ClientSettings,
        journal: IO[str] | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.slots = slots
        self.ttl = ttl
        self.seed = seed
        self.settings = settings
        self.journal = journal
        self.events: list[LeaseEvent] = []
        self.outcomes: Counter[str] = Counter()
        self.harness_errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._episodes = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._slot(slot), name=f"torture-leases-{slot}") for slot in range(self.slots)
        ]

    async def stop(self) -> None:
        """End the episodes where they are (a cut-short episode is still judged by what it read)."""
        self._stop.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self.settings.timeout * 2 + 5)
        for task in pending:
            task.cancel()
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                self.harness_errors.append(f"lease slot crashed: {result!r}")

    async def _slot(self, slot: int) -> None:
        rng = random.Random(f"{self.seed}/leases/{slot}")
        client = self.settings.client(self.endpoints, slot, rng)
        try:
            count = 0
            while not self._stop.is_set():
                count += 1
                await self._episode(client, rng, f"lease-{slot}-{count}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(client.close())

    async def _episode(self, client: AsyncClient, rng: random.Random, key: str) -> None:
        self._episodes += 1
        episode = self._episodes
        ttl = self.ttl

        async def record(
            op: LeaseOp, call: Callable[[], Awaitable[Any]], **fields: Any
        ) -> tuple[Outcome, Any]:
            invoked = time.monotonic()
            outcome: Outcome
            try:
                result = await call()
                outcome = "ok"
            except asyncio.CancelledError:
                raise
            except KVError as exc:
                # Refused before anything happened (404 unknown lease, 503): fail; otherwise unknown.
                outcome = "fail" if exc.code in ("not_found", "unavailable", "version_conflict") else "info"
                result = None
            except Exception:
                outcome, result = "info", None
            self._emit(LeaseEvent(episode, op, invoked, time.monotonic(), outcome, **fields))
            return outcome, result

        outcome, lease = await record("grant", lambda: client.lease_grant(ttl), ttl=ttl)
        if outcome != "ok":
            return
        fields: dict[str, Any] = {"lease": int(lease), "key": key}
        value = f"{key}@{episode}"
        outcome, _ = await record(
            "put", lambda: client.put(key, value, lease=int(lease)), value=value, **fields
        )

        async def read() -> str | None:
            item = await client.get(key)
            return None if item is None else item.value.decode()

        async def read_once() -> str | None:
            invoked = time.monotonic()
            try:
                seen = await read()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._emit(LeaseEvent(episode, "read", invoked, time.monotonic(), "fail", **fields))
                return "?"
            self._emit(LeaseEvent(episode, "read", invoked, time.monotonic(), "ok", value=seen, **fields))
            return seen

        # Keep alive for a while (sometimes not at all), reading in between.
        until = time.monotonic() + rng.uniform(0, 2 * ttl)
        while time.monotonic() < until and not self._stop.is_set():
            await read_once()
            await asyncio.sleep(rng.uniform(0, ttl / 4))
            await record("keepalive", lambda: client.lease_keepalive(int(lease)), **fields)
            await asyncio.sleep(rng.uniform(0, ttl / 4))
        if rng.random() < 0.5:
            await record("revoke", lambda: client.lease_revoke(int(lease)), **fields)
            await read_once()
            return
        # Let it expire: read until it is gone (the checker's early-expiry rule sees these reads).
        give_up = time.monotonic() + ttl * GIVE_UP_AFTER_TTLS
        while time.monotonic() < give_up and not self._stop.is_set():
            if await read_once() is None:
                break
            await asyncio.sleep(READ_GAP_S)

    def _emit(self, event: LeaseEvent) -> None:
        self.events.append(event)
        self.outcomes[f"{event.op}:{event.outcome}"] += 1
        if self.journal is not None:
            self.journal.write(event.to_json() + "\n")
