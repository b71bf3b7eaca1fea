"""Concurrent clients that record every operation for the linearizability checker.

``concurrency`` *slots* run at once. A slot is played by one *process* at a
time (a process id of the history, with its own :class:`AsyncClient` and so
its own connections); when an operation's outcome is unknown the process
records ``info`` and is retired for good, and the slot continues with a fresh
process id. That is the checker's rule: an operation without a known outcome
stays open forever, so its process can never issue another one.

Outcomes, from the client's typed errors (see ``kvcluster.client.aio`` for
when the client retries by itself -- only when a write certainly did not
happen):

===========================  =========================================  =======
what the client raised        meaning                                    record
===========================  =========================================  =======
(nothing)                     acknowledged                               ok
VersionConflict               compare-and-set lost; ``current_version``  fail (version_conflict)
NotFound (delete)             key absent, nothing deleted                fail (not_found)
Unavailable                   503 / never sent: certainly not applied    fail
BadRequest, TooLarge, 401     refused before anything happened           fail (and counted as a harness error)
OutcomeUnknown (504, drop)    may or may not have been applied           info
ServerError, anything else    unknown                                    info
===========================  =========================================  =======

A read that fails is recorded as ``fail`` and does not retire its process: a
read changes nothing, so whether it "happened" does not matter to anyone.

Every write stores a value unique in the whole run (``<process>.<n>``), which
the checker relies on to tell writes apart by what reads return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from kvcluster.client import (
    AsyncClient,
    BadRequest,
    KVError,
    NotFound,
    TooLarge,
    Unauthorized,
    Unavailable,
    VersionConflict,
)
from kvcluster.lincheck import History, Pending
from kvcluster.lincheck.history import Func

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mix:
    """Relative weights of the operations a client picks."""

    read: int = 0
    write: int = 0
    cas: int = 0
    delete: int = 0
    cas_delete: int = 0

    def choices(self) -> tuple[list[Func], list[int]]:
        funcs: list[Func] = ["read", "write", "cas", "delete", "cas_delete"]
        weights = [self.read, self.write, self.cas, self.delete, self.cas_delete]
        return funcs, weights


WORKLOADS: dict[str, Mix] = {
    "mixed": Mix(read=40, write=20, cas=30, delete=5, cas_delete=5),
    "register": Mix(read=50, write=50),
    "cas": Mix(read=40, cas=60),
}
"""``mixed`` (default) exercises everything; ``register`` is Knossos's classic read/write
register; ``cas`` is Maelstrom lin-kv's read/cas mix."""


@dataclass(frozen=True)
class ClientSettings:
    """Short client timeouts: a stuck request becomes ``info`` fast and the slot moves on.

    ``attempt_timeout`` stays above the nodes' ``--request-timeout`` so a node
    answers 503/504 (which the client can classify) before the client gives up.
    """

    timeout: float = 5.0
    attempt_timeout: float = 3.0
    connect_timeout: float = 1.0
    retries: int = 4

    def client(self, endpoints: Sequence[str], slot: int, rng: random.Random) -> AsyncClient:
        """A client for one slot: its endpoint list starts at a different node per slot."""
        first = slot % len(endpoints)
        return AsyncClient(
            [*endpoints[first:], *endpoints[:first]],
            timeout=self.timeout,
            retries=self.retries,
            attempt_timeout=self.attempt_timeout,
            connect_timeout=self.connect_timeout,
            rng=random.Random(rng.random()),
        )


def key_names(count: int) -> list[str]:
    return [f"key-{i:03d}" for i in range(count)]


@dataclass
class WorkloadStats:
    """Live counters (the summary recounts from the history; these are for progress lines)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    processes: int = 0
    harness_errors: list[str] = field(default_factory=list)


class Workload:
    def __init__(
        self,
        endpoints: Sequence[str],
        history: History,
        *,
        keys: Sequence[str],
        concurrency: int,
        mix: Mix,
        seed: int,
        settings: ClientSettings = ClientSettings(),
    ) -> None:
        if concurrency < 1 or not keys:
            raise ValueError("need at least one client and one key")
        self.endpoints = list(endpoints)
        self.history = history
        self.keys = list(keys)
        self.concurrency = concurrency
        self.mix = mix
        self.seed = seed
        self.settings = settings
        self.stats = WorkloadStats()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._slot(slot), name=f"torture-client-{slot}")
            for slot in range(self.concurrency)
        ]

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Let every in-flight operation finish (bounded), then cancel what is left.

        A cancelled write is recorded as ``info`` (it may still be applied), a
        cancelled read as ``fail``; either way the history stays well formed.
        """
        self._stop.set()
        if not self._tasks:
            return
        bound = drain_timeout if drain_timeout is not None else self.settings.timeout * 2 + 5
        _, pending = await asyncio.wait(self._tasks, timeout=bound)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("client slot crashed: %r", result, exc_info=result)
                self.stats.harness_errors.append(f"client slot crashed: {result!r}")

    async def _slot(self, slot: int) -> None:
        rng = random.Random(f"{self.seed}/slot/{slot}")
        while not self._stop.is_set():
            process = self.history.fresh_process()
            self.stats.processes += 1
            # Spread the slots over the nodes; each client fails over to the others by itself.
            client = self.settings.client(self.endpoints, slot, rng)
            try:
                worker = _Worker(process, client, self.history, self.stats)
                funcs, weights = self.mix.choices()
                while not self._stop.is_set():
                    f = rng.choices(funcs, weights)[0]
                    if not await worker.step(f, rng.choice(self.keys), rng):
                        break  # info: this process is retired
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(client.close())


class _Worker:
    """One process: issues one operation at a time and remembers versions it has seen."""

    def __init__(self, process: int, client: AsyncClient, history: History, stats: WorkloadStats) -> None:
        self.process = process
        self.client = client
        self.history = history
        self.stats = stats
        self.known: dict[str, int] = {}
        """Last version this process saw per key (0: absent), for compare-and-set."""
        self._counter = 0

    def _value(self) -> str:
        self._counter += 1
        return f"{self.process}.{self._counter}"

    async def step(self, f: Func, key: str, rng: random.Random) -> bool:
        """Run one operation (a cas may be preceded by a read); False once the process is retired."""
        if f == "read":
            await self.read(key)
            return True
        if f == "write":
            return await self._mutate(
                self.history.invoke(self.process, "write", key, value=(value := self._value())),
                key,
                lambda: self.client.put(key, value),
            )
        if f == "delete":
            return await self._mutate(
                self.history.invoke(self.process, "delete", key), key, lambda: self.client.delete(key)
            )
        expected = self.known.get(key)
        if expected is None or rng.random() < 0.3:
            # Read first (fresh version), sometimes even when we remember one.
            read = await self.read(key)
            if read is None:
                return True
            expected = read
        if f == "cas":
            value = self._value()
            pending = self.history.invoke(self.process, "cas", key, value=value, expected_version=expected)
            return await self._mutate(pending, key, lambda: self.client.put(key, value, if_version=expected))
        if expected == 0:
            return True  # nothing to delete, and the store has no "delete if absent"
        pending = self.history.invoke(self.process, "cas_delete", key, expected_version=expected)
        return await self._mutate(pending, key, lambda: self.client.delete(key, if_version=expected))

    async def read(self, key: str) -> int | None:
        """A linearizable read; returns the version seen (0: absent), None if it failed."""
        pending = self.history.invoke(self.process, "read", key)
        try:
            item = await self.client.get(key)
        except asyncio.CancelledError:
            pending.fail(error="cancelled")
            raise
        except KVError as exc:
            self._count("read", "fail")
            pending.fail(error=exc.code)
            return None
        except Exception as exc:
            self._count("read", "fail")
            pending.fail(error=type(exc).__name__)
            return None
        self._count("read", "ok")
        if item is None:
            pending.ok(value=None, version=0)
            self.known[key] = 0
            return 0
        pending.ok(value=item.value, version=item.version)
        self.known[key] = item.version
        return item.version

    async def _mutate(self, pending: Pending, key: str, call: Callable[[], Awaitable[int]]) -> bool:
        f = pending.invocation.f
        try:
            version = await call()
        except asyncio.CancelledError:
            pending.info(error="cancelled")
            raise
        except VersionConflict as exc:
            pending.fail(current_version=exc.current_version)
            self.known[key] = exc.current_version
            self._count(f, "fail")
            return True
        except NotFound as exc:
            pending.fail(error=exc.code)
            self.known[key] = 0
            self._count(f, "fail")
            return True
        except Unavailable as exc:
            pending.fail(error=exc.code)
            self._count(f, "fail")
            return True
        except (BadRequest, TooLarge, Unauthorized) as exc:
            pending.fail(error=exc.code)
            self._count(f, "fail")
            self.stats.harness_errors.append(f"{f} {key}: {exc!r}")
            return True
        except KVError as exc:  # OutcomeUnknown, ServerError, a bad answer: the outcome is unknown
            pending.info(error=exc.code)
            self._count(f, "info")
            return False
        except Exception as exc:
            pending.info(error=type(exc).__name__)
            self._count(f, "info")
            return False
        pending.ok(version=version)
        self.known[key] = 0 if f in ("delete", "cas_delete") else version
        self._count(f, "ok")
        return True

    def _count(self, f: str, outcome: str) -> None:
        self.stats.outcomes[f"{f}:{outcome}"] += 1
