"""Watch streams kept open through a torture run, for ``kvcluster.lincheck.watch`` to judge.

One stream per prefix (the register workload's keys, the lease workload's
keys), all on one :class:`AsyncClient` that knows every node: the stream
fails over by itself when a nemesis kills, pauses or cuts off the node
serving it, and resumes from its last token. Each event is kept as a
:class:`~kvcluster.lincheck.watch.WatchRecord` with the local monotonic time
it was yielded (the lease workload's clock), and journalled to ``watch.jsonl``.

The streams start from "now", before any client writes: :meth:`Watcher.start`
returns once every stream holds its first token, so every later change is
delivered. At the end :meth:`Watcher.catch_up` waits (bounded) until every
acknowledged write has been delivered. Memory: at most ``max_events`` records
are kept; past that the record is cut short and the check skips the
"missing" rule (everything else is still judged on what was kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, cast

from kvcluster.client import AsyncClient, Watch, WatchEvent
from kvcluster.lincheck.watch import WatchRecord, WatchType, delivered

log = logging.getLogger(__name__)

REGISTER_PREFIX = "key-"
"""``workload.key_names``."""
LEASE_PREFIX = "lease-"
"""``leases.LeaseWorkload`` keys (``lease-<slot>-<n>``)."""


class Watcher:
    def __init__(
        self,
        endpoints: Sequence[str],
        prefixes: Sequence[str] = (REGISTER_PREFIX, LEASE_PREFIX),
        *,
        max_events: int = 1_000_000,
        connect_timeout: float = 1.0,
        journal: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = list(endpoints)
        self.prefixes = list(prefixes)
        self.max_events = max_events
        self.connect_timeout = connect_timeout
        self.journal = journal
        self.clock = clock
        self.records: list[WatchRecord] = []
        self.truncated = False
        self.errors: list[str] = []
        """Streams that ended or never started: the store's failure, judged as violations."""
        self._client: AsyncClient | None = None
        self._watches: list[Watch] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._waiting: set[tuple[bytes, int | bytes]] = set()
        self._scanned = 0

    @property
    def reconnects(self) -> int:
        return sum(w.reconnects for w in self._watches)

    async def start(self, timeout: float) -> bool:
        """Open every stream; True once each holds a token (from then on no change is missed)."""
        self._client = AsyncClient(self.endpoints, connect_timeout=self.connect_timeout)
        for prefix in self.prefixes:
            watch = self._client.watch(prefix=prefix)
            self._watches.append(watch)
            self._tasks.append(
                asyncio.create_task(self._follow(prefix, watch), name=f"torture-watch-{prefix}")
            )
        try:
            await asyncio.wait_for(asyncio.gather(*(w.positioned.wait() for w in self._watches)), timeout)
        except TimeoutError:
            lagging = [
                p for p, w in zip(self.prefixes, self._watches, strict=True) if not w.positioned.is_set()
            ]
            self.errors.append(f"the watch of {lagging} did not start within {timeout:.0f}s")
            return False
        return True

    async def _follow(self, prefix: str, watch: Watch) -> None:
        try:
            async for event in watch:
                self._keep(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("the watch of %r ended: %r", prefix, exc)
            self.errors.append(f"the watch of {prefix!r} ended: {type(exc).__name__}: {exc}")
        else:
            self.errors.append(f"the watch of {prefix!r} ended by itself")

    def _keep(self, event: WatchEvent) -> None:
        if self.truncated:
            return
        if len(self.records) >= self.max_events:
            self.truncated = True
            log.warning("watch record full (%d events): not keeping more", self.max_events)
            return
        record = WatchRecord(
            cast(WatchType, event.type), event.key, event.value, event.revision, self.clock()
        )
        self.records.append(record)
        if self.journal is not None:
            self.journal.write(record.to_json() + "\n")

    async def catch_up(self, wanted: Iterable[tuple[bytes, int | bytes]], timeout: float) -> int:
        """Wait until every ``wanted`` entry (``lincheck.watch.awaited``) was delivered; how many were not."""
        self._waiting = set(wanted)
        self._scanned = 0
        deadline = self.clock() + timeout
        while True:
            for record in self.records[self._scanned :]:
                self._waiting.difference_update(delivered(record))
            self._scanned = len(self.records)
            if not self._waiting or self.truncated or self.clock() > deadline:
                return len(self._waiting)
            if all(t.done() for t in self._tasks):
                return len(self._waiting)
            await asyncio.sleep(0.1)  # records arrive from the streams' tasks: polled, bounded

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for watch in self._watches:
            with contextlib.suppress(Exception):
                await watch.aclose()
        self._tasks = []
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None
