"""TLS on real node processes: HTTPS client API, mutual TLS between peers, certificate rotation.

Certificates are real (made by ``certs.py``) and so are the connections; the
nodes are subprocesses on 127.0.0.1, stopped by pid in teardown.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from kvcluster.client import KVError, SyncClient
from kvcluster.local.ports import free_port_block

from .certs import Authority
from .conftest import FAST_TICKS

HOST = "127.0.0.1"


class TlsCluster:
    def __init__(self, base: Path, ca: Authority, nodes: int = 3) -> None:
        self.base = base
        self.ca_path = ca.write_ca(base / "ca.crt")
        port = free_port_block(nodes + 2)
        self.ports = {i: port + i - 1 for i in range(1, nodes + 1)}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for i in self.ports:
            ca.issue(self.cert_dir(i), f"node-{i}", [HOST])

    def cert_dir(self, node: int) -> Path:
        return self.base / f"certs{node}"

    def url(self, node: int) -> str:
        return f"https://{HOST}:{self.ports[node]}"

    def start(self, node: int, ca_path: Path | None = None) -> None:
        ca = str(ca_path or self.ca_path)
        peers = ",".join(f"{i}={self.url(i)}" for i in self.ports)
        certs = self.cert_dir(node)
        log = open(self.base / f"node{node}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[node] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvcluster",
                "node",
                "--id",
                str(node),
                "--listen",
                f"{HOST}:{self.ports[node]}",
                "--advertise-url",
                self.url(node),
                "--peers",
                peers,
                "--data-dir",
                str(self.base / f"node{node}"),
                "--partitions",
                "2",
                "--replicas",
                "3",
                "--durability",
                "relaxed",
                "--tls-cert",
                str(certs / "tls.crt"),
                "--tls-key",
                str(certs / "tls.key"),
                "--tls-ca",
                ca,
                "--peer-tls-ca",
                ca,
                *FAST_TICKS,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KVCLUSTER_EVENT_LOOP": "asyncio"},
        )
        log.close()

    def status(self, node: int, path: str, context: ssl.SSLContext | None = None) -> int:
        context = context or ssl.create_default_context(cafile=str(self.ca_path))
        try:
            with urllib.request.urlopen(self.url(node) + path, timeout=2, context=context) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return 0

    def wait_ready(self, nodes: list[int], timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        pending = set(nodes)
        while pending and time.monotonic() < deadline:
            pending = {n for n in pending if self.status(n, "/readyz") != 200}
            if pending:
                time.sleep(0.2)
        assert not pending, f"nodes {sorted(pending)} not ready in {timeout}s: {self.logs()}"

    def logs(self) -> str:
        return "\n".join((self.base / f"node{n}.log").read_text()[-2000:] for n in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait(timeout=10)


@pytest.fixture
def ca() -> Authority:
    return Authority.create("kvcluster test CA")


@pytest.fixture
def tls_cluster(tmp_path: Path, ca: Authority) -> Iterator[TlsCluster]:
    cluster = TlsCluster(tmp_path, ca)
    try:
        yield cluster
    finally:
        cluster.stop()


def served_certificate(url: str) -> x509.Certificate:
    host, port = url.removeprefix("https://").split(":")
    pem = ssl.get_server_certificate((host, int(port)), timeout=2)
    return x509.load_pem_x509_certificate(pem.encode())


def test_tls_cluster_serves_clients_and_refuses_a_wrong_ca(tls_cluster: TlsCluster, tmp_path: Path) -> None:
    for n in (1, 2, 3):
        tls_cluster.start(n)
    tls_cluster.wait_ready([1, 2, 3])
    urls = [tls_cluster.url(n) for n in (1, 2, 3)]
    with SyncClient(urls, cacert=str(tls_cluster.ca_path), timeout=10) as kv:
        version = kv.put("tls/a", "one")
        item = kv.get("tls/a")
        assert item is not None and item.value == b"one" and item.version == version

    # The CLI takes the same CA bundle.
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvcluster",
            "get",
            "tls/a",
            "-e",
            urls[1],
            "--cacert",
            str(tls_cluster.ca_path),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == b"one"

    other = Authority.create("someone else's CA").write_ca(tmp_path / "other-ca.crt")
    with (
        SyncClient(urls, cacert=str(other), timeout=3, retries=1) as wrong,
        pytest.raises(KVError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        wrong.get("tls/a")

    # Peer endpoints want a client certificate from the cluster CA; a verified server is not enough.
    assert tls_cluster.status(1, "/internal/v1/status") == 401
    assert tls_cluster.status(1, "/healthz") == 200


def test_a_peer_with_another_cas_certificate_cannot_replicate(
    tls_cluster: TlsCluster, tmp_path: Path
) -> None:
    rogue = Authority.create("rogue CA")
    rogue.issue(tls_cluster.cert_dir(3), "node-3", [HOST])
    rogue_ca = rogue.write_ca(tmp_path / "rogue-ca.crt")
    tls_cluster.start(1)
    tls_cluster.start(2)
    tls_cluster.start(3, ca_path=rogue_ca)
    tls_cluster.wait_ready([1, 2])
    with SyncClient([tls_cluster.url(1)], cacert=str(tls_cluster.ca_path), timeout=10) as kv:
        kv.put("tls/b", "two")
    rogue_context = ssl.create_default_context(cafile=str(rogue_ca))
    # Node 3 is up and serving, but it never hears from a leader: no link was accepted either way.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        assert tls_cluster.status(3, "/healthz", rogue_context) == 200
        assert tls_cluster.status(3, "/readyz", rogue_context) == 503
        time.sleep(0.5)
    log3 = (tmp_path / "node3.log").read_text()
    assert "connected to node" not in log3 and "accepted connection" not in log3


def test_rotated_certificates_are_served_without_a_restart(
    tls_cluster: TlsCluster, ca: Authority, tmp_path: Path
) -> None:
    for n in (1, 2, 3):
        tls_cluster.start(n)
    tls_cluster.wait_ready([1, 2, 3])
    before = served_certificate(tls_cluster.url(1))
    fresh = tmp_path / "fresh"
    _, _, issued = ca.issue(fresh, "node-1-rotated", [HOST])
    # As a Secret mount does it: each file replaced whole.
    for name in ("tls.key", "tls.crt"):
        os.replace(fresh / name, tls_cluster.cert_dir(1) / name)
    deadline = time.monotonic() + 15.0
    while served_certificate(tls_cluster.url(1)).serial_number != issued.serial_number:
        assert time.monotonic() < deadline, "node 1 still serves the old certificate"
        time.sleep(0.2)
    assert before.serial_number != issued.serial_number
    assert tls_cluster.procs[1].poll() is None
    with SyncClient([tls_cluster.url(1)], cacert=tls_cluster.ca_path, timeout=10) as kv:
        kv.put("tls/c", "three")
        item = kv.get("tls/c")
        assert item is not None and item.value == b"three"
