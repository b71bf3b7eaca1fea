"""A fake of the nodes' admin API with an honest in-memory model of the data.

It holds a partition map (``kvcluster.keyspace``), knows which node processes
run (told by the StatefulSet controller's "pods changed" hook, with the
environment each pod got), bootstraps the way real nodes do (``new`` nodes
form the initial layout once all ``--peers`` run; ``existing`` nodes join
empty), moves replicas one step at a time in a background job, and records
every unsafe thing that happens to it: a node removed while it still holds
replicas, a reshape asked onto nodes that are not running. Tests assert that
``violations`` stays empty.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from sts_controller import PodInfo

from kvcluster.keyspace import KeyRange, NodeInfo, PartitionDescriptor, PartitionMap


@dataclass
class Job:
    id: str
    target: dict[str, Any]
    steps: list[tuple[str, Callable[[], None]]]
    state: str = "running"
    done: int = 0
    current: str | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "job": self.id,
            "state": self.state,
            "target": self.target,
            "steps_total": len(self.steps),
            "steps_done": self.done,
            "current": self.current,
            "error": self.error,
        }


@dataclass
class FakeNodes:
    """The cluster as the admin API sees it. ``log`` is a global sequence of what happened."""

    step_delay: float = 0.005
    pmap: PartitionMap | None = None
    running: dict[int, PodInfo] = field(default_factory=dict)
    job: Job | None = None
    violations: list[str] = field(default_factory=list)
    reshape_requests: list[dict[str, Any]] = field(default_factory=list)
    drain_requests: list[int] = field(default_factory=list)
    leaders: dict[int, int] = field(default_factory=dict)
    """Leaderships moved by ``POST /v1/admin/partitions/{id}/leader`` (partition -> node)."""
    lagging: set[int] = field(default_factory=set)
    """Nodes whose replicas report an applied index far behind the commit (a test sets it)."""
    log: list[str] = field(default_factory=list)
    reject_reason: str | None = None
    """When set, the next reshape is refused with 400 and this message."""
    fail_next_job: str | None = None
    """When set, the next job fails half-way with this error."""
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    """Jobs step only while set (tests clear it to freeze a reshape mid-way)."""
    finish_after_cluster_read: bool = False
    """When set, the next ``GET /v1/cluster`` answers, then the running job does all its steps
    at once: the job ends between that read and whatever the reader asks next."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _task: asyncio.Task[None] | None = None
    server: TestServer | None = None

    def __post_init__(self) -> None:
        self.gate.set()

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> FakeNodes:
        app = web.Application()
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/cluster", self._cluster)
        app.router.add_get("/v1/admin/map", self._map)
        app.router.add_get("/v1/admin/nodes/{id}", self._node)
        app.router.add_post("/v1/admin/nodes/{id}/drain", self._drain)
        app.router.add_post("/v1/admin/partitions/{id}/leader", self._transfer)
        app.router.add_post("/v1/admin/reshape", self._start_reshape)
        app.router.add_get("/v1/admin/reshape", self._reshape_status)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        assert self.server is not None
        await self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    # --- the pods-changed hook -------------------------------------------------

    async def pods_changed(self, statefulset: str, pods: list[PodInfo]) -> None:
        """What a node process does when its pod starts, and what is lost when it goes."""
        now = {p.node_id: p for p in pods}
        for gone in sorted(set(self.running) - set(now)):
            held = self._held(gone)
            if held:
                self.violations.append(f"node {gone} removed while holding {held} replicas")
            self.log.append(f"pod-removed {gone}")
            del self.running[gone]
            if self.pmap is not None and not held:
                self.pmap.nodes.pop(gone, None)
        for node_id in sorted(set(now) - set(self.running)):
            pod = now[node_id]
            self.running[node_id] = pod
            self.log.append(f"pod-started {node_id} {pod.env.get('KVCLUSTER_CLUSTER_STATE')}")
            if self.pmap is not None:
                if pod.env.get("KVCLUSTER_CLUSTER_STATE") == "new" and node_id not in self.pmap.nodes:
                    self.violations.append(f"node {node_id} started with cluster-state=new after bootstrap")
                self.pmap.nodes[node_id] = NodeInfo(node_id, f"node-{node_id}")
        self._maybe_bootstrap()

    def _maybe_bootstrap(self) -> None:
        if self.pmap is not None or not self.running:
            return
        pod = next(iter(self.running.values()))
        peers = dict(p.split("=", 1) for p in pod.env["KVCLUSTER_PEERS"].split(","))
        ids = {int(k) for k in peers}
        if not ids <= set(self.running):
            return
        self.pmap = PartitionMap.initial(
            {i: peers[str(i)] for i in ids},
            int(pod.env["KVCLUSTER_PARTITIONS"]),
            int(pod.env["KVCLUSTER_REPLICAS"]),
        )
        self.log.append(f"bootstrapped {sorted(ids)}")

    def ready(self, pod: PodInfo) -> bool:
        """A node's /readyz: its process runs and the cluster exists."""
        return pod.node_id in self.running and self.pmap is not None and pod.node_id in self.pmap.nodes

    def _held(self, node_id: int) -> int:
        if self.pmap is None:
            return 0
        return sum(node_id in d.voters for d in self.pmap.partitions.values())

    def _leader(self, desc: PartitionDescriptor) -> int | None:
        alive = [v for v in desc.voters if v in self.running]
        if len(alive) * 2 <= len(desc.voters):
            return None
        chosen = self.leaders.get(desc.id)
        return chosen if chosen in alive else alive[0]

    # --- HTTP --------------------------------------------------------------

    def _auth(self, request: web.Request) -> None:
        tokens = {p.files.get("token") for p in self.running.values()}
        if request.headers.get("Authorization") not in {f"Bearer {t}" for t in tokens if t}:
            raise web.HTTPUnauthorized(
                text='{"error": {"code": "unauthorized", "message": "bad token"}}',
                content_type="application/json",
            )

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.pmap is not None else 503)

    async def _cluster(self, request: web.Request) -> web.Response:
        if self.pmap is None:
            return self._error(503, "unavailable", "not bootstrapped")
        commit = 1000
        parts = [
            d.to_dict()
            | {
                "replicas": list(d.voters),
                "leader": self._leader(d),
                "term": 1,
                "commit": commit,
                "applied": {
                    str(v): commit - (500 if v in self.lagging else 0) for v in d.voters if v in self.running
                },
            }
            for d in self.pmap
        ]
        answer = web.json_response(
            {"nodes": [n.to_dict() for n in self.pmap.nodes.values()], "partitions": parts}
        )
        if self.finish_after_cluster_read and self.job is not None and self.job.state == "running":
            self.finish_after_cluster_read = False
            self._finish(self.job)
        return answer

    async def _transfer(self, request: web.Request) -> web.Response:
        self._auth(request)
        pid, node = int(request.match_info["id"]), int((await request.json())["node"])
        desc = self.pmap.partitions.get(pid) if self.pmap is not None else None
        if desc is None or node not in desc.voters or node not in self.running:
            return self._error(400, "bad_request", f"node {node} cannot lead partition {pid}")
        self.leaders[pid] = node
        self.log.append(f"transfer {pid} to {node}")
        return web.json_response({"leader": node})

    async def _map(self, request: web.Request) -> web.Response:
        self._auth(request)
        if self.pmap is None:
            return self._error(503, "unavailable", "not bootstrapped")
        return web.json_response(self.pmap.to_dict())

    async def _node(self, request: web.Request) -> web.Response:
        self._auth(request)
        node_id = int(request.match_info["id"])
        if self.pmap is None or node_id not in self.pmap.nodes:
            return self._error(404, "not_found", f"node {node_id} is not in the cluster")
        replicas = self._held(node_id)
        leaders = sum(self._leader(d) == node_id for d in self.pmap.partitions.values())
        return web.json_response(
            {
                "id": node_id,
                "url": f"node-{node_id}",
                "replicas": replicas,
                "leaders": leaders,
                "drained": replicas == 0 and leaders == 0,
            }
        )

    async def _drain(self, request: web.Request) -> web.Response:
        self._auth(request)
        node_id = int(request.match_info["id"])
        self.drain_requests.append(node_id)
        self.log.append(f"drain {node_id}")
        assert self.pmap is not None
        others = sorted(n for n in self.running if n != node_id)
        for desc in list(self.pmap.partitions.values()):
            if node_id in desc.voters:
                spare = [n for n in others if n not in desc.voters]
                voters = [v for v in desc.voters if v != node_id] + spare[:1]
                self.pmap.partitions[desc.id] = desc.with_members(voters)
        return web.json_response({"job": f"drain-{node_id}"}, status=202)

    async def _reshape_status(self, request: web.Request) -> web.Response:
        self._auth(request)
        if self.job is None:
            return web.json_response(
                {
                    "state": "idle",
                    "target": None,
                    "steps_total": 0,
                    "steps_done": 0,
                    "current": None,
                    "error": None,
                }
            )
        return web.json_response(self.job.view())

    async def _start_reshape(self, request: web.Request) -> web.Response:
        self._auth(request)
        body = await request.json()
        self.reshape_requests.append(body)
        self.log.append(f"reshape {body}")
        if self.job is not None and self.job.state == "running":
            return self._error(409, "conflict", "a reshape is running")
        nodes, partitions, replicas = sorted(body["nodes"]), int(body["partitions"]), int(body["replicas"])
        if self.reject_reason is not None:
            reason, self.reject_reason = self.reject_reason, None
            return self._error(400, "bad_request", reason)
        if not 1 <= replicas <= len(nodes) or partitions < 1:
            return self._error(400, "bad_request", "impossible layout")
        missing = [n for n in nodes if n not in self.running]
        if missing:
            self.violations.append(f"reshape onto nodes that do not run: {missing}")
            return self._error(400, "bad_request", f"nodes {missing} are not running")
        assert self.pmap is not None
        for n in nodes:
            self.pmap.nodes.setdefault(n, NodeInfo(n, f"node-{n}"))
        self.job = Job(
            id=f"job-{next(self._ids)}",
            target={"nodes": nodes, "partitions": partitions, "replicas": replicas},
            steps=self._plan(nodes, partitions, replicas),
        )
        self._task = asyncio.create_task(self._run(self.job))
        return web.json_response({"job": self.job.id}, status=202)

    # --- the reshape job -----------------------------------------------------

    def _plan(self, nodes: list[int], partitions: int, replicas: int) -> list[tuple[str, Callable[[], None]]]:
        """Steps as a real planner would order them: re-cut first, then add a voter before removing one."""
        assert self.pmap is not None
        pmap = self.pmap
        steps: list[tuple[str, Callable[[], None]]] = []
        if len(pmap.partitions) != partitions:

            def recut() -> None:
                old = list(pmap)
                pmap.partitions.clear()
                for i, rng in enumerate(KeyRange.slices(partitions)):
                    voters = old[i % len(old)].voters
                    new_id = pmap.allocate_id()
                    pmap.partitions[new_id] = PartitionDescriptor(new_id, rng, 1, voters)

            steps.append((f"re-cut into {partitions} partitions", recut))

        def membership() -> None:
            # Computed when it runs, after the re-cut: one add or remove per partition per step.
            for n, original in enumerate(list(pmap)):
                want = sorted(nodes[(n + j) % len(nodes)] for j in range(replicas))
                current = original
                voters = list(current.voters)
                for add in [w for w in want if w not in voters]:
                    voters.append(add)
                    current = current.with_members(voters)
                    pmap.partitions[current.id] = current
                for rem in [v for v in voters if v not in want]:
                    voters.remove(rem)
                    current = current.with_members(voters)
                    pmap.partitions[current.id] = current

        steps.append(("move replicas", membership))
        return steps

    def _finish(self, job: Job) -> None:
        """Do the job's remaining steps (none once its task has done them all) and mark it done.

        A test may call it while the task is parked at the gate; the task then finds the job done.
        """
        for _name, step in job.steps[job.done :]:
            step()
        job.done = len(job.steps)
        job.state, job.current = "done", None
        self.log.append(f"job-done {job.id}")

    async def _run(self, job: Job) -> None:
        for i, (name, step) in enumerate(job.steps):
            await self.gate.wait()
            await asyncio.sleep(self.step_delay)
            if job.state != "running":
                return
            job.current = name
            if self.fail_next_job is not None and i == len(job.steps) - 1:
                job.state, job.error, self.fail_next_job = "failed", self.fail_next_job, None
                self.log.append(f"job-failed {job.id}")
                return
            step()
            job.done = i + 1
        self._finish(job)
