"""Client load for the end-to-end tests: what was acknowledged, and a history for the checker.

Writers and readers go through the real :class:`~kvcluster.client.AsyncClient`
against every address a pod can have (the client skips the ones not
listening), so requests land on old and new nodes alike while the operator
grows, reshapes and shrinks the cluster. Two kinds of keys:

* *unique keys*, each written once: a lost acknowledged write shows up as a
  missing key in a plain listing, cheap to check after every step however
  many there are;
* a few *shared keys* that every writer overwrites and compare-and-sets:
  the contended case, recorded operation by operation in a
  :class:`~kvcluster.lincheck.History` for the linearizability checker.

Every written value is unique (writer and sequence number), which is what
the checker assumes and what lets :meth:`KVLoad.verify` tell an old value
from a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field

from kvcluster.client import AsyncClient, KVError, OutcomeUnknown, Unavailable, VersionConflict
from kvcluster.lincheck import History
from kvcluster.lincheck.history import Func

PREFIX = "e2e/"
UNIQUE = PREFIX + "u/"
SHARED = PREFIX + "s/"


@dataclass(frozen=True)
class Acked:
    version: int
    value: bytes


@dataclass
class Verification:
    keys: int
    missing: list[str]
    stale: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.stale


@dataclass
class KVLoad:
    """Background writers and readers; ``stop()`` ends them, ``verify()`` reads everything back."""

    endpoints: list[str]
    token: str | None
    writers: int = 3
    readers: int = 1
    shared_keys: int = 8
    pause: float = 0.02
    """Between two operations of one task: a steady load that leaves the 2-core machine room to reshape."""
    seed: int = 1
    history: History = field(default_factory=History)
    acked: dict[bytes, Acked] = field(default_factory=dict)
    """Per key, the acknowledged write with the highest version."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """``<f> <ok|fail|info> [error]`` counts, for the report."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _client: AsyncClient | None = None

    def start(self) -> None:
        self._client = AsyncClient(self.endpoints, token=self.token, timeout=20.0)
        for w in range(self.writers):
            self._tasks.append(asyncio.create_task(self._writer(w), name=f"writer-{w}"))
        for r in range(self.readers):
            self._tasks.append(asyncio.create_task(self._reader(r), name=f"reader-{r}"))

    async def stop(self) -> None:
        """Let every task finish its current operation (bounded by the client's deadline)."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks), timeout=60)
        self._tasks.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def cancel(self) -> None:
        """Tear down after a failure without waiting for anything."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.close()

    @property
    def acknowledged_writes(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith(("write ok", "cas ok")))

    def _ack(self, key: bytes, version: int, value: bytes) -> None:
        old = self.acked.get(key)
        if old is None or version > old.version:
            self.acked[key] = Acked(version, value)

    async def _writer(self, w: int) -> None:
        assert self._client is not None
        client = self._client
        rng = random.Random(self.seed * 1000 + w)
        process = self.history.fresh_process()
        seen: dict[bytes, int] = {}
        n = 0
        while not self._stop.is_set():
            n += 1
            value = f"w{w}-{n}".encode()
            if n % 2:
                key = f"{UNIQUE}{w}/{n:06d}".encode()
                expected = None
            else:
                key = f"{SHARED}{rng.randrange(self.shared_keys)}".encode()
                expected = seen.get(key, 0) if rng.random() < 0.5 else None
            f: Func = "write" if expected is None else "cas"
            op = self.history.invoke(process, f, key, value=value, expected_version=expected)
            try:
                version = await client.put(key, value, if_version=expected)
            except VersionConflict as exc:
                op.fail(current_version=exc.current_version)
                seen[key] = exc.current_version
                self.outcomes[f"{f} fail version_conflict"] += 1
            except Unavailable as exc:
                op.fail(error="unavailable")  # 503 or nothing reachable: certainly not applied
                self.outcomes[f"{f} fail {exc.code}"] += 1
            except (OutcomeUnknown, KVError, TimeoutError) as exc:
                op.info(error=type(exc).__name__)
                process = self.history.fresh_process()
                self.outcomes[f"{f} info {type(exc).__name__}"] += 1
            else:
                op.ok(version=version)
                seen[key] = version
                self._ack(key, version, value)
                self.outcomes[f"{f} ok"] += 1
            await asyncio.sleep(self.pause)

    async def _reader(self, r: int) -> None:
        assert self._client is not None
        client = self._client
        rng = random.Random(self.seed * 1000 + 500 + r)
        process = self.history.fresh_process()
        while not self._stop.is_set():
            key = f"{SHARED}{rng.randrange(self.shared_keys)}".encode()
            await self._read(client, process, key)
            await asyncio.sleep(self.pause)

    async def _read(self, client: AsyncClient, process: int, key: bytes) -> tuple[bytes | None, int] | None:
        op = self.history.invoke(process, "read", key)
        try:
            item = await client.get(key)
        except (KVError, TimeoutError) as exc:
            op.fail(error=type(exc).__name__)  # a failed read constrains nothing
            self.outcomes[f"read fail {type(exc).__name__}"] += 1
            return None
        if item is None:
            op.ok(version=0)
            self.outcomes["read ok"] += 1
            return None, 0
        op.ok(value=item.value, version=item.version)
        self.outcomes["read ok"] += 1
        return item.value, item.version

    async def verify(self) -> Verification:
        """Every acknowledged write is readable, with its value or a later one.

        Unique keys through a listing (each page is linearizable); shared keys
        one by one, each read recorded in the history like any other.
        """
        acked = dict(self.acked)  # writes acknowledged before the reads start
        async with AsyncClient(self.endpoints, token=self.token, timeout=30.0) as client:
            listed: dict[bytes, tuple[bytes, int]] = {}
            async for page in client.scan_all(UNIQUE, page_size=500):
                for item in page.items:
                    listed[item.key] = (item.value, item.version)
            missing: list[str] = []
            stale: list[str] = []
            process = self.history.fresh_process()
            for key, want in sorted(acked.items()):
                if key.startswith(UNIQUE.encode()):
                    got: tuple[bytes | None, int] | None = listed.get(key)
                else:
                    got = await self._read(client, process, key)
                    if got is None:  # the read failed: try once more, then call it lost
                        got = await self._read(client, process, key)
                if got is None or got[0] is None:
                    missing.append(key.decode())
                elif got[1] < want.version or (got[1] == want.version and got[0] != want.value):
                    stale.append(
                        f"{key.decode()}: acked v{want.version}={want.value!r}, read v{got[1]}={got[0]!r}"
                    )
        return Verification(len(acked), missing, stale)
