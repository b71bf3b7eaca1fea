"""Carrying out a reshape: plan, take one step, look again, repeat.

The job (its target and progress) lives in the meta group, and the runner
lives wherever the meta group's leader is. If that node dies, the next meta
leader finds the job still ``running`` and carries on; nothing is remembered
outside the replicated state, and every step is re-planned from what the
cluster really looks like, so a step interrupted half-way is either found
done or done again.

Each step is guarded by the epoch it was planned at (membership, split,
freeze, merge), so two runners overlapping for a moment during a meta
leadership change cannot both act on the same picture: the second one's
step is refused and it re-plans.

Merges are the one two-phase step: the right partition is frozen, every one
of its replicas must have applied the freeze, then the left partition
absorbs it at a logged index. The job records the merge before proposing it;
a merge recorded as only frozen may be called off (unfreeze), one recorded as
proposed is always finished, because the left side may already hold it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from kvcluster.keyspace import META_PARTITION, PartitionDescriptor, PartitionMap
from kvcluster.placement import (
    AddLearner,
    Merge,
    Promote,
    Refusal,
    RemoveReplica,
    Split,
    Step,
    Target,
    TransferLeader,
    check_target,
    plan,
)

from .clusterstatus import ClusterStatus, collect_status
from .config import NodeConfig
from .errors import ApiError, BadRequest, Conflict, RoutingSignal, StaleEpochSignal, Unavailable
from .host import RaftHost
from .operations import Operation
from .router import Router

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 300.0
MAX_STEP_ATTEMPTS = 40


class StepFailed(Exception):
    """A step could not be carried out now; the runner re-plans and tries again."""


class Reshaper:
    def __init__(self, cfg: NodeConfig, host: RaftHost, router: Router, local_status: Any) -> None:
        self.cfg = cfg
        self.host = host
        self.router = router
        self.local_status = local_status
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self.balance_interval_s = cfg.balance_interval_s
        self._next_balance = time.monotonic() + self.balance_interval_s
        self.step_log: list[dict[str, Any]] = []
        """Steps this node carried out, with durations (for the closing figures and debugging)."""

    # ---- the meta group -------------------------------------------------------------------------

    async def meta_state(self) -> dict[str, Any]:
        result = await self.router.execute_on(
            META_PARTITION, Operation("meta_read", partition=META_PARTITION)
        )
        state: dict[str, Any] | None = result.get("state")
        if state is None:
            raise Unavailable("the meta group holds no state yet")
        return state

    async def meta(self, body: dict[str, Any]) -> dict[str, Any]:
        result = await self.router.execute_on(
            META_PARTITION, Operation("meta", partition=META_PARTITION, args=body)
        )
        answer: dict[str, Any] = result["answer"]
        return answer

    async def report(self, descriptors: list[PartitionDescriptor]) -> None:
        if descriptors:
            for d in descriptors:
                self.router.learn(d)
            await self.meta({"op": "report", "descriptors": [d.to_dict() for d in descriptors]})

    async def status(self, nodes: list[int] | None = None) -> ClusterStatus:
        ids = nodes if nodes is not None else sorted(self.router.pmap.nodes)
        return await collect_status(self.router.rpc, ids, self.cfg.node_id, self.local_status)

    # ---- jobs -----------------------------------------------------------------------------------------

    async def submit(self, nodes: list[int], partitions: int, replicas: int) -> dict[str, Any]:
        """Validate a target against the current map and record it as the running job."""
        state = await self.meta_state()
        pmap = PartitionMap.from_dict(state["map"])
        unknown = sorted(set(nodes) - set(pmap.nodes))
        if unknown:
            # Not impossible, only early: the node may still be starting. A 409 tells callers to retry.
            err = Conflict(f"nodes {unknown} have not joined the cluster yet (known: {sorted(pmap.nodes)})")
            err.code = "nodes_not_joined"
            raise err
        target = Target.of(nodes, partitions, replicas)
        try:
            check_target(pmap, target)
        except Refusal as exc:
            raise BadRequest(f"impossible target: {exc.reason}") from None
        job = {
            "id": uuid.uuid4().hex[:12],
            "state": "running",
            "target": {"nodes": sorted(nodes), "partitions": partitions, "replicas": replicas},
            "steps_done": 0,
            "steps_total": None,
            "current": None,
            "error": None,
            "started": time.time(),
            "finished": None,
            "merge": None,
        }
        answer = await self.meta({"op": "set_job", "job": job, "replace": True})
        if not answer.get("ok"):
            raise Conflict(str(answer.get("error")))
        self.wake()
        return job

    async def job(self) -> dict[str, Any] | None:
        job: dict[str, Any] | None = (await self.meta_state()).get("job")
        return job

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="reshaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def wake(self) -> None:
        self._wakeup.set()

    def _leads_meta(self) -> bool:
        r = self.host.replicas.get(META_PARTITION)
        return r is not None and r.is_leader

    async def _watch(self) -> None:
        """Run the job whenever this node leads the meta group and a job is running."""
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self._wakeup.clear()
            if not self._leads_meta():
                continue
            state = self.host.meta_state() or {}
            job = state.get("job")
            try:
                if job and job.get("state") == "running":
                    await self._run(job["id"])
                elif self.balance_interval_s > 0 and time.monotonic() >= self._next_balance:
                    self._next_balance = time.monotonic() + self.balance_interval_s
                    await self.balance_leaders(state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reshape runner paused: %r", exc)

    async def balance_leaders(self, state: dict[str, Any]) -> int:
        """Spread leaderships again when the cluster is otherwise at rest; returns transfers made.

        Restarts and failovers leave leaderships piled on the nodes that stayed
        up; a leader does all the work of its partition, so an uneven spread
        is an uneven load. Only leadership moves here (cheap, no data copied);
        replicas move only in a reshape someone asked for. Nothing happens
        while any node is unreachable: a transfer to it would just time out.
        """
        pmap = PartitionMap.from_dict(state["map"])
        members = sorted({n for d in pmap.partitions.values() for n in d.voters})
        if not members or not pmap.partitions:
            return 0
        status = await self.status(sorted(pmap.nodes))
        if any(n in status.errors for n in members):
            return 0
        replicas = max(len(d.voters) for d in pmap.partitions.values())
        try:
            steps = plan(pmap, status.leaders(), Target.of(members, len(pmap.partitions), replicas))
        except Refusal:
            return 0
        if not steps or not all(isinstance(step, TransferLeader) for step in steps):
            return 0  # the layout itself is off target: that is a reshape's business, not ours
        done = 0
        for step in steps:
            try:
                await self.execute(step, pmap, status)
                done += 1
            except (StepFailed, RoutingSignal, ApiError) as exc:
                log.info("leader balancing stopped at %s: %s", step, exc)
                break
        if done:
            log.info("rebalanced %d leaderships", done)
        return done

    async def _update(self, job_id: str, **fields: Any) -> None:
        await self.meta({"op": "update_job", "id": job_id, "fields": fields})

    async def _run(self, job_id: str) -> None:
        attempts = 0
        while self._leads_meta():
            state = await self.meta_state()
            job = state.get("job")
            if not job or job.get("id") != job_id or job.get("state") != "running":
                return
            pmap = PartitionMap.from_dict(state["map"])
            status = await self.status(sorted(pmap.nodes))
            probe = PartitionMap.from_dict(pmap.to_dict())
            fresher = [d for d in status.freshest_descriptors() if probe.update(d)]
            if fresher:
                await self.report(fresher)  # plan on the truth, not on a map that lags it
                continue
            try:
                if job.get("merge"):
                    await self._finish_merge(job_id, job["merge"], pmap, status)
                    continue
                leftover = status.frozen() & set(pmap.partitions)
                if leftover:
                    for pid in sorted(leftover):
                        await self._unfreeze(pid, pmap.partitions[pid])
                    continue
                t = job["target"]
                target = Target.of(t["nodes"], int(t["partitions"]), int(t["replicas"]))
                try:
                    steps = plan(pmap, status.leaders(), target)
                except Refusal as exc:
                    await self._update(job_id, state="failed", error=exc.reason, finished=time.time())
                    return
                if not steps:
                    await self._update(job_id, state="done", current=None, finished=time.time())
                    log.info("reshape %s done after %d steps", job_id, job["steps_done"])
                    return
                step = steps.first
                assert step is not None
                needed = _needs_alive(step)
                if needed is not None and needed in status.errors:
                    # Copying to, or handing leadership to, a node that is down cannot work; wait
                    # for it without using up the step's attempts (its removal would need no wait).
                    await self._update(
                        job_id, current=str(step), error=f"waiting for node {needed}, which is unreachable"
                    )
                    await asyncio.sleep(2.0)
                    continue
                await self._update(
                    job_id, current=str(step), steps_total=int(job["steps_done"]) + len(steps), error=None
                )
                started = time.monotonic()
                await self.execute(step, pmap, status, job_id=job_id)
                attempts = 0
                took = round(time.monotonic() - started, 3)
                await self._update(
                    job_id,
                    steps_done=int(job["steps_done"]) + 1,
                    last_step=str(step),
                    # Kinds, not every step: the record stays small however long the job runs.
                    step_seconds=_add_timing(job.get("step_seconds"), step.kind, took),
                )
            except (StepFailed, RoutingSignal, ApiError) as exc:
                attempts += 1
                log.info("reshape step did not complete (attempt %d): %s", attempts, exc)
                if attempts >= MAX_STEP_ATTEMPTS:
                    await self._update(
                        job_id, state="failed", error=f"step kept failing: {exc}", finished=time.time()
                    )
                    return
                await self._update(job_id, error=f"retrying: {exc}")
                await asyncio.sleep(min(0.2 * attempts, 3.0))

    # ---- steps ---------------------------------------------------------------------------------------

    async def execute(
        self, step: Step, pmap: PartitionMap, status: ClusterStatus, job_id: str | None = None
    ) -> list[PartitionDescriptor]:
        started = time.monotonic()
        if isinstance(step, AddLearner):
            descs = [await self._conf(step.partition, "add_learner", step.node)]
            await self._await_caught_up(step.partition, step.node)
        elif isinstance(step, Promote):
            await self._await_caught_up(step.partition, step.node)
            descs = [await self._conf(step.partition, "add_voter", step.node)]
        elif isinstance(step, RemoveReplica):
            prog = await self._admin(step.partition, {"action": "progress"})
            if prog["leader"] == step.node:
                voters = PartitionDescriptor.from_dict(prog["descriptor"]).voters
                others = [(int(prog["match"].get(str(n), 0)), n) for n in voters if n != step.node]
                if not others:
                    raise StepFailed(f"cannot remove the only voter of partition {step.partition}")
                await self._transfer(step.partition, max(others)[1])
            descs = [await self._conf(step.partition, "remove", step.node)]
        elif isinstance(step, TransferLeader):
            await self._transfer(step.partition, step.node)
            descs = []
        elif isinstance(step, Split):
            descs = await self._split(step)
        elif isinstance(step, Merge):
            descs = await self._merge(step, job_id, status)
        else:
            raise StepFailed(f"unknown step {step!r}")
        await self.report(descs)
        self.step_log.append({"step": str(step), "seconds": round(time.monotonic() - started, 3)})
        return descs

    async def _admin(self, partition: int, args: dict[str, Any]) -> dict[str, Any]:
        return await self.router.execute_on(partition, Operation("admin", partition=partition, args=args))

    async def _conf(self, partition: int, kind: str, node: int) -> PartitionDescriptor:
        prog = await self._admin(partition, {"action": "progress"})
        epoch = PartitionDescriptor.from_dict(prog["descriptor"]).epoch
        result = await self._admin(partition, {"action": "conf", "kind": kind, "node": node, "epoch": epoch})
        return PartitionDescriptor.from_dict(result["descriptor"])

    async def _transfer(self, partition: int, node: int) -> None:
        result = await self._admin(partition, {"action": "transfer", "node": node})
        if result["leader"] != node:
            raise StepFailed(f"leadership of partition {partition} did not move to node {node}")

    async def _await_caught_up(self, partition: int, node: int) -> None:
        """A learner is promoted only once it holds what the group had committed when we asked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_TIMEOUT_S
        goal: int | None = None
        while loop.time() < deadline:
            prog = await self._admin(partition, {"action": "progress"})
            if goal is None:
                goal = int(prog["commit"])
            if int(prog["match"].get(str(node), 0)) >= goal:
                return
            await asyncio.sleep(0.1)
        raise StepFailed(f"node {node} did not catch up on partition {partition} in {CATCH_UP_TIMEOUT_S}s")

    async def _split(self, step: Split) -> list[PartitionDescriptor]:
        await self.meta({"op": "reserve_id", "id": step.new_id})
        prog = await self._admin(step.partition, {"action": "progress"})
        epoch = PartitionDescriptor.from_dict(prog["descriptor"]).epoch
        result = await self._admin(step.partition, {"action": "split", "new_id": step.new_id, "epoch": epoch})
        body = result["body"]
        return [PartitionDescriptor.from_dict(body["left"]), PartitionDescriptor.from_dict(body["right"])]

    async def _merge(
        self, step: Merge, job_id: str | None, status: ClusterStatus
    ) -> list[PartitionDescriptor]:
        left = PartitionDescriptor.from_dict(
            (await self._admin(step.left, {"action": "progress"}))["descriptor"]
        )
        right = PartitionDescriptor.from_dict(
            (await self._admin(step.right, {"action": "progress"}))["descriptor"]
        )
        if set(left.replicas) != set(right.replicas) or left.range.end != right.range.start:
            raise StepFailed(f"partitions {step.left} and {step.right} are not ready to merge")
        unreachable = sorted(n for n in right.replicas if n in status.errors)
        if unreachable:
            raise StepFailed(f"nodes {unreachable} must be up to merge partition {step.right}")
        frozen = await self._admin(step.right, {"action": "freeze", "epoch": right.epoch})
        record = {
            "left": step.left,
            "right": step.right,
            "left_epoch": left.epoch,
            "right_epoch": right.epoch,
            "right_index": int(frozen["body"]["index"]),
            "state": "frozen",
        }
        if job_id is not None:
            await self._update(job_id, merge=record)
        return await self._complete_merge(job_id, record)

    async def _complete_merge(self, job_id: str | None, record: dict[str, Any]) -> list[PartitionDescriptor]:
        right_desc = PartitionDescriptor.from_dict(
            (await self._admin(record["right"], {"action": "progress"}))["descriptor"]
        )
        await self._await_frozen_everywhere(right_desc, int(record["right_index"]))
        record = {**record, "state": "proposed"}
        if job_id is not None:
            await self._update(job_id, merge=record)
        return await self._propose_merge(job_id, record)

    async def _propose_merge(self, job_id: str | None, record: dict[str, Any]) -> list[PartitionDescriptor]:
        try:
            result = await self._admin(
                record["left"],
                {
                    "action": "merge",
                    "right": record["right"],
                    "right_epoch": record["right_epoch"],
                    "right_index": record["right_index"],
                    "epoch": record["left_epoch"],
                },
            )
            merged = PartitionDescriptor.from_dict(result["body"]["merged"])
        except StaleEpochSignal as s:
            # Applied before (a retry after a crash): the left side already covers the right.
            merged = s.descriptor
        if job_id is not None:
            await self._update(job_id, merge=None)
        return [merged]

    async def _await_frozen_everywhere(self, right: PartitionDescriptor, index: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30.0
        pending = set(right.replicas)
        while pending and loop.time() < deadline:
            for node in sorted(pending):
                try:
                    st = await self.router.call_node(
                        node, Operation("admin", partition=right.id, args={"action": "replica_state"}), 2.0
                    )
                except (RoutingSignal, ApiError, OSError, Exception) as exc:
                    log.debug("replica state of %d on node %d: %s", right.id, node, exc)
                    continue
                if st["frozen"] and int(st["applied"]) >= index:
                    pending.discard(node)
            if pending:
                await asyncio.sleep(0.1)
        if pending:
            raise StepFailed(
                f"replicas of partition {right.id} on nodes {sorted(pending)} did not apply the freeze"
            )

    async def _finish_merge(
        self, job_id: str, record: dict[str, Any], pmap: PartitionMap, status: ClusterStatus
    ) -> None:
        if record["state"] == "proposed":
            await self.report(await self._propose_merge(job_id, record))
            return
        try:
            await self.report(await self._complete_merge(job_id, record))
        except StepFailed:
            right = pmap.partitions.get(int(record["right"]))
            if right is not None:
                await self._unfreeze(right.id, right)
            await self._update(job_id, merge=None)
            raise

    async def _unfreeze(self, partition: int, desc: PartitionDescriptor) -> None:
        prog = await self._admin(partition, {"action": "progress"})
        current = PartitionDescriptor.from_dict(prog["descriptor"])
        if not prog["frozen"]:
            return
        result = await self._admin(partition, {"action": "unfreeze", "epoch": current.epoch})
        if result.get("descriptor"):
            await self.report([PartitionDescriptor.from_dict(result["descriptor"])])
        log.info("unfroze partition %d (epoch %d): its merge was called off", partition, current.epoch)


def _add_timing(timings: Any, kind: str, seconds: float) -> dict[str, list[float]]:
    """Per step kind: [count, total seconds, longest] -- how long moves, splits, merges take."""
    out: dict[str, list[float]] = dict(timings or {})
    count, total, longest = out.get(kind, [0, 0.0, 0.0])
    out[kind] = [count + 1, round(total + seconds, 3), max(longest, seconds)]
    return out


def _needs_alive(step: Step) -> int | None:
    """The node a step cannot do without (it receives data or leadership), if any."""
    if isinstance(step, AddLearner | Promote | TransferLeader):
        return step.node
    return None
