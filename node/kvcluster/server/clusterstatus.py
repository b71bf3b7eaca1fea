"""Asking every node what it hosts: for the cluster view, the readiness of a reshape and its planner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kvcluster.keyspace import PartitionDescriptor
from kvcluster.transport import PeerRPC, unpack

STATUS_PATH = "/internal/v1/status"


@dataclass
class ClusterStatus:
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Node -> its status report, for the nodes that answered."""
    errors: dict[int, str] = field(default_factory=dict)

    def replicas(self, partition: int) -> dict[int, dict[str, Any]]:
        return {
            n: r for n, rep in self.reports.items() for r in rep["replicas"] if r["partition"] == partition
        }

    def leaders(self) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        for n, rep in self.reports.items():
            for r in rep["replicas"]:
                if r["role"] == "leader":
                    out[int(r["partition"])] = n
        return out

    def freshest_descriptors(self) -> list[PartitionDescriptor]:
        """The newest descriptor any replica holds, per partition."""
        best: dict[int, PartitionDescriptor] = {}
        for rep in self.reports.values():
            for r in rep["replicas"]:
                d = PartitionDescriptor.from_dict(r["descriptor"])
                if d.id not in best or d.epoch > best[d.id].epoch:
                    best[d.id] = d
        return list(best.values())

    def frozen(self) -> set[int]:
        return {
            int(r["partition"]) for rep in self.reports.values() for r in rep["replicas"] if r.get("frozen")
        }


async def collect_status(
    rpc: PeerRPC, nodes: Iterable[int], me: int, local: Callable[[], dict[str, Any]], timeout: float = 1.5
) -> ClusterStatus:
    async def fetch(node: int) -> dict[str, Any]:
        if node == me:
            return local()
        status, body = await rpc.call(node, STATUS_PATH, b"", timeout=timeout)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        result: dict[str, Any] = unpack(body)
        return result

    ids = sorted(set(nodes))
    answers = await asyncio.gather(*(fetch(n) for n in ids), return_exceptions=True)
    out = ClusterStatus()
    for node, answer in zip(ids, answers, strict=True):
        if isinstance(answer, BaseException):
            out.errors[node] = str(answer) or type(answer).__name__
        else:
            out.reports[node] = answer
    return out
