"""Fixtures of the client tests: a real 3-node cluster as subprocesses, and tiny stub servers.

The cluster is started once per session (the client tests use unique key
prefixes, so they do not disturb each other); a test that kills nodes gets a
cluster of its own. Every process is stopped by its pid in teardown.
(The shared harness ``kvcluster.local`` will replace ``NodeCluster``.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kvcluster.client import AsyncClient

MAX_VALUE_BYTES = 65536
MAX_KEY_BYTES = 1024
NODE_ARGS = [
    "--partitions",
    "4",
    "--replicas",
    "3",
    "--tick-ms",
    "50",
    "--election-ticks",
    "10",
    "--durability",
    "relaxed",
    "--max-value-bytes",
    str(MAX_VALUE_BYTES),
    "--max-key-bytes",
    str(MAX_KEY_BYTES),
]
READY_TIMEOUT = 60.0


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out (all bound at once, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def dead_endpoint() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


@dataclass
class NodeCluster:
    """``kvcluster node`` processes on 127.0.0.1 with their own data directories."""

    base: Path
    nodes: int = 3
    ports: list[int] = field(default_factory=list)
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[int, IO[bytes]] = field(default_factory=dict)

    @property
    def endpoints(self) -> list[str]:
        return [self.url(i) for i in range(1, self.nodes + 1)]

    def url(self, node: int) -> str:
        return f"http://127.0.0.1:{self.ports[node - 1]}"

    def start(self) -> None:
        for attempt in range(3):
            self.ports = free_ports(self.nodes)
            for i in range(1, self.nodes + 1):
                self.start_node(i)
            try:
                self.wait_ready()
                return
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise

    def start_node(self, i: int) -> None:
        peers = ",".join(f"{n}={self.url(n)}" for n in range(1, self.nodes + 1))
        log = (self.base / f"node{i}.log").open("ab")
        self.logs[i] = log
        self.procs[i] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvcluster",
                "node",
                "--id",
                str(i),
                "--listen",
                f"127.0.0.1:{self.ports[i - 1]}",
                "--peers",
                peers,
                "--data-dir",
                str(self.base / f"n{i}"),
                *NODE_ARGS,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, nodes: list[int] | None = None, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``/readyz`` of the nodes until all answer 200; fail early if one exits."""
        waiting = set(nodes or range(1, self.nodes + 1))
        deadline = time.monotonic() + timeout
        while waiting:
            for i in sorted(waiting):
                proc = self.procs[i]
                if proc.poll() is not None:
                    raise RuntimeError(f"node {i} exited with {proc.returncode}:\n{self.log_tail(i)}")
                if http_status(self.url(i) + "/readyz") == 200:
                    waiting.discard(i)
            if waiting:
                if time.monotonic() > deadline:
                    tails = "\n".join(self.log_tail(i) for i in waiting)
                    raise RuntimeError(f"nodes {sorted(waiting)} not ready in {timeout}s:\n{tails}")
                time.sleep(0.05)  # poll interval, bounded by the deadline above

    def log_tail(self, i: int, lines: int = 30) -> str:
        path = self.base / f"node{i}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for log in self.logs.values():
            log.close()
        self.procs.clear()
        self.logs.clear()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    """One 3-node cluster (4 partitions, 3 replicas) shared by the client tests."""
    c = NodeCluster(tmp_path_factory.mktemp("kvcluster"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[NodeCluster]:
    """A cluster for a test that kills nodes."""
    c = NodeCluster(tmp_path)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def prefix() -> bytes:
    """A key prefix of this test alone."""
    return f"t-{uuid.uuid4().hex[:10]}/".encode()


@pytest.fixture
async def client(cluster: NodeCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(cluster.endpoints, timeout=15.0) as kv:
        yield kv


StubHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def stub_server() -> AsyncIterator[Callable[[StubHandler], Awaitable[str]]]:
    """Start a tiny aiohttp server answering every request with ``handler``; returns its URL."""
    servers: list[TestServer] = []

    async def start(handler: StubHandler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()
