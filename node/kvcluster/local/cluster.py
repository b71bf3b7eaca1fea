"""A cluster of real node processes on one machine.

``kvcluster local`` runs one for people; the multi-process tests, the fault
injection runs and the benchmarks run the same thing, so what is tested is
what users start. Each node is a ``python -m kvcluster node`` child process
on 127.0.0.1 (or another loopback address) with its own data directory; the
layout and the pids are written to ``cluster.json`` in the base directory,
and a second run on the same directory picks the layout up again.

With ``netns=True`` (root only) each node runs in its own Linux network
namespace on ``10.77.K.<id>`` instead of loopback, so the fault injection runs
can cut links between nodes (see ``netns.py``). Such a cluster is ephemeral:
:meth:`LocalCluster.close` (or leaving the ``with`` block, or interpreter exit)
deletes its namespaces; :meth:`LocalCluster.stop` only stops the processes, so
a stop/start cycle keeps the same addresses.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Network

CLUSTER_FILE = "cluster.json"


class ClusterError(RuntimeError):
    pass


@dataclass
class LocalNode:
    id: int
    host: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cluster_state: str = "new"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    base_dir: Path
    nodes_count: int = 3
    partitions: int = 8
    replicas: int = 3
    base_port: int = 7001
    host: str = "127.0.0.1"
    node_args: list[str] = field(default_factory=list)
    """Extra ``kvcluster node`` flags (tick length, snapshot threshold, durability, ...)."""
    env: dict[str, str] = field(default_factory=dict)
    nodes: dict[int, LocalNode] = field(default_factory=dict)
    netns: bool = False
    """Each node in its own network namespace (root only); the cluster owns ``network``."""
    network: Network | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        saved = self.base_dir / CLUSTER_FILE
        if self.netns and self.network is None:
            if saved.exists():
                raise ClusterError(
                    "a namespaced cluster cannot resume from cluster.json (its addresses are gone)"
                )
            self.network = Network.allocate()
            atexit.register(self.network.destroy)
        if saved.exists():
            self._load(json.loads(saved.read_text()))
        else:
            for i in range(1, self.nodes_count + 1):
                self._define(i, self.base_port if self.network else self.base_port + i - 1)

    # ---- layout -------------------------------------------------------------------------------

    def _define(self, node_id: int, port: int, host: str | None = None) -> LocalNode:
        if self.network is not None and host is None:
            host = self.network.ip(node_id)
        node = LocalNode(
            id=node_id,
            host=host or self.host,
            port=port,
            data_dir=self.base_dir / f"node{node_id}",
            log_path=self.base_dir / f"node{node_id}.log",
        )
        self.nodes[node_id] = node
        return node

    def _load(self, saved: dict[str, Any]) -> None:
        self.partitions = int(saved["partitions"])
        self.replicas = int(saved["replicas"])
        self.host = str(saved.get("host", self.host))
        for n in saved["nodes"]:
            node = self._define(int(n["id"]), int(n["port"]), n.get("host"))
            node.cluster_state = str(n.get("cluster_state", "new"))
        self.nodes_count = len(self.nodes)

    def peers(self) -> str:
        return ",".join(f"{n.id}={n.url}" for n in sorted(self.nodes.values(), key=lambda n: n.id))

    def initial_peers(self) -> str:
        return ",".join(
            f"{n.id}={n.url}"
            for n in sorted(self.nodes.values(), key=lambda n: n.id)
            if n.cluster_state == "new"
        )

    def urls(self) -> list[str]:
        return [n.url for n in sorted(self.nodes.values(), key=lambda n: n.id)]

    def save(self) -> Path:
        path = self.base_dir / CLUSTER_FILE
        body = {
            "partitions": self.partitions,
            "replicas": self.replicas,
            "host": self.host,
            "netns": self.network.router if self.network is not None else None,
            "nodes": [
                {
                    "id": n.id,
                    "host": n.host,
                    "port": n.port,
                    "url": n.url,
                    "pid": n.pid,
                    "data_dir": str(n.data_dir),
                    "log": str(n.log_path),
                    "cluster_state": n.cluster_state,
                }
                for n in sorted(self.nodes.values(), key=lambda n: n.id)
            ],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(path)
        return path

    # ---- processes ------------------------------------------------------------------------------

    def command(self, node: LocalNode) -> list[str]:
        peers = self.initial_peers() if node.cluster_state == "new" else self.peers()
        enter = self.network.exec_prefix(node.id) if self.network is not None else []
        return [
            *enter,
            sys.executable,
            "-m",
            "kvcluster",
            "node",
            "--id",
            str(node.id),
            "--listen",
            f"{node.host}:{node.port}",
            "--advertise-url",
            node.url,
            "--peers",
            peers,
            "--data-dir",
            str(node.data_dir),
            "--partitions",
            str(self.partitions),
            "--replicas",
            str(self.replicas),
            "--cluster-state",
            node.cluster_state,
            *self.node_args,
        ]

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes.values():
            if not node.alive():
                self.start_node(node.id)
        self.save()

    def start_node(self, node_id: int) -> LocalNode:
        node = self.nodes[node_id]
        if node.alive():
            return node
        node.data_dir.mkdir(parents=True, exist_ok=True)
        if self.network is not None:
            self.network.add_node(node_id)
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        with node.log_path.open("ab") as logf:
            node.proc = subprocess.Popen(
                self.command(node), stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.save()
        return node

    def add_node(self, cluster_state: str = "existing") -> LocalNode:
        """Define and start one more node that joins the running cluster holding nothing."""
        node_id = max(self.nodes, default=0) + 1
        if self.network is not None:
            port = self.base_port  # every node has its own address
        else:
            port = max((n.port for n in self.nodes.values()), default=self.base_port - 1) + 1
        node = self._define(node_id, port)
        node.cluster_state = cluster_state
        self.nodes_count = len(self.nodes)
        return self.start_node(node_id)

    def remove_node(self, node_id: int) -> None:
        """Stop a node and forget it (its data directory stays on disk)."""
        self.stop_node(node_id)
        del self.nodes[node_id]
        self.nodes_count = len(self.nodes)
        self.save()

    def signal_node(self, node_id: int, sig: signal.Signals) -> None:
        node = self.nodes[node_id]
        if node.proc is None or node.proc.poll() is not None:
            raise ClusterError(f"node {node_id} is not running")
        os.kill(node.proc.pid, sig)

    def kill(self, node_id: int) -> None:
        """kill -9: no shutdown, no flush; only what was fsynced survives."""
        node = self.nodes[node_id]
        if node.alive():
            assert node.proc is not None
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)

    def pause(self, node_id: int) -> None:
        self.signal_node(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.signal_node(node_id, signal.SIGCONT)

    def stop_node(self, node_id: int, timeout: float = 15.0, *, signal_first: bool = True) -> int | None:
        """SIGTERM the node and wait for it; SIGKILL after ``timeout``.

        ``signal_first=False``: the SIGTERM was already sent, only wait. Never
        send a second one: a node whose event loop already closed would die of
        it (exit -15) instead of finishing its shutdown.
        """
        node = self.nodes[node_id]
        if node.proc is None:
            return None
        if node.proc.poll() is None:
            if signal_first:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
                    node.proc.terminate()
            try:
                node.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)
        return node.proc.returncode

    def restart(self, node_id: int) -> LocalNode:
        self.stop_node(node_id)
        return self.start_node(node_id)

    def stop(self) -> None:
        """SIGTERM every node at once, then wait for each (SIGKILL after 15 s)."""
        for node in self.nodes.values():
            if node.alive():
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
                    node.proc.terminate()
        for node in list(self.nodes.values()):
            self.stop_node(node.id, signal_first=False)
        self.save()

    def close(self) -> None:
        """Stop every node and delete the cluster's network namespaces, if it has any."""
        try:
            self.stop()
        finally:
            if self.network is not None:
                self.network.destroy()
                atexit.unregister(self.network.destroy)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- observation ------------------------------------------------------------------------------

    def get_json(self, node_id: int, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        url = self.nodes[node_id].url + path
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body or b"null")
            except ValueError:
                return err.code, body.decode(errors="replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return 0, str(exc)

    def ready(self, node_id: int) -> bool:
        return self.nodes[node_id].alive() and self.get_json(node_id, "/readyz", timeout=1.0)[0] == 200

    def wait_ready(self, timeout: float = 30.0, nodes: list[int] | None = None) -> None:
        ids = nodes if nodes is not None else [n.id for n in self.nodes.values() if n.alive()]
        deadline = time.monotonic() + timeout
        pending = set(ids)
        while pending:
            for node_id in list(pending):
                if not self.nodes[node_id].alive():
                    raise ClusterError(
                        f"node {node_id} exited with {self.nodes[node_id].proc.returncode}: "  # type: ignore[union-attr]
                        f"see {self.nodes[node_id].log_path}"
                    )
                if self.ready(node_id):
                    pending.discard(node_id)
            if not pending:
                return
            if time.monotonic() > deadline:
                why = {n: self.get_json(n, "/readyz", timeout=1.0)[1] for n in sorted(pending)}
                raise ClusterError(f"nodes {sorted(pending)} not ready after {timeout}s: {why}")
            time.sleep(0.1)

    def cluster_view(self, via: int | None = None) -> dict[str, Any]:
        for node_id in [via] if via is not None else [n for n in self.nodes if self.nodes[n].alive()]:
            status, body = self.get_json(node_id, "/v1/cluster", timeout=5.0)
            if status == 200 and isinstance(body, dict):
                return body
        raise ClusterError("no node answered /v1/cluster")

    def leader_of(self, partition: int, via: int | None = None) -> int | None:
        for p in self.cluster_view(via)["partitions"]:
            if p["id"] == partition:
                leader = p["leader"]
                return int(leader) if leader is not None else None
        return None

    def wait_for(self, predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
        """Poll ``predicate`` until it returns a truthy value; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except (ClusterError, OSError, KeyError) as exc:
                last_exc = exc
            time.sleep(interval)
        raise ClusterError(
            f"timed out after {timeout}s waiting for {what}" + (f" ({last_exc})" if last_exc else "")
        )

    def iter_logs(self) -> Iterator[tuple[int, str]]:
        for node in self.nodes.values():
            if node.log_path.exists():
                yield node.id, node.log_path.read_text(errors="replace")
