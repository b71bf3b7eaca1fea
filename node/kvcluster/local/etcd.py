"""A throw-away etcd cluster on loopback, so kvcluster can be measured against it in one run.

Only the benchmark comparison uses it. etcd comes from the distribution's
package (Debian ``etcd-server``); etcd 3.4 serves a JSON gateway of its gRPC
API on the client port (``/v3/kv/put``, ``/v3/kv/range``), which a plain
HTTP client can drive exactly as it drives kvcluster.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_ports


class EtcdError(RuntimeError):
    pass


def etcd_binary() -> str | None:
    return shutil.which("etcd")


@dataclass
class LocalEtcd:
    """``members`` etcd processes on 127.0.0.1, each with its own data dir, fsync on (etcd's only mode)."""

    base_dir: Path
    members: int = 3
    host: str = "127.0.0.1"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)

    def urls(self) -> list[str]:
        return [f"http://{self.host}:{p}" for p in self.client_ports]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        binary = etcd_binary()
        if binary is None:
            raise EtcdError("etcd is not installed (Debian: apt-get install etcd-server)")
        ports = free_ports(2 * self.members, self.host)
        self.client_ports = ports[: self.members]
        peer_ports = ports[self.members :]
        initial = ",".join(f"m{i}=http://{self.host}:{peer_ports[i]}" for i in range(self.members))
        for i in range(self.members):
            data = self.base_dir / f"etcd-{i}"
            data.mkdir(parents=True, exist_ok=True)
            client = f"http://{self.host}:{self.client_ports[i]}"
            peer = f"http://{self.host}:{peer_ports[i]}"
            args = [
                binary,
                "--name", f"m{i}",
                "--data-dir", str(data),
                "--listen-client-urls", client,
                "--advertise-client-urls", client,
                "--listen-peer-urls", peer,
                "--initial-advertise-peer-urls", peer,
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", f"kvcluster-bench-{self.client_ports[0]}",
                "--log-level", "error",
            ]  # fmt: skip
            log = (self.base_dir / f"etcd-{i}.log").open("wb")
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every member answers /health with a leader elected."""
        deadline = time.monotonic() + timeout
        pending = set(self.urls())
        while pending:
            for url in sorted(pending):
                with (
                    contextlib.suppress(OSError, ValueError, urllib.error.URLError),
                    urllib.request.urlopen(url + "/health", timeout=1) as resp,
                ):
                    if json.loads(resp.read()).get("health") == "true":
                        pending.discard(url)
            if any(p.poll() is not None for p in self.procs):
                raise EtcdError(f"an etcd member exited; see the logs in {self.base_dir}")
            if pending and time.monotonic() > deadline:
                raise EtcdError(f"etcd members not healthy after {timeout:.0f} s: {sorted(pending)}")
            if pending:
                time.sleep(0.1)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
