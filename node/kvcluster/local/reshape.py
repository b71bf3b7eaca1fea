"""Reshaping a local cluster: start nodes, move data, stop the nodes that were drained.

The cluster moves its own data (the admin API's reshape job); what a local
cluster adds is the processes: new nodes must run before data can move onto
them, and drained nodes may only stop once they hold nothing. The same
sequence runs in-process (tests drive a ``LocalCluster`` directly) or against
a running ``kvcluster local`` (through its control file), so both are
expressed against the small ``Supervisor`` protocol.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kvcluster.client import KVError, SyncClient
from kvcluster.client.reshape import follow

from .cluster import CLUSTER_FILE, ClusterError, LocalCluster

CONTROL_FILE = "control.json"


class Supervisor(Protocol):
    def node_ids(self) -> list[int]: ...

    def endpoints(self) -> list[str]: ...

    def add_nodes(self, count: int, timeout: float) -> list[int]: ...

    def remove_nodes(self, ids: list[int], timeout: float) -> None: ...


class DirectSupervisor:
    """Drives a ``LocalCluster`` owned by this process."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def node_ids(self) -> list[int]:
        return sorted(self.cluster.nodes)

    def endpoints(self) -> list[str]:
        return self.cluster.urls()

    def add_nodes(self, count: int, timeout: float) -> list[int]:
        added = [self.cluster.add_node().id for _ in range(count)]
        self.cluster.wait_ready(timeout=timeout, nodes=added)
        return added

    def remove_nodes(self, ids: list[int], timeout: float) -> None:
        for node_id in ids:
            self.cluster.remove_node(node_id)


class ControlFileSupervisor:
    """Asks a running ``kvcluster local`` (another process) to start or stop nodes."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = Path(base_dir)
        if not (self.base_dir / CLUSTER_FILE).exists():
            raise ClusterError(f"no local cluster in {self.base_dir} (run `kvcluster local` first)")

    def _layout(self) -> dict[str, Any]:
        layout: dict[str, Any] = json.loads((self.base_dir / CLUSTER_FILE).read_text())
        return layout

    def node_ids(self) -> list[int]:
        return sorted(int(n["id"]) for n in self._layout()["nodes"])

    def endpoints(self) -> list[str]:
        return [str(n["url"]) for n in self._layout()["nodes"]]

    def _request(self, body: dict[str, Any]) -> None:
        path = self.base_dir / CONTROL_FILE
        seq = int(json.loads(path.read_text()).get("seq", 0)) + 1 if path.exists() else 1
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": seq, **body}))
        tmp.replace(path)

    def add_nodes(self, count: int, timeout: float) -> list[int]:
        before = set(self.node_ids())
        self._request({"add": count})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            added = sorted(set(self.node_ids()) - before)
            if len(added) >= count and all(_ready(u) for u in self._urls_of(added)):
                return added
            time.sleep(0.2)
        raise ClusterError("`kvcluster local` did not start the new nodes; is it running on this data dir?")

    def remove_nodes(self, ids: list[int], timeout: float) -> None:
        self._request({"remove": ids})
        deadline = time.monotonic() + timeout
        while set(ids) & set(self.node_ids()):
            if time.monotonic() > deadline:
                raise ClusterError("`kvcluster local` did not stop the drained nodes")
            time.sleep(0.2)

    def _urls_of(self, ids: list[int]) -> list[str]:
        return [str(n["url"]) for n in self._layout()["nodes"] if int(n["id"]) in ids]


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def apply_control(cluster: LocalCluster, last_seq: int) -> int:
    """Carry out a control request written by ``ControlFileSupervisor``; returns the seq handled."""
    path = cluster.base_dir / CONTROL_FILE
    if not path.exists():
        return last_seq
    try:
        body = json.loads(path.read_text())
    except ValueError:
        return last_seq
    seq = int(body.get("seq", 0))
    if seq <= last_seq:
        return last_seq
    for _ in range(int(body.get("add", 0))):
        cluster.add_node()
    for node_id in body.get("remove", []):
        if int(node_id) in cluster.nodes:
            cluster.remove_node(int(node_id))
    cluster.save()
    return seq


@dataclass
class ReshapeResult:
    job: dict[str, Any]
    added: list[int]
    removed: list[int]
    seconds: float


def reshape(
    sup: Supervisor,
    client: SyncClient,
    nodes: int,
    partitions: int,
    replicas: int,
    *,
    timeout: float = 900.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> ReshapeResult:
    """Bring the cluster to ``nodes`` nodes (the lowest ids stay), ``partitions`` and ``replicas``."""
    started = time.monotonic()
    current = sup.node_ids()
    added: list[int] = []
    if nodes > len(current):
        added = sup.add_nodes(nodes - len(current), timeout=60)
        _wait(
            lambda: set(added) <= {int(n["id"]) for n in client.admin_map()["nodes"]}, 30, "new nodes to join"
        )
    keep = sorted(sup.node_ids())[:nodes]
    client.reshape(keep, partitions, replicas)
    job = _follow(client, timeout, on_progress)
    if job.get("state") != "done":
        raise ClusterError(f"reshape ended {job.get('state')}: {job.get('error')}")
    leaving = [n for n in sup.node_ids() if n not in keep]
    for node_id in leaving:
        _wait(_drained(client, node_id), 60, f"node {node_id} to drain")
    if leaving:
        # Stop them before forgetting them: a running node registers itself again.
        sup.remove_nodes(leaving, timeout=60)
        for node_id in leaving:
            client.forget_node(node_id)
    return ReshapeResult(job, added, leaving, time.monotonic() - started)


def _drained(client: SyncClient, node_id: int) -> Callable[[], bool]:
    def check() -> bool:
        info = client.admin_node(node_id)
        return info is None or bool(info["drained"])

    return check


def _follow(
    client: SyncClient, timeout: float, on_progress: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any]:
    try:
        return follow(client, timeout, on_progress)
    except TimeoutError as exc:
        raise ClusterError(str(exc)) from None


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except KVError:
            pass
        time.sleep(0.2)
    raise ClusterError(f"timed out waiting for {what}")
