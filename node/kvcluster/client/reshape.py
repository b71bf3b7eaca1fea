"""A reshape job seen from outside the cluster: completing a partial target, following a job.

A caller usually wants to change one thing (``--partitions 16``) and keep the rest. What "the
rest" is has to be read from the cluster: the shape it was last asked for if a job is running or
finished (a running job's map is half-way, and a finished job's target names the nodes that are
meant to stay, excluding drained ones not yet forgotten), else the map itself. Kept here, beside
the client, so the CLI against any cluster and the local supervisor complete targets the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import KVError
from .sync import SyncClient

FINAL_STATES = ("done", "failed", "idle")


@dataclass(frozen=True)
class Shape:
    nodes: tuple[int, ...]
    partitions: int
    replicas: int

    def __str__(self) -> str:
        return f"nodes {list(self.nodes)}, {self.partitions} partitions, {self.replicas} replicas"


def current_shape(admin_map: Mapping[str, Any], job: Mapping[str, Any] | None) -> Shape:
    """The shape the cluster is in or heading to (see the module docstring)."""
    if job and job.get("state") in ("running", "done") and job.get("target"):
        target = job["target"]
        return Shape(tuple(sorted(target["nodes"])), int(target["partitions"]), int(target["replicas"]))
    partitions = admin_map.get("partitions") or []
    return Shape(
        tuple(sorted(int(n["id"]) for n in admin_map.get("nodes") or [])),
        len(partitions),
        max((len(p["voters"]) for p in partitions), default=1),
    )


def known_nodes(admin_map: Mapping[str, Any]) -> list[int]:
    """Every node id that has joined (held data or not): the nodes a target may name."""
    return sorted(int(n["id"]) for n in admin_map.get("nodes") or [])


def follow(
    client: SyncClient,
    timeout: float,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    poll: float = 0.25,
) -> dict[str, Any]:
    """Poll ``GET /v1/admin/reshape`` until the job is done, failed or gone (idle); its last state.

    Errors are retried until the deadline: while the meta group changes leader (the node running
    the job died) the admin API answers 503 for a moment, and the next leader carries on.
    """
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            job = client.reshape_status()
        except KVError:
            time.sleep(poll * 2)
            continue
        if on_progress is not None:
            on_progress(job)
        if job.get("state") in FINAL_STATES:
            return job
        time.sleep(poll)
    raise TimeoutError(f"reshape still running after {timeout:g}s: {job}")
