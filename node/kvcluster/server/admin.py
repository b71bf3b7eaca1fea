"""The admin API: the partition map, nodes, reshape jobs and single reshape steps.

Protected by the admin token (``--admin-token-file``, falling back to the
client token). This is what ``kvcluster reshape`` and the operator drive.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from kvcluster.keyspace import PartitionMap
from kvcluster.placement import AddLearner, Merge, Promote, RemoveReplica, Split, Step, TransferLeader
from kvcluster.placement.steps import next_partition_id

from .api import MAX_INT64
from .errors import BadRequest, Conflict, NotFound
from .reshape import Reshaper


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def int_field(body: dict[str, Any], name: str, lo: int = 0) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= MAX_INT64:
        raise BadRequest(f"{name!r} must be an integer between {lo} and {MAX_INT64}")
    return value


class AdminApi:
    def __init__(self, reshaper: Reshaper) -> None:
        self.reshaper = reshaper

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/v1/admin/map", self.get_map),
            web.get("/v1/admin/nodes/{id}", self.get_node),
            web.post("/v1/admin/nodes/{id}/drain", self.drain),
            web.post("/v1/admin/nodes/{id}/forget", self.forget),
            web.get("/v1/admin/reshape", self.get_reshape),
            web.post("/v1/admin/reshape", self.post_reshape),
            web.post("/v1/admin/partitions/{id}/split", self.split),
            web.post("/v1/admin/partitions/{id}/merge", self.merge),
            web.post("/v1/admin/partitions/{id}/replicas", self.replicas),
            web.post("/v1/admin/partitions/{id}/leader", self.leader),
        ]

    async def _map(self) -> PartitionMap:
        return PartitionMap.from_dict((await self.reshaper.meta_state())["map"])

    async def get_map(self, request: web.Request) -> web.Response:
        state = await self.reshaper.meta_state()
        status = await self.reshaper.status()
        body = {**state["map"], "leaders": {str(p): n for p, n in status.leaders().items()}}
        return web.json_response(body)

    async def get_node(self, request: web.Request) -> web.Response:
        node = _path_int(request, "id")
        pmap = await self._map()
        if node not in pmap.nodes:
            raise NotFound(f"node {node} is not a member of the cluster")
        held = [
            d.id
            for d in [*pmap.partitions.values(), *([pmap.meta] if pmap.meta else [])]
            if node in d.replicas
        ]
        status = await self.reshaper.status([node])
        report = status.reports.get(node)
        local = len(report["replicas"]) if report else None
        leaders = sum(1 for r in report["replicas"] if r["role"] == "leader") if report else None
        return web.json_response(
            {
                "id": node,
                "url": pmap.nodes[node].url,
                "replicas": len(held),
                "partitions": held,
                "leaders": leaders,
                "reachable": report is not None,
                "local_replicas": local,
                "drained": not held and (local is None or local == 0),
            }
        )

    async def get_reshape(self, request: web.Request) -> web.Response:
        job = await self.reshaper.job()
        return web.json_response(job or {"state": "idle"})

    async def post_reshape(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        nodes = body.get("nodes")
        if not isinstance(nodes, list) or not nodes or not all(isinstance(n, int) and n > 0 for n in nodes):
            raise BadRequest("'nodes' must be a non-empty list of node ids")
        job = await self.reshaper.submit(
            sorted(set(nodes)), int_field(body, "partitions", 1), int_field(body, "replicas", 1)
        )
        return web.json_response({"job": job["id"], **job}, status=202)

    async def drain(self, request: web.Request) -> web.Response:
        node = _path_int(request, "id")
        pmap = await self._map()
        if node not in pmap.nodes:
            raise NotFound(f"node {node} is not a member of the cluster")
        job = await self.reshaper.job()
        if job is not None:
            t = job["target"]
            nodes, partitions, replicas = list(t["nodes"]), int(t["partitions"]), int(t["replicas"])
        else:
            nodes = sorted(pmap.nodes)
            partitions = len(pmap.partitions)
            replicas = max((len(d.voters) for d in pmap.partitions.values()), default=1)
        remaining = [n for n in nodes if n != node]
        if not remaining:
            raise BadRequest("cannot drain the last node")
        job = await self.reshaper.submit(remaining, partitions, min(replicas, len(remaining)))
        return web.json_response({"job": job["id"], **job}, status=202)

    async def forget(self, request: web.Request) -> web.Response:
        node = _path_int(request, "id")
        answer = await self.reshaper.meta({"op": "forget_node", "id": node})
        if not answer.get("ok"):
            raise Conflict(str(answer.get("error")))
        return web.json_response({"id": node, "forgotten": True})

    async def _step(self, step: Step) -> web.Response:
        pmap = await self._map()
        status = await self.reshaper.status()
        descs = await self.reshaper.execute(step, pmap, status)
        return web.json_response({"step": str(step), "descriptors": [d.to_dict() for d in descs]})

    async def split(self, request: web.Request) -> web.Response:
        pid = _path_int(request, "id")
        pmap = await self._map()
        if pid not in pmap.partitions:
            raise NotFound(f"no partition {pid}")
        return await self._step(Split(pid, next_partition_id(pmap)))

    async def merge(self, request: web.Request) -> web.Response:
        pid = _path_int(request, "id")
        pmap = await self._map()
        left = pmap.partitions.get(pid)
        if left is None:
            raise NotFound(f"no partition {pid}")
        right = next((d for d in pmap.partitions.values() if d.range.start == left.range.end), None)
        if right is None:
            raise BadRequest(f"partition {pid} has no right neighbour")
        if set(right.replicas) != set(left.replicas):
            raise Conflict(
                f"partitions {pid} and {right.id} live on different replicas; move them together first"
            )
        return await self._step(Merge(pid, right.id))

    async def replicas(self, request: web.Request) -> web.Response:
        pid = _path_int(request, "id")
        body = await json_body(request)
        if "add" in body:
            node = int_field(body, "add", 1)
            step: Step = AddLearner(pid, node)
            await self._step(step)
            return await self._step(Promote(pid, node))
        if "remove" in body:
            return await self._step(RemoveReplica(pid, int_field(body, "remove", 1)))
        raise BadRequest("give {'add': node} or {'remove': node}")

    async def leader(self, request: web.Request) -> web.Response:
        pid = _path_int(request, "id")
        body = await json_body(request)
        return await self._step(TransferLeader(pid, int_field(body, "node", 1)))


def _path_int(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative")
    return value
