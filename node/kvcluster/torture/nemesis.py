"""Faults injected while the clients run, on a seeded schedule, each one logged and checked.

A nemesis takes one fault from injection to healing and records what it
saw in a :class:`FaultRecord`: not only *that* it acted but that the fault
really happened (the killed node came back with a new pid, the paused leader
lost its leadership, the minority stopped applying, the node whose disk filled
up exited 70). A run whose faults silently did nothing would prove nothing.
What the store did wrong while recovering (a node that did not fail-stop,
did not rejoin, a database that does not pass ``quick_check``) goes into
``problems`` and fails the run; things the nemesis could not arrange (no
leader known at that moment) go into ``notes``.

Faults run one at a time (each heals before the next starts), except
reshapes: a reshape is started in the background and the other faults go on
while it runs -- that is the point of it. :class:`Schedule` goes through the
enabled nemeses in seeded, shuffled rounds, so a short run still hits each of
them. Every blocking call on the cluster (process signals, HTTP probes,
mounts) runs in a thread, so the clients' event loop keeps its timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

import aiohttp

from kvcluster.local import ClusterError, LocalCluster, Network

from .disk import Volume

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

NEMESES = ("crash", "pause", "partition", "disk", "reshape")
EXIT_STORAGE_FAILURE = 70
"""What a node exits with when its storage fails (``kvcluster.server.node``)."""


# ---- the fault log -------------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    """One fault: what was done to whom, when (seconds since the run started), and what was seen."""

    id: int
    kind: str
    variant: str
    targets: list[int]
    started: float
    healed: float | None = None
    observed: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        end = f"{self.healed:7.1f}" if self.healed is not None else "      -"
        return f"{self.started:7.1f} {end}  {self.kind}/{self.variant} {self.targets}"


class FaultLog:
    """Fault records, also journaled as they happen (inject and heal events, JSON lines).

    Event times are ``time.monotonic_ns()``, the history's clock, so a fault
    can be placed among the operations of the history file.
    """

    def __init__(self, t0_ns: int, journal: IO[str] | None = None) -> None:
        self.t0_ns = t0_ns
        self.records: list[FaultRecord] = []
        self._journal = journal

    def now(self) -> float:
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def begin(self, kind: str, variant: str, targets: Sequence[int], **observed: Any) -> FaultRecord:
        record = FaultRecord(len(self.records) + 1, kind, variant, sorted(targets), round(self.now(), 3))
        record.observed.update(observed)
        self.records.append(record)
        self._event("inject", record)
        log.info("fault %d: %s/%s on %s", record.id, kind, variant, record.targets)
        return record

    def end(self, record: FaultRecord) -> None:
        record.healed = round(self.now(), 3)
        self._event("heal", record)
        for problem in record.problems:
            log.warning("fault %d (%s): %s", record.id, record.kind, problem)

    def _event(self, event: str, record: FaultRecord) -> None:
        if self._journal is not None:
            body = {"event": event, "time": time.monotonic_ns(), "wall": time.time(), **record.to_dict()}
            self._journal.write(json.dumps(body, default=str) + "\n")
            self._journal.flush()


# ---- what the nemeses act on ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """How long faults last and how long recovery may take (seconds)."""

    hold: tuple[float, float] = (3.0, 6.0)
    """How long a crash, pause, partition or full disk lasts."""
    pause_hold: tuple[float, float] = (3.0, 5.0)
    """Longer than an election timeout: the followers must replace the frozen leader."""
    settle: float = 1.0
    """After a cut, before the first sample of the minority's indices."""
    rejoin_timeout: float = 60.0
    fail_stop_timeout: float = 30.0
    reshape_timeout: float = 300.0


@dataclass
class Env:
    """Everything a nemesis may touch."""

    cluster: LocalCluster
    log: FaultLog
    rng: random.Random
    network: Network | None = None
    volumes: dict[int, Volume] = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    paused: set[int] = field(default_factory=set)
    broken_disks: dict[int, str] = field(default_factory=dict)
    """Node -> "full" or "unwritable" while a disk fault is in force."""
    expected_down: set[int] = field(default_factory=set)
    """Nodes a fault expects to exit on their own (a broken disk), until they are restarted."""
    died: set[int] = field(default_factory=set)
    """Nodes that exited when no fault asked them to (the runner's watchdog reports them)."""

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def hold(self, seconds: float) -> None:
        """Keep a fault in force for ``seconds``, or less if the run is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(seconds, 0.0))

    def alive(self) -> list[int]:
        return sorted(n for n, node in self.cluster.nodes.items() if node.alive())

    def all_nodes(self) -> list[int]:
        return sorted(self.cluster.nodes)

    def view(self, via: Sequence[int] | None = None) -> dict[str, Any] | None:
        """``/v1/cluster`` from the first of ``via`` (default: live, unpaused nodes) that answers."""
        candidates = list(via) if via is not None else [n for n in self.alive() if n not in self.paused]
        for node in candidates:
            status, body = self.cluster.get_json(node, "/v1/cluster", timeout=5.0)
            if status == 200 and isinstance(body, dict):
                return body
        return None

    def leaders(self, via: Sequence[int] | None = None) -> dict[int, int]:
        view = self.view(via)
        if view is None:
            return {}
        return {int(p["id"]): int(p["leader"]) for p in view["partitions"] if p.get("leader") is not None}

    def node_ready(self, node: int) -> bool:
        return self.cluster.ready(node)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
        """Poll a blocking predicate in a thread until it holds; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.call(predicate):
                    return True
            except (ClusterError, OSError, KeyError, ValueError):
                pass
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    async def restart(self, nodes: Sequence[int], record: FaultRecord) -> None:
        """Start stopped nodes on their data directories, then check that each rejoins.

        All are started before any is waited for: after a crash of a majority
        no single node can become ready until enough of the others are back.
        """
        started = time.monotonic()
        for node in nodes:
            before = self.cluster.nodes[node].pid
            await self.call(self.cluster.start_node, node)
            after = self.cluster.nodes[node].pid
            record.observed.setdefault("restarted", {})[str(node)] = after
            if after == before:
                record.problems.append(f"node {node} kept its pid {before}: it was not restarted")
        for node in nodes:
            waited = self.timing.rejoin_timeout - (time.monotonic() - started)
            if await self.wait_until(functools.partial(self.node_ready, node), waited):
                record.observed.setdefault("ready_after_s", {})[str(node)] = round(
                    time.monotonic() - started, 2
                )
                caught_up = await self.wait_until(
                    functools.partial(self.caught_up, node), self.timing.rejoin_timeout
                )
                if not caught_up:
                    record.problems.append(f"node {node} is ready but did not catch up with its leaders")
                else:
                    record.observed.setdefault("caught_up_after_s", {})[str(node)] = round(
                        time.monotonic() - started, 2
                    )
            elif not self.cluster.nodes[node].alive():
                dead = self.cluster.nodes[node].proc
                code = dead.returncode if dead is not None else None
                record.problems.append(f"node {node} exited with {code} after its restart")
            else:
                record.problems.append(
                    f"node {node} not ready {self.timing.rejoin_timeout}s after its restart"
                )

    def caught_up(self, node: int) -> bool:
        """Whether ``node`` has applied, for every partition it holds, what that partition's leader committed.

        The leader's commit index is read first, then the node's applied
        index; the node has caught up when it has applied at least that
        much, whatever was committed since.
        """
        view = self.view([n for n in self.alive() if n != node and n not in self.paused] or [node])
        if view is None:
            return False
        goals = {
            int(p["id"]): int(p["commit"])
            for p in view["partitions"]
            if node in p["voters"] and p.get("commit") is not None
        }
        mine = self.view([node])
        if mine is None:
            return False
        for p in mine["partitions"]:
            goal = goals.get(int(p["id"]))
            if goal is None:
                continue
            applied = p.get("applied", {}).get(str(node))
            if applied is None or int(applied) < goal:
                return False
        return True

    async def revive(self) -> None:
        """Restart nodes that died on their own, as a supervisor (systemd, a StatefulSet) would.

        Done between faults, never during one, so it does not race a nemesis
        acting on the same node. The death itself is already a problem of the run.
        """
        for node in sorted(self.died):
            self.died.discard(node)
            if self.cluster.nodes[node].alive() or node in self.expected_down:
                continue
            record = self.log.begin("supervisor", "restart", [node])
            await self.restart([node], record)
            self.log.end(record)

    # ---- the final heal ------------------------------------------------------------------------------

    async def heal_all(self) -> list[str]:
        """Undo every fault still in force and start every stopped node; returns what was undone."""
        done: list[str] = []
        if self.network is not None and self.network.cuts and not self.network.destroyed:
            await self.call(self.network.heal)
            done.append("healed the network")
        for node in sorted(self.paused):
            with contextlib.suppress(ClusterError, ProcessLookupError):
                await self.call(self.cluster.resume, node)
            done.append(f"resumed node {node}")
        self.paused.clear()
        for node, kind in sorted(self.broken_disks.items()):
            volume = self.volumes[node]
            await self.call(self.cluster.kill, node)
            if kind == "full":
                await self.call(volume.free)
            else:
                await self.call(volume.repair)
            done.append(f"repaired the {kind} disk of node {node}")
        self.broken_disks.clear()
        for node in self.all_nodes():
            if not self.cluster.nodes[node].alive():
                await self.call(self.cluster.start_node, node)
                done.append(f"started node {node}")
        return done


# ---- the nemeses ---------------------------------------------------------------------------------------


class Nemesis:
    """One kind of fault. ``run`` injects it, holds it, heals it and returns its record."""

    name = ""
    variants: tuple[str, ...] = ()

    def __init__(self, only: Sequence[str] = ()) -> None:
        unknown = sorted(set(only) - set(self.variants))
        if unknown:
            raise ValueError(
                f"{self.name} has no variant {', '.join(unknown)} (known: {', '.join(self.variants)})"
            )
        self.only = tuple(only)
        """The variants this run may use (empty: all)."""
        self._round: list[str] = []

    def next_variant(self, env: Env, usable: Sequence[str]) -> str:
        """Variants in seeded, shuffled rounds: a short run still sees each of them."""
        if not self._round:
            allowed = [v for v in usable if not self.only or v in self.only] or list(self.only or usable)
            self._round = env.rng.sample(allowed, len(allowed))
        return self._round.pop()

    def applicable(self, env: Env) -> str | None:
        """Why this nemesis cannot run in ``env`` (None: it can)."""
        return None

    async def run(self, env: Env) -> FaultRecord:
        raise NotImplementedError


class Crash(Nemesis):
    """``kill -9`` of a node (a partition's leader, or any node, or a minority at once), restart later."""

    name = "crash"
    variants = ("leader", "random", "all", "minority")

    async def run(self, env: Env) -> FaultRecord:
        nodes = env.alive()
        usable = ["leader", "random", "all"] + (["minority"] if len(env.all_nodes()) >= 5 else [])
        variant = self.next_variant(env, usable)
        leaders = await env.call(env.leaders) if variant == "leader" else {}
        if variant == "leader" and leaders:
            partition = env.rng.choice(sorted(leaders))
            targets = [leaders[partition]]
            extra: dict[str, Any] = {"partition": partition}
        elif variant == "minority":
            targets = env.rng.sample(nodes, (len(env.all_nodes()) - 1) // 2)
            extra = {}
        elif variant == "all":
            targets, extra = nodes, {}
        else:
            variant, targets, extra = "random", [env.rng.choice(nodes)], {}
        record = env.log.begin(self.name, variant, targets, **extra)
        record.observed["killed"] = {}
        for node in targets:
            pid = env.cluster.nodes[node].pid
            await env.call(env.cluster.kill, node)
            proc = env.cluster.nodes[node].proc
            code = proc.returncode if proc is not None else None
            record.observed["killed"][str(node)] = {"pid": pid, "exit": code}
        await env.hold(env.rng.uniform(*env.timing.hold))
        await env.restart(targets, record)
        env.log.end(record)
        return record


class Pause(Nemesis):
    """SIGSTOP a partition's leader for longer than an election timeout, then SIGCONT.

    Checks that the other replicas elected someone else while it was frozen:
    the old leader must come back to a newer term, not keep serving.
    """

    name = "pause"
    variants = ("leader",)

    async def run(self, env: Env) -> FaultRecord:
        leaders = await env.call(env.leaders)
        partition: int | None = None
        target, variant = env.rng.choice(env.alive()), "random"
        if leaders:
            chosen = env.rng.choice(sorted(leaders))
            partition, target, variant = chosen, leaders[chosen], "leader"
        record = env.log.begin(self.name, variant, [target], partition=partition)
        await env.call(env.cluster.pause, target)
        env.paused.add(target)
        frozen_at = time.monotonic()
        hold = env.rng.uniform(*env.timing.pause_hold)
        others = [n for n in env.alive() if n != target]
        try:
            if partition is not None:
                watched = partition

                def moved() -> bool:
                    leader = env.leaders(others).get(watched)
                    if leader is not None and leader != target:
                        record.observed["new_leader"] = leader
                        return True
                    return False

                if await env.wait_until(moved, hold):
                    record.observed["new_leader_seen_after_s"] = round(time.monotonic() - frozen_at, 2)
                else:
                    record.notes.append(
                        f"no new leader for partition {partition} within the {hold:.1f}s pause"
                    )
            await env.hold(hold - (time.monotonic() - frozen_at))
        finally:
            with contextlib.suppress(ClusterError, ProcessLookupError):
                await env.call(env.cluster.resume, target)
            env.paused.discard(target)
        record.observed["paused_s"] = round(time.monotonic() - frozen_at, 2)
        if not await env.wait_until(lambda: env.node_ready(target), env.timing.rejoin_timeout):
            record.problems.append(f"node {target} not ready {env.timing.rejoin_timeout}s after SIGCONT")
        env.log.end(record)
        return record


class Partition(Nemesis):
    """Cut the network: majority/minority halves, an isolated leader, or a bridge.

    For halves and the isolated leader it samples, after the cut settled and
    again just before healing, the applied index of every replica that is on
    the minority side *of its partition* (with 5 nodes and 3 replicas a node
    minority can hold a partition majority) and the commit index on the
    majority side: the minority must not move, the majority should.
    """

    name = "partition"
    variants = ("halves", "isolate-leader", "bridge")

    def applicable(self, env: Env) -> str | None:
        if env.network is None:
            return "the cluster does not run in network namespaces"
        return None

    def _groups(
        self, env: Env, variant: str, leaders: dict[int, int]
    ) -> tuple[list[set[int]], str, dict[str, Any]]:
        nodes = env.all_nodes()
        shuffled = env.rng.sample(nodes, len(nodes))
        if variant == "isolate-leader" and leaders:
            partition = env.rng.choice(sorted(leaders))
            leader = leaders[partition]
            return [{leader}, set(nodes) - {leader}], variant, {"partition": partition, "leader": leader}
        if variant == "bridge" and len(nodes) >= 3:
            bridge = shuffled[0]
            rest = shuffled[1:]
            left, right = set(rest[: len(rest) // 2]), set(rest[len(rest) // 2 :])
            return [left, right], variant, {"bridge": bridge, "sides": [sorted(left), sorted(right)]}
        minority = set(shuffled[: (len(nodes) - 1) // 2])
        return [minority, set(nodes) - minority], "halves", {}

    async def run(self, env: Env) -> FaultRecord:
        assert env.network is not None
        network = env.network
        variant = self.next_variant(env, self.variants)
        leaders = await env.call(env.leaders) if variant == "isolate-leader" else {}
        groups, variant, extra = self._groups(env, variant, leaders)
        before_view = await env.call(env.view)
        pairs = await env.call(network.cut, groups)
        smallest: set[int] = min(groups, key=len)
        targets = [extra["bridge"]] if variant == "bridge" else sorted(smallest)
        record = env.log.begin(self.name, variant, targets, groups=[sorted(g) for g in groups], **extra)
        record.observed["cut_pairs"] = len(pairs)
        hold = env.rng.uniform(*env.timing.hold)
        cut_at = time.monotonic()
        try:
            if variant != "bridge" and before_view is not None:
                await env.hold(min(env.timing.settle, hold))
                first = await self._sample(env, groups, before_view)
                await env.hold(hold - (time.monotonic() - cut_at))
                last = await self._sample(env, groups, before_view)
                self._judge(record, first, last)
            else:
                await env.hold(hold)
        finally:
            await env.call(network.heal)
        record.observed["cut_s"] = round(time.monotonic() - cut_at, 2)
        ready = await env.wait_until(
            lambda: all(env.node_ready(n) for n in env.all_nodes()), env.timing.rejoin_timeout
        )
        if not ready:
            record.problems.append(f"not every node ready {env.timing.rejoin_timeout}s after the heal")
        env.log.end(record)
        return record

    async def _sample(
        self, env: Env, groups: list[set[int]], view: dict[str, Any]
    ) -> dict[str, dict[tuple[int, int], int]]:
        """Applied indices of minority-side replicas; applied indices of majority-side replicas."""
        minority: dict[tuple[int, int], int] = {}
        majority: dict[tuple[int, int], int] = {}
        members = {int(p["id"]): set(p["voters"]) for p in view["partitions"]}
        views = await asyncio.gather(*(env.call(env.view, [n]) for n in env.all_nodes()))
        for node, node_view in zip(env.all_nodes(), views, strict=True):
            if node_view is None:
                continue
            side = next(g for g in groups if node in g)
            for p in node_view["partitions"]:
                pid = int(p["id"])
                voters = members.get(pid, set(p["voters"]))
                applied = p.get("applied", {}).get(str(node))
                if node not in voters or applied is None:
                    continue
                target = minority if 2 * len(side & voters) <= len(voters) else majority
                target[(pid, node)] = int(applied)
        return {"minority": minority, "majority": majority}

    @staticmethod
    def _judge(
        record: FaultRecord,
        first: dict[str, dict[tuple[int, int], int]],
        last: dict[str, dict[tuple[int, int], int]],
    ) -> None:
        moved = {
            f"p{pid}@n{node}": [index, last["minority"][(pid, node)]]
            for (pid, node), index in first["minority"].items()
            if (pid, node) in last["minority"] and last["minority"][(pid, node)] != index
        }
        progress = sum(
            last["majority"][k] - index for k, index in first["majority"].items() if k in last["majority"]
        )
        record.observed["minority_replicas"] = len(first["minority"])
        record.observed["minority_frozen"] = not moved and bool(first["minority"])
        record.observed["majority_progress"] = progress
        if moved:
            record.problems.append(f"minority-side replicas applied entries while cut off: {moved}")


class Disk(Nemesis):
    """Break data volumes; a node must exit 70 on its broken disk, then rejoin once it is repaired.

    * ``full``: one node's volume fills up (ENOSPC, SQLITE_FULL);
    * ``unwritable``: one node's file system shuts down (EIO, unflushed journal dropped);
    * ``power-cut``: every node's file system shuts down and every node is
      killed at the same moment -- the whole cluster loses power: whatever was
      not fsynced is gone, so an acknowledged write the store had not made
      durable on a majority is lost, and the checks will say so.
    """

    name = "disk"
    variants = ("full", "unwritable", "power-cut")

    def applicable(self, env: Env) -> str | None:
        if not env.volumes:
            return "no data volumes (disk faults need root and loop devices)"
        return None

    async def run(self, env: Env) -> FaultRecord:
        variant = self.next_variant(env, self.variants)
        candidates = [n for n in env.alive() if n in env.volumes]
        targets = candidates if variant == "power-cut" else [env.rng.choice(candidates)]
        kind = "full" if variant == "full" else "unwritable"
        pids = {str(n): env.cluster.nodes[n].pid for n in targets}
        record = env.log.begin(self.name, variant, targets, pids=pids)
        for node in targets:
            env.broken_disks[node] = kind
            env.expected_down.add(node)
        try:
            await self._break_and_repair(env, record, targets, kind, power_cut=variant == "power-cut")
        finally:
            env.expected_down.difference_update(targets)
        env.log.end(record)
        return record

    async def _break_and_repair(
        self, env: Env, record: FaultRecord, targets: list[int], kind: str, power_cut: bool
    ) -> None:
        broken_at = time.monotonic()
        single = not power_cut
        for node in targets:
            volume = env.volumes[node]
            if kind == "full":
                record.observed["filled_bytes"] = await env.call(volume.fill)
                continue
            if single:
                refusal = await env.call(volume.remount_ro)
                record.observed["remount_ro"] = refusal or "applied"
                if refusal is None:
                    record.notes.append("a read-only remount was applied (no writer had a file open)")
            await env.call(volume.shutdown)
        procs = {node: env.cluster.nodes[node].proc for node in targets}
        if power_cut:  # the processes die with the power, at once
            for proc in procs.values():
                if proc is not None and proc.poll() is None:
                    proc.kill()
        await env.wait_until(
            lambda: all(p is None or p.poll() is not None for p in procs.values()),
            env.timing.fail_stop_timeout,
            0.05,
        )
        record.observed["fail_stop_after_s"] = round(time.monotonic() - broken_at, 2)
        exits: dict[str, int | None] = {}
        for node, proc in procs.items():
            code = None if proc is None else proc.poll()
            exits[str(node)] = code
            if code is None:
                # Not necessarily wrong: a node that had nothing to write (no quorum left to
                # replicate to, pre-vote failing) has not touched its disk yet, and on a full disk
                # SQLite may still find room in its own files (a WAL restarted after a checkpoint,
                # free pages left by log compaction) -- then it still persists what it acknowledges,
                # which the checks verify. Only a single dead (EIO) disk under load must be noticed.
                message = f"node {node} still running {env.timing.fail_stop_timeout}s after its disk broke"
                (record.problems if single and kind == "unwritable" else record.notes).append(message)
                await env.call(env.cluster.kill, node)
            elif code != EXIT_STORAGE_FAILURE and not (power_cut and code == -9):
                record.problems.append(
                    f"node {node} exited with {code}, not {EXIT_STORAGE_FAILURE}, on a {kind} disk"
                )
        record.observed["exit"] = exits if not single else exits[str(targets[0])]
        await env.hold(env.rng.uniform(*env.timing.hold) - (time.monotonic() - broken_at))
        checks: dict[str, str] = {}
        for node in targets:
            volume = env.volumes[node]
            await env.call(volume.free if kind == "full" else volume.repair)
            del env.broken_disks[node]
            checks[str(node)] = await env.call(_quick_check, env.cluster.nodes[node].data_dir / "kv.db")
            if checks[str(node)] != "ok":
                record.problems.append(f"node {node}'s database fails quick_check after the fault: {checks}")
        record.observed["quick_check"] = checks if not single else checks[str(targets[0])]
        await env.restart(targets, record)


def _quick_check(path: Path) -> str:
    """SQLite's own consistency check of a (stopped) node's database."""
    if not path.exists():
        return "missing"
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        return f"error: {exc}"
    return "ok" if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:5])


class Reshape(Nemesis):
    """Start a reshape (partitions P <-> 2P; replicas R <-> 5 on five nodes or more) and let it run.

    ``run`` returns once the job is accepted; :meth:`wait` follows it to
    ``done`` in the background while other faults go on.
    """

    name = "reshape"
    variants = ("partitions", "replicas")

    def __init__(self, partitions: int, replicas: int, only: Sequence[str] = ()) -> None:
        super().__init__(only)
        self.initial = (partitions, replicas)
        self.current = (partitions, replicas)
        self.task: asyncio.Task[None] | None = None

    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def kinds(self, nodes: int) -> list[str]:
        """What a reshape here can change: the partition count; the replica count with 5 nodes."""
        replicas = self.initial[1]
        return ["partitions"] + (["replicas"] if nodes >= 5 and replicas < 5 else [])

    def target(self, kind: str) -> tuple[int, int]:
        """One step from the current shape: partitions P <-> 2P, or replicas R <-> 5."""
        p0, r0 = self.initial
        partitions, replicas = self.current
        if kind == "replicas":
            return partitions, (5 if replicas == r0 else r0)
        return (p0 * 2 if partitions == p0 else p0), replicas

    async def run(self, env: Env) -> FaultRecord:
        nodes = env.all_nodes()
        partitions, replicas = self.target(self.next_variant(env, self.kinds(len(nodes))))
        variant = f"p{self.current[0]}r{self.current[1]}->p{partitions}r{replicas}"
        record = env.log.begin(self.name, variant, nodes, partitions=partitions, replicas=replicas)
        body = {"nodes": nodes, "partitions": partitions, "replicas": replicas}
        started = time.monotonic()
        answer = await _admin(env, "POST", "/v1/admin/reshape", body, timeout=30.0)
        if answer is None or answer[0] != 202:
            record.problems.append(f"the reshape was not accepted: {answer}")
            env.log.end(record)
            return record
        record.observed["job"] = answer[1].get("job") if isinstance(answer[1], dict) else answer[1]
        self.current = (partitions, replicas)
        self.task = asyncio.create_task(self._follow(env, record, started), name="torture-reshape")
        return record

    async def _follow(self, env: Env, record: FaultRecord, started: float) -> None:
        deadline = started + env.timing.reshape_timeout
        last: Any = None
        while time.monotonic() < deadline:
            answer = await _admin(env, "GET", "/v1/admin/reshape", None, timeout=10.0)
            if answer is not None and answer[0] == 200 and isinstance(answer[1], dict):
                last = answer[1]
                if last.get("state") in ("done", "failed", "idle"):
                    break
            await asyncio.sleep(1.0)
        record.observed["took_s"] = round(time.monotonic() - started, 1)
        if isinstance(last, dict):
            record.observed["state"] = last.get("state")
            record.observed["steps"] = last.get("steps_done")
            if last.get("error"):
                record.observed["error"] = last.get("error")
        if not isinstance(last, dict) or last.get("state") != "done":
            state = last.get("state") if isinstance(last, dict) else last
            record.problems.append(
                f"reshape to p{self.current[0]}r{self.current[1]} ended {state!r} "
                f"after {record.observed['took_s']}s: {last}"
            )
        env.log.end(record)

    async def wait(self, timeout: float) -> None:
        if self.task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.task), timeout)


async def _admin(
    env: Env, method: str, path: str, body: dict[str, Any] | None, timeout: float
) -> tuple[int, Any] | None:
    """One admin call to whichever live node answers (503 and connection failures try the next)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, Any] | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session:
        while time.monotonic() < deadline:
            for node in [n for n in env.alive() if n not in env.paused]:
                url = env.cluster.nodes[node].url + path
                try:
                    async with session.request(method, url, json=body) as resp:
                        text = await resp.read()
                        try:
                            parsed: Any = json.loads(text or b"null")
                        except ValueError:
                            parsed = text.decode(errors="replace")
                        last = (resp.status, parsed)
                        if resp.status not in (502, 503, 504):
                            return last
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    last = (0, str(exc))
            await asyncio.sleep(0.5)
    return last


# ---- the schedule -----------------------------------------------------------------------------------------


def make_nemeses(
    names: Sequence[str],
    partitions: int,
    replicas: int,
    variants: Mapping[str, Sequence[str]] | None = None,
) -> list[Nemesis]:
    """The nemeses called ``names``; ``variants`` restricts some to a few of their variants."""
    variants = variants or {}
    factories: dict[str, Callable[[Sequence[str]], Nemesis]] = {
        "crash": Crash,
        "pause": Pause,
        "partition": Partition,
        "disk": Disk,
        "reshape": lambda only: Reshape(partitions, replicas, only),
    }
    unknown = sorted(set(names) - set(factories))
    if unknown:
        raise ValueError(f"unknown nemeses {unknown} (known: {', '.join(NEMESES)})")
    return [factories[name](tuple(variants.get(name, ()))) for name in names]


def variants_of(name: str) -> tuple[str, ...]:
    classes: dict[str, type[Nemesis]] = {
        "crash": Crash,
        "pause": Pause,
        "partition": Partition,
        "disk": Disk,
        "reshape": Reshape,
    }
    return classes[name].variants


@dataclass
class Schedule:
    """Faults one after another, separated by quiet gaps, until ``stop``; then heal everything."""

    env: Env
    nemeses: list[Nemesis]
    gap: tuple[float, float] = (1.0, 3.0)
    first_gap: float = 2.0
    skipped: dict[str, str] = field(default_factory=dict)
    """Nemeses that could not run here, with the reason."""

    def __post_init__(self) -> None:
        usable = []
        for nemesis in self.nemeses:
            reason = nemesis.applicable(self.env)
            if reason:
                self.skipped[nemesis.name] = reason
                log.warning("skipping the %s nemesis: %s", nemesis.name, reason)
            else:
                usable.append(nemesis)
        self.nemeses = usable

    async def run(self, deadline: float) -> None:
        """Inject faults until ``deadline`` (``time.monotonic``) or until ``env.stopping`` is set."""
        env = self.env
        if not self.nemeses:
            return
        await env.hold(min(self.first_gap, deadline - time.monotonic()))
        round_: list[Nemesis] = []
        while not env.stopping.is_set() and time.monotonic() < deadline - 1.0:
            await env.revive()
            if not round_:
                round_ = env.rng.sample(self.nemeses, len(self.nemeses))
            nemesis = round_.pop(0)
            if isinstance(nemesis, Reshape) and nemesis.busy():
                continue
            try:
                await nemesis.run(env)
            except Exception as exc:
                log.exception("the %s nemesis failed", nemesis.name)
                record = env.log.begin(nemesis.name, "error", [])
                record.problems.append(f"harness: the {nemesis.name} nemesis raised {exc!r}")
                env.log.end(record)
                await env.heal_all()
            if isinstance(nemesis, Reshape) and len(self.nemeses) == 1:
                # Nothing else to do meanwhile: follow the reshape, reviving nodes it may need.
                while nemesis.busy() and time.monotonic() < deadline and not env.stopping.is_set():
                    await env.revive()
                    await nemesis.wait(1.0)
            await env.hold(min(env.rng.uniform(*self.gap), deadline - time.monotonic()))

    def reshapes(self) -> list[Reshape]:
        return [n for n in self.nemeses if isinstance(n, Reshape)]
