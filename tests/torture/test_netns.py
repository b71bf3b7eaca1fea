"""Network namespaces: nodes reach each other and the root namespace; cuts drop exactly what they say."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kvcluster.local import netns
from tests.environment import cannot_run

from .conftest import netns_skip_reason

pytestmark = pytest.mark.slow

PORT = 7999
LISTEN = (
    "import socket, sys, time\ns = socket.socket()\ns.bind((sys.argv[1], int(sys.argv[2])))\n"
    "s.listen(64)\ntime.sleep(60)\n"
)
PROBE = (
    "import socket, sys\ns = socket.socket()\ns.settimeout(float(sys.argv[3]))\n"
    "try:\n    s.connect((sys.argv[1], int(sys.argv[2])))\nexcept OSError:\n    sys.exit(1)\n"
)


@pytest.fixture
def network() -> Iterator[netns.Network]:
    reason = netns_skip_reason()
    if reason:
        cannot_run(f"network namespaces: {reason}")
    net = netns.Network.allocate()
    listeners: list[subprocess.Popen[bytes]] = []
    try:
        for node in (1, 2, 3):
            net.add_node(node)
            listeners.append(
                subprocess.Popen(
                    [*net.exec_prefix(node), sys.executable, "-c", LISTEN, net.ip(node), str(PORT)]
                )
            )
        deadline = time.monotonic() + 20
        while not all(reaches(net, None, n) for n in (1, 2, 3)):  # the listeners are starting
            assert time.monotonic() < deadline, "listeners in the namespaces did not come up"
            time.sleep(0.1)
        yield net
    finally:
        for proc in listeners:
            proc.kill()
            proc.wait(timeout=10)
        net.destroy()


def reaches(net: netns.Network, source: int | None, target: int, timeout: float = 1.0) -> bool:
    """Can ``source`` (a node, or None: the root namespace) open a TCP connection to ``target``?"""
    enter = net.exec_prefix(source) if source is not None else []
    args = [*enter, sys.executable, "-c", PROBE, net.ip(target), str(PORT), str(timeout)]
    return subprocess.run(args, capture_output=True, timeout=30, check=False).returncode == 0


def test_cut_and_heal(network: netns.Network) -> None:
    assert all(reaches(network, None, n) for n in (1, 2, 3))
    assert reaches(network, 1, 2) and reaches(network, 2, 3)

    pairs = network.cut([{1}, {2, 3}])
    assert sorted(pairs) == [(1, 2), (1, 3)]
    assert not reaches(network, 1, 2) and not reaches(network, 3, 1)
    assert reaches(network, 2, 3)
    assert all(reaches(network, None, n) for n in (1, 2, 3))  # clients are never cut off
    assert "-j DROP" in network.rules(1)

    network.heal()
    assert network.rules(1).strip() == f"-N {netns.CHAIN}"
    assert reaches(network, 1, 2) and reaches(network, 3, 1)


def test_bridge(network: netns.Network) -> None:
    network.set_cuts([(1, 3)])  # 2 sees both sides, 1 and 3 do not see each other
    assert reaches(network, 1, 2) and reaches(network, 2, 3)
    assert not reaches(network, 1, 3)


def test_destroy_removes_everything_and_stale_networks_are_cleaned() -> None:
    reason = netns_skip_reason()
    if reason:
        cannot_run(f"network namespaces: {reason}")
    net = netns.Network.allocate()
    net.add_node(1)
    names = {net.router, net.namespace(1)}
    net.destroy()
    net.destroy()  # idempotent
    assert not names & set(netns.list_namespaces())

    # A network whose creator died is found and removed by clean_stale.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    with netns._lock():
        free = min(set(range(1, 251)) - netns._subnets_in_use())
        orphan = netns.Network(subnet=free, owner=dead.pid)
        orphan._create_router()
    orphan.add_node(1)
    assert orphan.router in netns.list_namespaces()
    removed = netns.clean_stale()
    assert {orphan.router, orphan.namespace(1)} <= set(removed)
    assert orphan.router not in netns.list_namespaces()
