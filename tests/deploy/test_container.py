"""The container image, for real: build it, then run a 3-node cluster on a Docker network.

Needs a Docker daemon (skips, saying why, when there is none). Marked ``docker``:
run with ``pytest -m docker tests/deploy/test_container.py`` (``make test-docker``).

The image is built from a base made by ``scripts/make-base-image.sh`` (debootstrap +
``docker import``: no registry needed) unless the environment names one:
  KVCLUSTER_TEST_IMAGE       use this already built image, build nothing
  KVCLUSTER_TEST_BASE_IMAGE  build on this base (e.g. python:3.11-slim) instead
The host only ever talks to 127.0.0.1 (ports published on loopback); the nodes talk
to each other on a user-defined Docker network of their own.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from .support import SCRIPTS, run

# Building the base and the image happens in the first test's setup: allow for it.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

PREFIX = f"kvtest{os.getpid()}"
NETWORK = f"{PREFIX}-net"
NODES = (1, 2, 3)
PORT = 7000
BUILT_IMAGE = "kvcluster:test"
BASE_IMAGE = "kvcluster-base:bookworm"

T = TypeVar("T")


def docker(*args: str, timeout: float = 120) -> str:
    result = run(["docker", *args], timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.output}"
    return result.stdout.strip()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something other than None, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value is not None:
                return value
        except Exception as exc:  # keep polling; report the last failure
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")
        time.sleep(interval)


# --- the image ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_available() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on PATH")
    info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30)
    if info.returncode != 0:
        pytest.skip(f"the Docker daemon is not reachable: {info.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def image(docker_available: None) -> str:
    given = os.environ.get("KVCLUSTER_TEST_IMAGE")
    if given:
        docker("image", "inspect", given)
        return given
    base = os.environ.get("KVCLUSTER_TEST_BASE_IMAGE")
    if not base:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            pytest.skip(
                "no base image: set KVCLUSTER_TEST_BASE_IMAGE (e.g. python:3.11-slim) or run as root "
                "with debootstrap installed so scripts/make-base-image.sh can make one"
            )
        made = run(["bash", SCRIPTS / "make-base-image.sh", BASE_IMAGE], timeout=900)
        assert made.returncode == 0, made.output
        base = BASE_IMAGE
    built = run(
        ["bash", SCRIPTS / "build-image.sh", "--tag", BUILT_IMAGE],
        timeout=1200,
        env={"BASE_IMAGE": base},
    )
    assert built.returncode == 0, built.output[-6000:]
    return BUILT_IMAGE


def in_image(image: str, *cmd: str) -> str:
    return docker("run", "--rm", "--entrypoint", cmd[0], image, *cmd[1:])


def importable(image: str, module: str) -> bool:
    probe = run(["docker", "run", "--rm", "--entrypoint", "python3", image, "-c", f"import {module}"])
    return probe.returncode == 0


def cli_exists(image: str) -> bool:
    return importable(image, "kvcluster.cli.main")


def test_image_metadata(image: str) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image))
    assert config["User"] in ("10001:10001", "10001")
    assert config["Entrypoint"] == ["kvcluster"]
    assert config["Cmd"] == ["node"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert "7000/tcp" in config["ExposedPorts"]
    labels = config["Labels"]
    for key in ("title", "version", "revision", "created", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key


def test_image_runs_as_non_root_without_build_tools(image: str) -> None:
    assert in_image(image, "id", "-u") == "10001"
    script = (
        "import importlib.util as u, shutil, sys, kvcluster, kvoperator; "
        "assert sys.prefix == '/opt/kvcluster', sys.prefix; "
        "assert sys.version_info >= (3, 11); "
        "tools = [t for t in ('gcc', 'cc', 'make', 'pip', 'pip3') if shutil.which(t)]; "
        "assert not tools, tools; "
        "assert u.find_spec('pip') is None; "
        "print('ok')"
    )
    assert in_image(image, "python3", "-c", script) == "ok"
    # /data belongs to the node's user; the rest of the tree is not writable by it.
    assert in_image(image, "stat", "-c", "%u", "/data") == "10001"
    assert run(["docker", "run", "--rm", "--entrypoint", "touch", image, "/opt/kvcluster/x"]).returncode != 0


def test_image_size_is_reasonable(image: str) -> None:
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image))
    assert size < 450 * 1024 * 1024, f"image is {size / 2**20:.0f} MiB"


def test_cli_help(image: str) -> None:
    if not cli_exists(image):
        pytest.skip("kvcluster.cli.main is not written yet: the image has no `kvcluster` command to run")
    out = run(["docker", "run", "--rm", image, "--help"])
    assert out.returncode == 0, out.output
    assert "node" in out.stdout
    node_help = run(["docker", "run", "--rm", image, "node", "--help"])
    assert node_help.returncode == 0 and "--peers" in node_help.stdout, node_help.output


def test_operator_cli_help(image: str) -> None:
    if not importable(image, "kvoperator.main"):
        pytest.skip("kvoperator.main is not written yet: the image has no `kvcluster-operator` to run")
    operator_help = run(["docker", "run", "--rm", "--entrypoint", "kvcluster-operator", image, "--help"])
    assert operator_help.returncode == 0, operator_help.output


# --- a 3-node cluster --------------------------------------------------------------


@dataclass
class Http:
    status: int
    body: bytes
    headers: dict[str, str]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5) -> Http:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Http(response.status, response.read(), dict(response.headers))
    except urllib.error.HTTPError as err:
        return Http(err.code, err.read(), dict(err.headers))


class Cluster:
    def __init__(self, image: str) -> None:
        self.image = image
        self.peers = ",".join(f"{n}=http://kv{n}:{PORT}" for n in NODES)

    @staticmethod
    def name(node: int) -> str:
        return f"{PREFIX}-kv{node}"

    def cleanup(self) -> None:
        for node in NODES:
            run(["docker", "rm", "-f", "-v", self.name(node)], timeout=60)
            run(["docker", "volume", "rm", "-f", f"{self.name(node)}-data"], timeout=60)
        run(["docker", "network", "rm", NETWORK], timeout=60)

    def start(self) -> None:
        docker("network", "create", NETWORK)
        for node in NODES:
            docker(
                "run", "--detach",
                "--name", self.name(node),
                "--hostname", f"kv{node}",
                "--network", NETWORK,
                "--network-alias", f"kv{node}",
                "--publish", f"127.0.0.1::{PORT}",
                "--volume", f"{self.name(node)}-data:/data",
                # As the operator's pods run: read-only root, scratch /tmp, no privileges.
                "--read-only", "--tmpfs", "/tmp",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                self.image,
                "node",
                "--id", str(node),
                "--listen", f"0.0.0.0:{PORT}",
                "--advertise-url", f"http://kv{node}:{PORT}",
                "--peers", self.peers,
                "--partitions", "4",
                "--replicas", "3",
                "--cluster-state", "new",
                "--data-dir", "/data",
            )  # fmt: skip

    def url(self, node: int) -> str:
        # The host port changes when a container restarts: ask every time.
        mapping = docker("port", self.name(node), f"{PORT}/tcp").splitlines()[0]
        return f"http://127.0.0.1:{mapping.rsplit(':', 1)[1]}"

    def logs(self) -> str:
        return "\n".join(
            f"--- {self.name(n)}\n{run(['docker', 'logs', '--tail', '60', self.name(n)]).output}"
            for n in NODES
        )

    def ready(self, node: int) -> bool | None:
        return True if http("GET", f"{self.url(node)}/readyz").status == 200 else None

    def put(self, node: int, key: str, value: bytes, timeout: float = 30) -> None:
        def attempt() -> bool | None:
            response = http("PUT", f"{self.url(node)}/v1/kv/{key}", value)
            if response.status == 200:
                return True
            # 503 (no leader yet) and 504 (outcome unknown) are retried; the value is idempotent.
            assert response.status in (503, 504), (response.status, response.body)
            return None

        wait_for(f"PUT {key} via node {node}", attempt, timeout)

    def get(self, node: int, key: str, timeout: float = 30) -> bytes:
        def attempt() -> bytes | None:
            response = http("GET", f"{self.url(node)}/v1/kv/{key}")
            if response.status == 200:
                return response.body
            assert response.status in (503, 504), (response.status, response.body)
            return None

        return wait_for(f"GET {key} via node {node}", attempt, timeout)


@pytest.fixture
def cluster(image: str) -> Iterator[Cluster]:
    if not cli_exists(image):
        pytest.skip("kvcluster.cli.main is not written yet: `kvcluster node` cannot run")
    c = Cluster(image)
    c.cleanup()
    try:
        c.start()
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.cleanup()


def test_three_nodes_survive_a_killed_node(cluster: Cluster) -> None:
    try:
        for node in NODES:
            wait_for(f"node {node} ready", functools.partial(cluster.ready, node), timeout=90)

        # Writes through every node, reads through every other one (linearizable reads).
        written: dict[str, bytes] = {}
        for i in range(12):
            key, value = f"key-{i}", f"value-{i}".encode()
            cluster.put(NODES[i % 3], key, value)
            written[key] = value
        for i, (key, value) in enumerate(written.items()):
            assert cluster.get(NODES[(i + 1) % 3], key) == value

        # The image's HEALTHCHECK reports the node healthy.
        wait_for(
            "docker health status of node 1",
            lambda: (
                True
                if docker("inspect", "--format", "{{.State.Health.Status}}", cluster.name(1)) == "healthy"
                else None
            ),
            timeout=90,
            interval=2,
        )

        # Kill node 3: a majority remains, so writes and reads go on.
        docker("kill", cluster.name(3))
        for i in range(12, 20):
            key, value = f"key-{i}", f"value-{i}".encode()
            cluster.put(NODES[i % 2], key, value, timeout=60)
            written[key] = value
        for key, value in written.items():
            assert cluster.get(2, key) == value

        # Node 3 comes back with its data and catches up.
        docker("start", cluster.name(3))
        wait_for("node 3 ready again", lambda: cluster.ready(3), timeout=90)
        for key, value in written.items():
            assert cluster.get(3, key) == value
        assert cluster.get(1, "key-19") == b"value-19"
    except BaseException:
        print(cluster.logs())
        raise
