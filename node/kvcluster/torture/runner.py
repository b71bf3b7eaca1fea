"""One torture run, start to verdict: cluster, load, faults, recovery, restart, checks.

Phases (their durations land in ``summary.phases``):

1. **setup** -- clean what crashed runs left (namespaces, loop mounts), make the
   data volumes (disk nemesis) and the namespaces (partition nemesis), start
   the nodes, wait until every node is ready.
2. **load** -- ``concurrency`` clients for ``duration`` seconds while the schedule
   injects faults; a watchdog notes any node that exits when no fault asked it to.
3. **recover** -- stop injecting, heal everything still broken, let a running
   reshape finish, drain the clients (in-flight operations complete or become
   ``info``), wait until every node is ready, read every key once (recorded).
4. **restart** -- SIGTERM every node (each must exit 0 within 15 s), start them
   all again on their data, wait until ready, read every key again (recorded):
   the durability check judges these reads (see ``durability.py``). Then the
   watch streams (open since before the load, see ``watcher.py``) get
   ``watch_catch_up`` seconds to deliver every acknowledged write.
5. **check** -- the cluster is stopped (the checker gets the CPU), then
   ``lincheck.check`` judges the whole history, final reads included, and
   ``lincheck.watch`` what the watch streams delivered.

Artifacts in ``out``: ``history.jsonl`` (exactly what ``kvcluster.lincheck``
loads, written as it happens), ``faults.jsonl`` (inject/heal events on the
history's clock), ``leases.jsonl`` and ``watch.jsonl`` (the lease workload's
operations and the watch events, on the runner's monotonic clock),
``summary.json``, ``violation-<key>.jsonl`` (the smallest failing sub-history
of each violating key, replayable), and ``cluster/`` with the node logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from kvcluster.client import AsyncClient, KVError
from kvcluster.lincheck import History, Op, Result, check, pair, save_history, unpair
from kvcluster.lincheck.leases import LeaseEvent, check_leases
from kvcluster.lincheck.render import show_bytes
from kvcluster.lincheck.watch import WatchRecord, awaited, check_watch
from kvcluster.local import ClusterError, LocalCluster
from kvcluster.local import netns as netns_mod
from kvcluster.local.ports import free_port_block
from kvcluster.server.node import GAVE_UP_STOP

from . import disk
from .config import Config
from .durability import Observed, check_durability
from .leases import LeaseWorkload
from .nemesis import Env, FaultLog, Schedule, make_nemeses
from .report import Summary, count_errors, count_operations
from .script import ReshapeScript
from .watcher import Watcher
from .workload import WORKLOADS, Workload, key_names

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def _acked(workload: Workload) -> int:
    return sum(v for k, v in workload.stats.outcomes.items() if k.endswith(":ok"))


def run(config: Config, progress: Progress | None = None) -> Summary:
    """Carry out a run (blocking); see the module docstring. Never raises for store failures."""
    return asyncio.run(Runner(config, progress).run())


class Runner:
    def __init__(self, config: Config, progress: Progress | None = None) -> None:
        self.cfg = config
        self.say: Progress = progress or (lambda text: log.info("%s", text))
        self.summary = Summary(config=_config_dict(config), started_wall=time.time())
        self.cluster: LocalCluster | None = None
        self.volumes: dict[int, disk.Volume] = {}
        self.history: History | None = None
        self.final_processes: dict[str, int] = {}
        self.watcher: Watcher | None = None
        self.lease_events: list[LeaseEvent] = []
        self._journals: list[IO[str]] = []
        self._t0 = time.monotonic()

    async def run(self) -> Summary:
        cfg, summary = self.cfg, self.summary
        cfg.out.mkdir(parents=True, exist_ok=True)
        finals: dict[str, dict[bytes, Observed]] = {}
        try:
            await self._phase("setup", self._setup())
            if self.cluster is not None:
                finals = await self._exercise()
        except Exception as exc:
            log.exception("torture run failed")
            summary.harness_errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if self.watcher is not None:
                await self.watcher.stop()
            await asyncio.to_thread(self._teardown)
        if self.history is not None:
            await asyncio.to_thread(self._judge, finals)
        summary.total_seconds = round(time.monotonic() - self._t0, 1)
        summary.decide()
        self._save()
        return summary

    # ---- phases --------------------------------------------------------------------------------------

    async def _phase(self, name: str, work: Any) -> Any:
        started = time.monotonic()
        try:
            return await work
        finally:
            self.summary.phases[name] = round(time.monotonic() - started, 1)

    async def _setup(self) -> None:
        cfg, summary = self.cfg, self.summary
        root = netns_mod.unavailable_reason() is None
        if root:
            await asyncio.to_thread(netns_mod.clean_stale)
        if disk.unavailable_reason() is None:
            await asyncio.to_thread(disk.clean_stale)
        use_netns = cfg.netns
        reason = netns_mod.unavailable_reason()
        if use_netns and reason:
            summary.harness_errors.append(f"--netns asked for, but {reason}")
            return
        if use_netns is None:
            use_netns = "partition" in cfg.nemeses and reason is None
        if "partition" in cfg.nemeses and not use_netns:
            summary.skipped_nemeses["partition"] = reason or "network namespaces switched off (--no-netns)"
            self.say(f"skipping the partition nemesis: {summary.skipped_nemeses['partition']}")
        base = cfg.out / "cluster"
        if base.exists():
            await asyncio.to_thread(_remove_tree, base)
        base_port = cfg.base_port or (7000 if use_netns else free_port_block(cfg.nodes + 8))
        cluster = LocalCluster(
            base,
            nodes_count=cfg.nodes,
            partitions=cfg.partitions,
            replicas=cfg.replicas,
            base_port=base_port,
            node_args=cfg.node_flags(),
            netns=bool(use_netns),
        )
        self.cluster = cluster
        summary.cluster = {
            "network": f"namespaces {cluster.network.router} (10.77.{cluster.network.subnet}.0/24)"
            if cluster.network
            else "loopback",
            "urls": cluster.urls(),
            "dir": str(base),
        }
        if cfg.final_restart == "power-cut" and disk.unavailable_reason():
            summary.harness_errors.append(
                f"--final-restart power-cut needs data volumes: {disk.unavailable_reason()}"
            )
            return
        if "disk" in cfg.nemeses or cfg.final_restart == "power-cut":
            why = disk.unavailable_reason()
            if why:
                summary.skipped_nemeses["disk"] = why
                self.say(f"skipping the disk nemesis: {why}")
            else:
                token = f"{random.getrandbits(24):06x}"
                for node in cluster.nodes.values():
                    volume = disk.Volume.for_node(token, node.id, node.data_dir, cfg.volume_mb)
                    self.volumes[node.id] = volume
                    await asyncio.to_thread(volume.create)
                summary.cluster["volumes"] = f"ext4 {cfg.volume_mb} MiB loop volumes in /dev/shm"
        self.say(f"starting {cfg.nodes} nodes ({summary.cluster['network']}) in {base}")
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(cluster.wait_ready, cfg.ready_timeout)

    async def _exercise(self) -> dict[str, dict[bytes, Observed]]:
        cfg, summary = self.cfg, self.summary
        cluster = self.cluster
        assert cluster is not None
        history_fp = self._open(cfg.out / "history.jsonl")
        faults_fp = self._open(cfg.out / "faults.jsonl")
        self.history = history = History(journal=history_fp)
        env = Env(
            cluster=cluster,
            log=FaultLog(time.monotonic_ns(), faults_fp),
            rng=random.Random(cfg.seed),
            network=cluster.network,
            volumes=self.volumes,
            timing=cfg.timing,
        )
        schedule = Schedule(
            env, make_nemeses(cfg.nemeses, cfg.partitions, cfg.replicas, cfg.variants), gap=cfg.fault_gap
        )
        for name, reason in schedule.skipped.items():
            summary.skipped_nemeses.setdefault(name, reason)
        keys = key_names(cfg.keys)
        workload = Workload(
            cluster.urls(),
            history,
            keys=keys,
            concurrency=cfg.concurrency,
            mix=WORKLOADS[cfg.workload],
            seed=cfg.seed,
            settings=cfg.client,
        )
        leases = LeaseWorkload(
            cluster.urls(),
            slots=cfg.lease_slots,
            ttl=cfg.lease_ttl,
            seed=cfg.seed,
            settings=cfg.client,
            journal=self._open(cfg.out / "leases.jsonl"),
        )
        finals: dict[str, dict[bytes, Observed]] = {}
        if cfg.preload:
            started = time.monotonic()
            await self._preload(write=True)
            summary.phases["preload"] = round(time.monotonic() - started, 1)
        if cfg.watch:
            self.watcher = Watcher(
                cluster.urls(),
                max_events=cfg.watch_max_events,
                connect_timeout=cfg.client.connect_timeout,
                journal=self._open(cfg.out / "watch.jsonl"),
            )
            await self.watcher.start(timeout=cfg.ready_timeout)
        load_started = time.monotonic()
        self.say(f"load: {cfg.concurrency} clients on {cfg.keys} keys for {cfg.duration:.0f}s")
        await workload.start()
        await leases.start()
        watchdog = asyncio.create_task(self._watchdog(env, workload, load_started))
        if cfg.script:
            # A planned walk through shapes: the load lasts as long as the walk.
            script = ReshapeScript(cfg.script, lambda: _acked(workload), cfg.timing.reshape_timeout)
            faults = asyncio.create_task(script.run(env))
        else:
            faults = asyncio.create_task(schedule.run(load_started + cfg.duration))
        try:
            if cfg.script:
                await asyncio.wait([faults], timeout=len(cfg.script) * (cfg.timing.reshape_timeout + 30))
            else:
                await asyncio.wait([faults], timeout=cfg.duration)
                # The load lasts ``duration`` even when the schedule has nothing to do (or crashed).
                await asyncio.sleep(max(load_started + cfg.duration - time.monotonic(), 0.0))
            env.stopping.set()
            bound = cfg.timing.rejoin_timeout * 2 + cfg.timing.fail_stop_timeout + 30
            done, _ = await asyncio.wait([faults], timeout=bound)
            if not done:
                faults.cancel()
                summary.problems.append(f"a fault did not finish healing within {bound:.0f}s")
            elif faults.exception() is not None:
                summary.harness_errors.append(f"fault schedule crashed: {faults.exception()!r}")
            for action in await env.heal_all():
                self.say(f"final heal: {action}")
            for reshape in schedule.reshapes():
                if reshape.busy():
                    self.say("waiting for the reshape to finish")
                until = time.monotonic() + cfg.timing.reshape_timeout
                while reshape.busy() and time.monotonic() < until:
                    await env.revive()  # a reshape needs its nodes: restart any that died meanwhile
                    await reshape.wait(1.0)
                if reshape.busy():
                    summary.problems.append(
                        f"the reshape did not finish within {cfg.timing.reshape_timeout:.0f}s"
                        " of the run's end"
                    )
            await workload.stop()
            await leases.stop()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            if not faults.done():
                faults.cancel()
            summary.load_seconds = round(time.monotonic() - load_started, 1)
            summary.phases["load"] = summary.load_seconds
            summary.faults = [record.to_dict() for record in env.log.records]
            summary.problems += [
                f"fault {r.id} {r.kind}/{r.variant}: {p}" for r in env.log.records for p in r.problems
            ]
            summary.harness_errors += workload.stats.harness_errors + leases.harness_errors
            self.lease_events = leases.events
            lease_report = check_leases(leases.events)
            summary.leases = {**lease_report.to_dict(), "outcomes": dict(sorted(leases.outcomes.items()))}

        async def settle(started: float, phase: str, read_as: str, failure: str) -> None:
            """Wait for a ready cluster (a problem if it is not), then read every key back."""
            try:
                await asyncio.to_thread(cluster.wait_ready, cfg.ready_timeout)
            except ClusterError as exc:
                summary.problems.append(f"{failure}: {exc}")
            finals[read_as] = await self._read_all(history, keys, read_as)
            summary.phases[phase] = round(time.monotonic() - started, 1)

        await settle(
            time.monotonic(),
            "recover",
            "after_heal",
            "the cluster did not recover after the faults were healed",
        )
        started = time.monotonic()
        await asyncio.to_thread(self._stop_all, cfg.final_restart)
        await asyncio.to_thread(cluster.start)
        await settle(
            started, "restart", "after_restart", "the cluster did not come back after a full restart"
        )
        if cfg.preload:
            await self._preload(write=False)
        if self.watcher is not None:
            started = time.monotonic()
            missing = await self.watcher.catch_up(awaited(history.ops, leases.events), cfg.watch_catch_up)
            summary.phases["watch_catch_up"] = round(time.monotonic() - started, 1)
            if missing:
                self.say(
                    f"the watch did not deliver {missing} acknowledged writes"
                    f" within {cfg.watch_catch_up:.0f}s"
                )
        return finals

    async def _preload(self, write: bool) -> None:
        """Bulk data for reshapes to move (write), or the check that all of it survived (read)."""
        assert self.cluster is not None
        count = self.cfg.preload
        bad: list[str] = []
        sem = asyncio.Semaphore(32)

        def value(i: int) -> bytes:
            return (f"preload-{i:07d}-".encode() * 64)[:1024]

        async with AsyncClient(self.cluster.urls(), timeout=30.0, retries=10) as kv:

            async def one(i: int) -> None:
                key = f"preload/{i:07d}"
                async with sem:
                    try:
                        if write:
                            await kv.put(key, value(i))
                        else:
                            item = await kv.get(key)
                            if item is None or item.value != value(i):
                                bad.append(key)
                    except KVError as exc:
                        bad.append(f"{key}: {exc}")

            await asyncio.gather(*(one(i) for i in range(count)))
        if bad:
            what = "could not be written" if write else "were missing or wrong after the restart"
            self.summary.problems.append(f"{len(bad)} of {count} preloaded keys {what}: {bad[:3]}")
        else:
            self.say(f"{count} preloaded keys {'written' if write else 'all read back intact'}")

    def _stop_all(self, how: str) -> None:
        """Stop every node before the durability reads: SIGTERM, kill -9, or a power cut.

        A power cut shuts every node's file system down at once (what was not
        fsynced is gone, as after a power failure), kills every node and
        repairs the volumes (journal replay).
        """
        cluster, summary = self.cluster, self.summary
        assert cluster is not None
        nodes = sorted(cluster.nodes.values(), key=lambda n: n.id)
        if how == "term":
            self.say("restarting every node (SIGTERM, then start on the same data)")
            running = [node for node in nodes if node.alive()]
            logged = {node.id: _log_size(node.log_path) for node in running}
            cluster.stop()
            for node in running:
                code = node.proc.returncode if node.proc is not None else None
                if code != 0:
                    summary.problems.append(
                        f"node {node.id} exited with {code} on SIGTERM (expected 0 within 15s)"
                    )
                elif GAVE_UP_STOP in _log_since(node.log_path, logged[node.id]):
                    # Safe (every acknowledged write was synced) but a bug all the same: a stop
                    # should finish. Its log holds the stacks of what it waited on.
                    summary.problems.append(
                        f"node {node.id} gave up its graceful stop; the stacks are in {node.log_path}"
                    )
            return
        if how == "kill":
            self.say("restarting every node (kill -9 all at once, then start on the same data)")
            for node in nodes:
                if node.proc is not None and node.proc.poll() is None:
                    node.proc.kill()
            for node in nodes:
                cluster.kill(node.id)
            return
        self.say("restarting every node (power cut: every file system shut down, every node killed)")
        for volume in self.volumes.values():
            volume.shutdown()
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
        for node in nodes:
            cluster.kill(node.id)
        for volume in self.volumes.values():
            volume.repair()

    async def _watchdog(self, env: Env, workload: Workload, started: float) -> None:
        """Notes nodes that exit when no fault asked them to; prints progress lines."""
        cluster = env.cluster
        last_print = time.monotonic()
        reported: set[tuple[int, int | None]] = set()
        while True:
            await asyncio.sleep(1.0)
            for node in cluster.nodes.values():
                expected = node.id in env.expected_down
                if node.proc is not None and node.proc.poll() is not None and not expected:
                    killed = node.proc.returncode == -9
                    key = (node.id, node.pid)
                    if not killed and key not in reported:
                        reported.add(key)
                        self.summary.problems.append(
                            f"node {node.id} (pid {node.pid}) exited with {node.proc.returncode}"
                            f" at {time.monotonic() - started:.1f}s without a fault asking it to"
                            f" (see {node.log_path})"
                        )
                        env.died.add(node.id)
            every = self.cfg.progress_every
            if every and time.monotonic() - last_print >= every:
                last_print = time.monotonic()
                outcomes = workload.stats.outcomes
                ok = sum(v for k, v in outcomes.items() if k.endswith(":ok"))
                fail = sum(v for k, v in outcomes.items() if k.endswith(":fail"))
                info = sum(v for k, v in outcomes.items() if k.endswith(":info"))
                current = env.log.records[-1].line().strip() if env.log.records else "-"
                self.say(
                    f"{time.monotonic() - started:6.0f}s  ok {ok}  fail {fail}  info {info}"
                    f"  faults {len(env.log.records)} (last: {current})"
                )

    async def _read_all(self, history: History, keys: Sequence[str], label: str) -> dict[bytes, Observed]:
        """Read every key once, linearizably, recorded in the history; retries failures until a deadline."""
        assert self.cluster is not None
        process = history.fresh_process()
        self.final_processes[label] = process
        found: dict[bytes, Observed] = {}
        deadline = time.monotonic() + self.cfg.ready_timeout
        async with AsyncClient(self.cluster.urls(), timeout=10.0, retries=10, attempt_timeout=5.0) as kv:
            for key in keys:
                while time.monotonic() < deadline:
                    pending = history.invoke(process, "read", key)
                    try:
                        item = await kv.get(key)
                    except KVError as exc:
                        pending.fail(error=exc.code)
                        await asyncio.sleep(0.5)
                        continue
                    if item is None:
                        pending.ok(value=None, version=0)
                        found[key.encode()] = Observed(None, 0)
                    else:
                        pending.ok(value=item.value, version=item.version)
                        found[key.encode()] = Observed(item.value, item.version)
                    break
        missing = len(keys) - len(found)
        if missing:
            self.summary.problems.append(f"{missing} keys could not be read {label.replace('_', ' ')}")
        return found

    # ---- after the run -------------------------------------------------------------------------------

    def _teardown(self) -> None:
        if self.cluster is not None:
            try:
                self.cluster.close()
            except Exception as exc:
                self.summary.harness_errors.append(f"teardown: {exc!r}")
        for volume in self.volumes.values():
            try:
                volume.destroy()
            except Exception as exc:
                self.summary.harness_errors.append(f"teardown of {volume.mount_point}: {exc!r}")
        for fp in self._journals:
            with contextlib.suppress(OSError):
                fp.close()

    def _judge(self, finals: dict[str, dict[bytes, Observed]]) -> None:
        cfg, summary = self.cfg, self.summary
        assert self.history is not None
        ops = self.history.ops
        result = judge_ops(ops, self.final_processes, finals, summary, cfg.check_budget, cfg.check_workers)
        if self.watcher is not None:
            watcher = self.watcher
            summary.watch = judge_watch(
                watcher.records,
                ops,
                self.lease_events,
                not watcher.truncated,
                watcher.errors,
                watcher.reconnects,
            )
        for key_text, ops_for_key in violation_histories(result).items():
            path = cfg.out / f"violation-{key_text}.jsonl"
            save_history(ops_for_key, path)
            summary.files[f"violation {key_text}"] = str(path)

    def _open(self, path: Path) -> IO[str]:
        fp = path.open("w", encoding="utf-8")
        self._journals.append(fp)
        self.summary.files[path.stem] = str(path)
        return fp

    def _save(self) -> None:
        path = self.cfg.out / "summary.json"
        self.summary.files["summary"] = str(path)
        body = self.summary.to_dict()
        body["final_processes"] = self.final_processes
        path.write_text(json.dumps(body, indent=2, default=str) + "\n")


# ---- judging (also used to replay a saved run) ----------------------------------------------------------


def judge_ops(
    ops: list[Op],
    final_processes: dict[str, int],
    finals: dict[str, dict[bytes, Observed]] | None,
    summary: Summary,
    budget: float,
    workers: int = 1,
) -> Result:
    """Fill ``summary`` with operation counts, the durability verdicts and the checker's verdict."""
    finals = finals if finals is not None else finals_from_history(ops, final_processes)
    final_ids = set(final_processes.values())
    operations = pair(ops)
    workload_ops = [o for o in operations if o.process not in final_ids]
    summary.operations = count_operations(workload_ops)
    summary.final_reads = count_operations([o for o in operations if o.process in final_ids])
    summary.errors = count_errors(workload_ops)
    summary.processes = len({o.process for o in workload_ops})
    if "after_restart" in finals:
        report = check_durability(ops, finals["after_restart"])
        summary.durability = {"ok": report.ok, **report.to_dict()}
        summary.lost = len(report.lost)
    else:
        summary.durability = {"ok": False, "error": "no reads after the restart"}
    if "after_heal" in finals:
        report = check_durability(ops, finals["after_heal"])
        summary.durability_after_heal = {"ok": report.ok, **report.to_dict()}
    result = check(ops, budget, workers=workers)
    summary.set_check(result)
    return result


def judge_watch(
    records: list[WatchRecord],
    ops: list[Op],
    lease_events: list[LeaseEvent],
    complete: bool,
    stream_errors: list[str],
    reconnects: int,
) -> dict[str, Any]:
    """The watch checker's verdict as the summary keeps it."""
    report = check_watch(records, ops, lease_events, complete=complete, stream_errors=stream_errors)
    return {**report.to_dict(), "reconnects": reconnects}


def finals_from_history(ops: list[Op], final_processes: dict[str, int]) -> dict[str, dict[bytes, Observed]]:
    """The final reads of a saved run: the last ok read of each key by each final-read process."""
    finals: dict[str, dict[bytes, Observed]] = {}
    for label, process in final_processes.items():
        seen: dict[bytes, Observed] = {}
        for op in ops:
            if op.process == process and op.type == "ok" and op.f == "read":
                seen[op.key] = Observed(op.value, op.version or 0)
        finals[label] = seen
    return finals


def violation_histories(result: Result) -> dict[str, list[Op]]:
    """The smallest failing sub-history of each violating key, as records that replay."""
    out: dict[str, list[Op]] = {}
    for key_result in result.violations:
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in show_bytes(key_result.key).strip("'"))
        out[name] = unpair(list(key_result.minimal))
    return out


def replay(out: Path, budget: float, workers: int = 1) -> Summary:
    """Re-judge a saved run (``history.jsonl`` + ``summary.json`` in ``out``) without a cluster."""
    from kvcluster.lincheck import load_history

    saved = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    summary = Summary(config=saved.get("config", {}), started_wall=saved.get("started_wall", 0.0))
    summary.faults = saved.get("faults", [])
    summary.problems = saved.get("problems", [])
    summary.load_seconds = saved.get("load_seconds", 0.0)
    summary.total_seconds = saved.get("total_seconds", 0.0)
    summary.cluster = saved.get("cluster", {})
    ops = load_history(out / "history.jsonl")
    judge_ops(
        ops, {k: int(v) for k, v in saved.get("final_processes", {}).items()}, None, summary, budget, workers
    )
    saved_watch = saved.get("watch") or {}
    if saved_watch and (out / "watch.jsonl").exists():
        leases_path = out / "leases.jsonl"
        summary.watch = judge_watch(
            [WatchRecord.from_json(line) for line in _lines(out / "watch.jsonl")],
            ops,
            [LeaseEvent.from_json(line) for line in _lines(leases_path)] if leases_path.exists() else [],
            bool(saved_watch.get("complete", True)),
            [str(e) for e in saved_watch.get("errors", [])],
            int(saved_watch.get("reconnects", 0)),
        )
    summary.decide()
    return summary


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _config_dict(cfg: Config) -> dict[str, Any]:
    body = asdict(cfg)
    body["out"] = str(cfg.out)
    body["nemeses"] = list(cfg.nemeses)
    return body


def _remove_tree(path: Path) -> None:
    """Remove a previous run's cluster directory, unmounting any volume left in it first."""
    with open("/proc/self/mounts", encoding="utf-8") as fp:
        mounts = [line.split()[1] for line in fp if len(line.split()) > 1]
    prefix = str(path.resolve())
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False, timeout=30)
    shutil.rmtree(path, ignore_errors=True)


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _log_since(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")
