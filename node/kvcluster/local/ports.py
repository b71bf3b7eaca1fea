"""Picking ports for local node processes.

Ports handed out by ``bind(0)`` come from the kernel's ephemeral range, which
the nodes' own outgoing connections draw from too: a port picked that way can
be taken by a peer connection before the node meant to listen on it starts
(or restarts). Below that range only listeners compete, so ports are chosen
there and checked free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _free(port: int, host: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports, free now and outside the ephemeral range."""
    low, _ = ephemeral_range()
    lowest = 20000 if low > 21000 else 10000
    rng = random.Random()
    ports: list[int] = []
    for _ in range(5000):
        if len(ports) == count:
            return ports
        port = rng.randrange(lowest, max(lowest + count + 1, low - 1))
        if port not in ports and _free(port, host):
            ports.append(port)
    raise RuntimeError(f"found only {len(ports)} of {count} free ports")


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port with ``count`` consecutive free ports after it, outside the ephemeral range."""
    low, _ = ephemeral_range()
    lowest = 20000 if low > 21000 else 10000
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(lowest, max(lowest + 1, low - count - 1))
        if all(_free(port, host) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports below {low}")
