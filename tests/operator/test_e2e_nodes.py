"""The operator end to end with real node processes, under client load.

The emulated API server, the test-side StatefulSet controller, the real
operator (kopf and every handler, in its own thread) and, behind every pod,
a real ``kvcluster node`` process (``node_pods.NodePods``: the kubelet's
part). Clients write and read through the real client the whole time, and
after every step the test checks, against the nodes themselves, that the
cluster has the shape the spec asks for, that it is balanced, and that
every acknowledged write is still there.

One test walks the whole life of a cluster, because each step starts from
the state the previous one left (the point is that the steps compose):

create 3 nodes/4 partitions/3 replicas -> scale up to 5 -> partitions 4 -> 8
-> replicas 3 -> 5 (the operator is stopped in the middle and a new
instance resumes from the status) -> replicas 5 -> 3 -> scale down to 3
(drained before the pods go) -> a pod deleted and recreated on its claim -> a rolling upgrade to a new image
(one pod at a time, each back and caught up before the next)
-> the history checked for linearizability -> delete.

Each step is timed; the table (with acknowledged writes, client errors,
Warning events and node restarts per step) is printed at the end, and on
failure up to the failing step. Transient Warning events are reported, not
failed on: what must hold is checked once each step has settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import NAMESPACE, get_cluster
from k8s_emulator import K8sEmulator
from kv_load import KVLoad
from node_pods import NodePods, NodeProcess
from operator_harness import OperatorThread
from sts_controller import StatefulSetController

from kvcluster.client import AsyncClient
from kvcluster.keyspace import PartitionMap, meta_replica_count
from kvcluster.lincheck import check
from kvcluster.placement.balance import floor_ceil, map_leader_counts, map_replica_counts
from kvoperator.controller import OperatorConfig
from kvoperator.kube import EVENTS, KVCLUSTERS, PODS, PVCS, STATEFULSETS, KubeClient
from kvoperator.resources import ADMIN_URL_ANNOTATION

pytestmark = [pytest.mark.slow, pytest.mark.timeout(380)]

KNOWN_NODE_BUGS: dict[str, str] = {}
"""Crash signatures of node bugs the test tolerates: none (the duplicate-snapshot crash is fixed)."""
"""Node crashes with a known cause (reported, outside this test's code to fix): the kubelet
restarts the container, and the test still requires that nothing acknowledged is lost. Any
other crash fails the test. Remove an entry once its bug is fixed."""

T = TypeVar("T")
NAME = "demo"
STEP_TIMEOUT = 90.0
"""Bound on any one step reaching Running; a step takes a few seconds on a 2-core machine."""


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
async def node_pods(k8s: K8sEmulator, kube: KubeClient, tmp_path: Path) -> AsyncIterator[NodePods]:
    pods = NodePods(kube, NAMESPACE, tmp_path / "nodes", wait_changed=k8s.wait_changed, statefulset=NAME)
    try:
        async with pods:
            yield pods
    finally:
        pods.kill_all()  # whatever close() could not stop, even if the loop is in trouble
    assert not pods.errors, pods.errors


@pytest.fixture
async def kubelet(
    k8s: K8sEmulator, kube: KubeClient, node_pods: NodePods
) -> AsyncIterator[StatefulSetController]:
    async with StatefulSetController(
        kube,
        NAMESPACE,
        wait_changed=k8s.wait_changed,
        on_pods_changed=node_pods.pods_changed,
        readiness=node_pods.ready,
    ) as ctl:
        yield ctl
    assert not ctl.errors, ctl.errors


@pytest.fixture
def make_operator(k8s: K8sEmulator) -> Callable[[str], OperatorThread]:
    config = OperatorConfig(default_image="kvcluster:test", poll_interval=0.5, retry_delay=0.5)

    def make(identity: str) -> OperatorThread:
        return OperatorThread(str(k8s.url).rstrip("/"), config, namespace=NAMESPACE, identity=identity)

    return make


# --- timing and reporting -----------------------------------------------------------


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    outcome: str = "running"
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The timing table the lead quotes: one row per scenario."""

    load: KVLoad | None = None
    steps: list[Step] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[Step]:
        step = Step(name)
        self.steps.append(step)
        before = Counter(self.load.outcomes) if self.load else Counter()
        started = time.monotonic()
        try:
            yield step
        except BaseException as exc:
            step.outcome = f"FAILED ({type(exc).__name__})"
            raise
        else:
            step.outcome = "passed"
        finally:
            step.seconds = time.monotonic() - started
            if self.load is not None:
                delta = Counter(self.load.outcomes)
                delta.subtract(before)
                ok = sum(n for k, n in delta.items() if k.startswith(("write ok", "cas ok")))
                failed = {k: n for k, n in delta.items() if n and " ok" not in k and "conflict" not in k}
                step.notes.append(f"{ok} writes acked" + (f", errors {failed}" if failed else ", no errors"))

    def lines(self) -> list[str]:
        out = ["end-to-end with real nodes:"]
        for s in self.steps:
            out.append(f"  {s.name:<66} {s.seconds:6.1f}s  {s.outcome}")
            out.extend(f"      {note}" for note in s.notes)
        out.append(f"  {'total':<66} {sum(s.seconds for s in self.steps):6.1f}s")
        return out


@pytest.fixture
def report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Report]:
    """The timing table, printed to the terminal even under ``-q`` and captured output."""
    rep = Report()
    yield rep
    lines = rep.lines()
    request.node.user_properties.append(("scenarios", "\n".join(lines)))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# --- waiting and checking ------------------------------------------------------------


async def wait_until(
    check_fn: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    what: str,
    k8s: K8sEmulator | None = None,
) -> T:
    """Poll until ``check_fn`` returns something truthy; bounded by ``timeout``.

    With ``k8s`` it wakes on every API write (conditions on objects);
    without, it polls every quarter second (conditions on the nodes, which
    the API server's change feed does not see).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: T | None = None
    while True:
        last = await check_fn()
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        if k8s is not None:
            await k8s.wait_changed(0.25)
        else:
            await asyncio.sleep(0.25)


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body.get("status", {}).get("conditions", [])}


async def running(
    kube: KubeClient, k8s: K8sEmulator, nodes: int, partitions: int, replicas: int
) -> dict[str, Any]:
    """The KVCluster reports Running with exactly this layout applied, for the latest generation."""
    layout = {"nodes": nodes, "partitions": partitions, "replicas": replicas}

    async def check_fn() -> dict[str, Any] | None:
        body = await get_cluster(kube, NAME)
        status = (body or {}).get("status", {})
        ok = (
            body is not None
            and status.get("phase") == "Running"
            and not status.get("reshape")
            and status.get("applied") == layout
            and status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("readyNodes") == nodes
        )
        return body if ok else None

    return await wait_until(check_fn, k8s=k8s, timeout=STEP_TIMEOUT, what=f"Running with {layout}")


async def admin_map(client: AsyncClient) -> tuple[PartitionMap, dict[int, int | None]]:
    raw = await client.admin_map()
    leaders = {int(p): (int(n) if n is not None else None) for p, n in (raw.get("leaders") or {}).items()}
    return PartitionMap.from_dict(raw), leaders


def layout_problems(
    pmap: PartitionMap,
    leaders: dict[int, int | None],
    nodes: int,
    partitions: int,
    replicas: int,
    *,
    leaders_balanced: bool = True,
) -> list[str]:
    """How the nodes' own map differs from the spec; empty when it matches and is balanced.

    Leaders are balanced by a reshape job's last steps; a freshly created
    cluster has whatever its first elections gave, so there they are not required.
    """
    ids = set(range(1, nodes + 1))
    problems: list[str] = []
    if len(pmap.partitions) != partitions:
        problems.append(f"{len(pmap.partitions)} partitions, spec says {partitions}")
    if not pmap.covers_space():
        problems.append("the partitions do not cover the key space")
    for d in pmap.partitions.values():
        if len(d.voters) != replicas or d.learners or not set(d.voters) <= ids:
            problems.append(f"partition {d.id}: voters {d.voters} learners {d.learners}")
    if set(pmap.nodes) != ids:
        problems.append(f"member nodes {sorted(pmap.nodes)}, spec says {sorted(ids)}")
    if (
        pmap.meta is None
        or len(pmap.meta.voters) != meta_replica_count(nodes, replicas)
        or not set(pmap.meta.voters) <= ids
    ):
        problems.append(f"meta group {pmap.meta}")
    lo, hi = floor_ceil(partitions * replicas, nodes)
    counts = map_replica_counts(pmap, ids)
    if not all(lo <= counts.get(n, 0) <= hi for n in ids) or set(counts) != ids:
        problems.append(f"replicas per node {counts} outside [{lo}, {hi}]")
    lo, hi = floor_ceil(partitions, nodes)
    led = map_leader_counts(pmap, leaders, ids)
    if leaders_balanced and (not all(lo <= led.get(n, 0) <= hi for n in ids) or set(led) != ids):
        problems.append(f"leaders per node {led} outside [{lo}, {hi}]")
    return problems


@dataclass
class Cluster:
    """What the steps share: the API, the pods, the load, and the checks after each step."""

    k8s: K8sEmulator
    kube: KubeClient
    pods: NodePods
    kubelet: StatefulSetController
    load: KVLoad
    client: AsyncClient
    seen_warnings: int = 0
    seen_crashes: int = 0

    async def patch_spec(self, **spec: Any) -> None:
        await self.kube.patch(KVCLUSTERS.path(NAMESPACE, NAME), {"spec": spec})

    async def settled(
        self, step: Step, nodes: int, partitions: int, replicas: int, *, leaders_balanced: bool = True
    ) -> dict[str, Any]:
        """Everything that must hold once a step is done; returns the KVCluster."""
        body = await running(self.kube, self.k8s, nodes, partitions, replicas)
        status = body["status"]
        conds = conditions(body)
        assert {t: c["status"] for t, c in conds.items()} == {
            "Ready": "True",
            "Progressing": "False",
            "Degraded": "False",
        }, conds
        assert conds["Ready"]["reason"] == "ClusterReady"
        assert status["currentNodes"] == nodes and status["readyNodes"] == nodes
        assert status["partitions"]["total"] == partitions and status["partitions"]["leaderless"] == 0
        sts = await self.kube.get(STATEFULSETS.path(NAMESPACE, NAME))
        assert sts is not None and sts["spec"]["replicas"] == nodes

        # The processes are exactly the pods, and the nodes' own map is the spec, balanced.
        assert sorted(self.pods.procs) == [f"{NAME}-{i}" for i in range(nodes)]
        assert all(p.alive() for p in self.pods.procs.values()), [str(c) for c in self.pods.crashes]

        async def balanced() -> list[str] | None:
            pmap, leaders = await admin_map(self.client)
            problems = layout_problems(
                pmap, leaders, nodes, partitions, replicas, leaders_balanced=leaders_balanced
            )
            last[0] = problems
            led[0] = map_leader_counts(pmap, leaders, range(1, nodes + 1))
            return None if problems else ["ok"]

        last: list[list[str]] = [[]]
        led: list[dict[int, int]] = [{}]
        try:
            await wait_until(balanced, timeout=30, what="the admin map to match the spec")
        except AssertionError:
            raise AssertionError(f"admin map vs spec: {last[0]}") from None
        step.notes.append(f"leaders per node {led[0]}")

        verification = await self.load.verify()
        assert verification.ok, f"lost: {verification.missing[:10]}, stale: {verification.stale[:10]}"
        step.notes.append(f"{verification.keys} acknowledged keys read back")
        assert not self.pods.violations, self.pods.violations
        await self.note_news(step)
        return body

    async def note_news(self, step: Step) -> None:
        """Warning events and node crashes since the last call go into the step's notes.

        A crash fails the test unless its cause is a known, reported node bug.
        """
        warnings = [
            f"{e['reason']}: {e.get('message')}"
            for e in sorted(await self.kube.list(EVENTS.path(NAMESPACE)), key=_event_order)
            if e.get("type") == "Warning"
        ]
        step.notes.extend(f"warning event {w}" for w in warnings[self.seen_warnings :])
        self.seen_warnings = len(warnings)
        for crash in self.pods.crashes[self.seen_crashes :]:
            known = next((bug for sig, bug in KNOWN_NODE_BUGS.items() if sig in crash.tail), None)
            assert known is not None, f"node crash: {crash}\n{crash.tail}"
            step.notes.append(
                f"KNOWN NODE BUG, container restarted: {crash.pod} exit {crash.exit_code}: {known}"
            )
        self.seen_crashes = len(self.pods.crashes)


# --- the test ---------------------------------------------------------------------------


async def test_cluster_lifecycle_with_real_nodes(
    k8s: K8sEmulator,
    kube: KubeClient,
    node_pods: NodePods,
    kubelet: StatefulSetController,
    make_operator: Callable[[str], OperatorThread],
    report: Report,
) -> None:
    operator = await make_operator("first").start()
    load: KVLoad | None = None
    client: AsyncClient | None = None
    try:
        # -- create ---------------------------------------------------------------
        async with report.step("create: 3 nodes, 4 partitions, 3 replicas") as step:
            await kube.create(
                KVCLUSTERS.path(NAMESPACE),
                {
                    "apiVersion": "kvcluster.io/v1alpha1",
                    "kind": "KVCluster",
                    "metadata": {
                        "name": NAME,
                        "namespace": NAMESPACE,
                        # The client Service does not exist here: the admin API is node 1's.
                        "annotations": {ADMIN_URL_ANNOTATION: node_pods.url(f"{NAME}-0")},
                    },
                    "spec": {"nodes": 3, "partitions": 4, "replicas": 3, "terminationGracePeriodSeconds": 10},
                },
            )
            await running(kube, k8s, 3, 4, 3)
            assert sorted(p.env["KVCLUSTER_CLUSTER_STATE"] for p in kubelet.pods.values()) == ["new"] * 3
            token = next(iter(node_pods.procs.values())).cmd.token
            assert token, "the operator's Secret gave the nodes a token"
            load = KVLoad(node_pods.urls()[:5], token)
            report.load = load
            load.start()
            client = AsyncClient(node_pods.urls()[:5], token=token, timeout=20)
            cluster = Cluster(k8s, kube, node_pods, kubelet, load, client)
            await wait_until(
                lambda: _at_least(load, 20), timeout=30, what="the load to get its first writes acknowledged"
            )
            await cluster.settled(step, 3, 4, 3, leaders_balanced=False)

        # -- scale up -------------------------------------------------------------
        async with report.step("scale up 3 -> 5 nodes") as step:
            await cluster.patch_spec(nodes=5)
            await cluster.settled(step, 5, 4, 3)
            new = [kubelet.pods[f"{NAME}-{i}"] for i in (3, 4)]
            assert [p.env["KVCLUSTER_CLUSTER_STATE"] for p in new] == ["existing", "existing"]
            pmap, _ = await admin_map(client)
            assert {4, 5} <= {n for d in pmap.partitions.values() for n in d.voters}, "no data moved to 4, 5"

        # -- partitions -------------------------------------------------------------
        async with report.step("partitions 4 -> 8") as step:
            await cluster.patch_spec(partitions=8)
            await cluster.settled(step, 5, 8, 3)

        # -- replicas up, with the operator stopped mid-way -------------------------------
        async with report.step("replicas 3 -> 5, operator stopped mid-reshape, new one resumes") as step:
            await cluster.patch_spec(replicas=5)

            async def job_recorded() -> dict[str, Any] | None:
                body = await get_cluster(kube, NAME)
                reshape = (body or {}).get("status", {}).get("reshape") or {}
                return reshape if reshape.get("phase") == "Reshape" and reshape.get("job") else None

            reshape = await wait_until(job_recorded, k8s=k8s, timeout=STEP_TIMEOUT, what="a reshape job")
            body = await get_cluster(kube, NAME)
            assert body is not None
            conds = conditions(body)
            assert body["status"]["phase"] == "Reshaping"
            assert conds["Progressing"]["status"] == "True" and conds["Progressing"]["reason"] == "Reshaping"
            assert conds["Degraded"]["status"] == "False"
            await operator.stop()
            job = await client.reshape_status()
            step.notes.append(
                f"operator stopped with the job {job.get('state')} at step"
                f" {job.get('steps_done')}/{job.get('steps_total')}"
            )
            operator = await make_operator("second").start()
            await cluster.settled(step, 5, 8, 5)
            job = await client.reshape_status()
            assert job.get("id") == reshape["job"], "the new operator started a job of its own"
            assert operator.operator.passes > 0

        # -- replicas down ------------------------------------------------------------------
        async with report.step("replicas 5 -> 3") as step:
            await cluster.patch_spec(replicas=3)
            await cluster.settled(step, 5, 8, 3)

        # -- scale down ---------------------------------------------------------------------
        async with report.step("scale down 5 -> 3 nodes (drain, then shrink)") as step:
            await cluster.patch_spec(nodes=3)
            await cluster.settled(step, 3, 8, 3)
            gone = {r.pod: r for r in node_pods.removals}
            assert sorted(gone) == [f"{NAME}-3", f"{NAME}-4"]
            for removal in gone.values():
                assert removal.scaled_down and removal.admin_view is not None
                assert removal.admin_view["drained"] is True and removal.admin_view["replicas"] == 0
                assert removal.exit_code == 0, f"{removal.pod} exited with {removal.exit_code}"
                assert removal.data_released  # whenScaled: Delete took the claim
            step.notes.append("nodes 4 and 5 held nothing when their pods went; exit 0")

        # -- a pod replaced ------------------------------------------------------------------
        async with report.step("pod demo-1 deleted: recreated on its claim, rejoins with its data") as step:
            old = node_pods.procs[f"{NAME}-1"]
            await kube.delete(PODS.path(NAMESPACE, f"{NAME}-1"))

            async def replaced() -> NodeProcess | None:
                new = node_pods.procs.get(f"{NAME}-1")
                return new if new is not None and new.pid != old.pid and new.probe.ready else None

            new = await wait_until(replaced, k8s=k8s, timeout=30, what="demo-1 running again and ready")
            assert new.cmd.uid != old.cmd.uid and new.cmd.data_dir == old.cmd.data_dir
            removal = node_pods.removals[-1]
            assert removal.pod == f"{NAME}-1" and not removal.scaled_down and not removal.data_released
            assert removal.exit_code == 0
            assert "bootstrapped" not in new.log_path.read_text()  # it found its data, did not start empty

            async def holds_its_replicas() -> dict[str, Any] | None:
                view = await client.admin_node(2)
                ok = (
                    view
                    and view["reachable"]
                    and view["replicas"]
                    and view["local_replicas"] == view["replicas"]
                )
                return view if ok else None

            view = await wait_until(holds_its_replicas, timeout=30, what="node 2 to host its replicas again")
            step.notes.append(f"node 2 back with its {view['replicas']} replicas")
            # It handed its leaderships over when it stopped; nothing moves them back
            # (only a reshape balances leaders), so balance is not required here.
            await cluster.settled(step, 3, 8, 3, leaders_balanced=False)

        # -- rolling upgrade ---------------------------------------------------------------------
        async with report.step("spec.image changed: rolling upgrade, one pod at a time") as step:
            before = len(node_pods.removals)
            await cluster.patch_spec(image="kvcluster:v2")

            async def completed() -> dict[str, Any] | None:
                body = await get_cluster(kube, NAME)
                upgrade = (body or {}).get("status", {}).get("upgrade") or {}
                return body if upgrade.get("phase") == "Completed" else None

            body = await wait_until(completed, k8s=k8s, timeout=STEP_TIMEOUT * 2, what="the roll to complete")
            assert body["status"]["upgrade"]["toImage"] == "kvcluster:v2"
            pods = await kube.list(PODS.path(NAMESPACE))
            assert {p["spec"]["containers"][0]["image"] for p in pods} == {"kvcluster:v2"}
            rolled = node_pods.removals[before:]
            # Every node restarted exactly once, highest ordinal first, cleanly, on its own data.
            assert [r.pod for r in rolled] == [f"{NAME}-{i}" for i in (2, 1, 0)], rolled
            assert all(r.exit_code == 0 and not r.scaled_down and not r.data_released for r in rolled)
            # One pod at a time: each one was started again before the next one was stopped.
            starts = [line for line in node_pods.log if " start " in line or " stop " in line]
            order = [line.split()[1] + " " + line.split()[2] for line in starts][-6:]
            assert order == [f"{verb} {NAME}-{i}" for i in (2, 1, 0) for verb in ("stop", "start")], order
            step.notes.append("3 pods replaced in order 2, 1, 0; each back before the next went")
            await cluster.settled(step, 3, 8, 3, leaders_balanced=False)

        # -- history ---------------------------------------------------------------------------
        async with report.step("load stopped; linearizability of the history") as step:
            await load.stop()
            verification = await load.verify()
            assert verification.ok, (verification.missing[:10], verification.stale[:10])
            result = check(load.history, time_budget_s=30)
            step.notes.append(
                f"{load.acknowledged_writes} writes acked in all, {len(load.history)} records,"
                f" {result.operations} operations: {result.verdict}"
            )
            assert result.verdict == "ok", result.explain()
            await cluster.note_news(step)

        # -- delete ----------------------------------------------------------------------------
        async with report.step("delete the KVCluster") as step:
            await kube.delete(KVCLUSTERS.path(NAMESPACE, NAME))

            async def all_stopped() -> bool | None:
                return await get_cluster(kube, NAME) is None and not node_pods.procs

            await wait_until(all_stopped, k8s=k8s, timeout=60, what="the cluster and its processes gone")
            claims = sorted(c["metadata"]["name"] for c in await kube.list(PVCS.path(NAMESPACE)))
            assert claims == [f"data-{NAME}-{i}" for i in range(3)]  # whenDeleted: Retain
            assert all((node_pods.base_dir / "claims" / c / "kv.db").exists() for c in claims)
            assert all(r.exit_code == 0 for r in node_pods.removals), node_pods.removals
            step.notes.append("processes stopped, claims and data kept")
    finally:
        if client is not None:
            await client.close()
        if load is not None:
            await load.cancel()
        with contextlib.suppress(Exception):
            await operator.stop()
        print("\n".join(node_pods.log))


def _event_order(event: dict[str, Any]) -> tuple[str, int]:
    meta = event.get("metadata", {})
    return str(meta.get("creationTimestamp", "")), int(meta.get("resourceVersion") or 0)


async def _at_least(load: KVLoad, writes: int) -> bool | None:
    return load.acknowledged_writes >= writes
