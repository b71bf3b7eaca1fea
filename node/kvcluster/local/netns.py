"""Linux network namespaces for a local cluster, so the network itself can be cut.

Loopback cannot be partitioned: every node shares one network stack. Here each
node gets its own namespace with one interface (``eth0``, ``10.77.K.<id>/24``)
joined by a veth pair to a bridge. The bridge lives in a dedicated *router*
namespace, not in the root one: on hosts where Docker (or any firewall) set the
root ``FORWARD`` policy to ``DROP`` and ``br_netfilter`` is loaded, bridged
frames between veths in the root namespace are silently dropped; a fresh
namespace has its own, empty, accepting ruleset. A third veth pair connects the
root namespace (``kvtr<K>``, ``10.77.K.254``) to the same bridge, so clients,
probes and the test process reach every node directly and are never cut off.

Cuts are iptables ``DROP`` rules inside the node namespaces (both directions,
both ends), in a chain ``KVT`` hooked into ``INPUT`` and ``OUTPUT``. A dropped
packet is what a real partition looks like: connects time out, established
connections stall, nothing is refused fast. Healing flushes the chain.

Names carry the creating process id and the subnet index
(``kvt-<pid>-<K>-r``, ``kvt-<pid>-<K>-n<id>``), so parallel runs never collide
and :func:`clean_stale` can remove what a crashed run left behind (only
namespaces whose creator is dead, and the processes still inside them).
Everything here needs root and ``ip``, ``nsenter`` and ``iptables``;
:func:`unavailable_reason` says why not when they are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "kvt"
SUBNET_FIRST = "10.77"
"""Subnets are ``10.77.K.0/24``, K in 1..250; the root end of run K is ``10.77.K.254``."""
CHAIN = "KVT"
LOCK_PATH = Path("/tmp/kvcluster-netns.lock")
NETNS_DIR = Path("/run/netns")
_NAME = re.compile(rf"^{PREFIX}-(\d+)-(\d+)-(r|n\d+)$")
_TOOLS = ("ip", "nsenter", "iptables", "iptables-restore")


class NetnsError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None: they can). Cheap; creates nothing."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (run as root, e.g. in a VM or a privileged container)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (apt-get install -y iproute2 iptables util-linux)"
    return None


def _run(
    args: list[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def list_namespaces() -> list[str]:
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_in(ns: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _delete_namespace(ns: str) -> None:
    """Kill what still runs inside (our own node processes, by pid) and delete the namespace."""
    for pid in _pids_in(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _run(["ip", "netns", "delete", ns], check=False)


def clean_stale() -> list[str]:
    """Delete namespaces (and their root veth) left by runs whose process is gone."""
    removed: list[str] = []
    with _lock():
        for ns in list_namespaces():
            match = _NAME.match(ns)
            if match is None or _pid_alive(int(match.group(1))):
                continue
            if match.group(3) == "r":
                _run(["ip", "link", "delete", root_link(int(match.group(2)))], check=False)
            _delete_namespace(ns)
            removed.append(ns)
    if removed:
        log.info("removed stale namespaces: %s", ", ".join(removed))
    return removed


def root_link(subnet: int) -> str:
    return f"{PREFIX}r{subnet}"


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialises subnet allocation between concurrent runs on this machine."""
    with LOCK_PATH.open("a") as fp:
        fcntl.flock(fp, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fp, fcntl.LOCK_UN)


def _subnets_in_use() -> set[int]:
    used = {int(m.group(2)) for ns in list_namespaces() if (m := _NAME.match(ns))}
    routes = _run(["ip", "-4", "route", "show"], check=False).stdout
    used |= {int(m.group(1)) for m in re.finditer(rf"\b{re.escape(SUBNET_FIRST)}\.(\d+)\.", routes)}
    return used


@dataclass
class Network:
    """One run's namespaces: a router with the bridge, one namespace per node, cuts between them.

    Create with :meth:`allocate` (claims a subnet by creating the router
    namespace), add nodes with :meth:`add_node`, remove everything with
    :meth:`destroy` (idempotent; also registered to run at interpreter exit
    by :class:`~kvcluster.local.LocalCluster`).
    """

    subnet: int
    owner: int = field(default_factory=os.getpid)
    nodes: set[int] = field(default_factory=set)
    cuts: set[frozenset[int]] = field(default_factory=set)
    destroyed: bool = False
    _mutex: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---- names and addresses -----------------------------------------------------------------------

    @property
    def router(self) -> str:
        return f"{PREFIX}-{self.owner}-{self.subnet}-r"

    def namespace(self, node_id: int) -> str:
        return f"{PREFIX}-{self.owner}-{self.subnet}-n{node_id}"

    def ip(self, node_id: int) -> str:
        if not 1 <= node_id <= 250:
            raise NetnsError(f"node id {node_id} does not fit in a /24 (1..250)")
        return f"{SUBNET_FIRST}.{self.subnet}.{node_id}"

    @property
    def gateway_ip(self) -> str:
        """The root namespace's address on the bridge (where clients come from)."""
        return f"{SUBNET_FIRST}.{self.subnet}.254"

    def exec_prefix(self, node_id: int) -> list[str]:
        """Prepend to a command to run it inside the node's namespace.

        ``nsenter --net`` rather than ``ip netns exec``: it enters only the
        network namespace (no private mount namespace, so mounts made later
        in the root namespace, e.g. a data directory, stay visible) and it
        execs, so the child's pid is the node's pid.
        """
        return ["nsenter", f"--net={NETNS_DIR / self.namespace(node_id)}", "--"]

    # ---- life cycle ---------------------------------------------------------------------------------------

    @classmethod
    def allocate(cls) -> Network:
        """Claim a free ``10.77.K.0/24`` and build the router namespace with its bridge."""
        reason = unavailable_reason()
        if reason:
            raise NetnsError(reason)
        with _lock():
            used = _subnets_in_use()
            free = [k for k in range(1, 251) if k not in used]
            if not free:
                raise NetnsError("no free 10.77.K.0/24 subnet (250 runs at once?)")
            net = cls(subnet=free[0])
            try:
                net._create_router()
            except BaseException:
                net.destroy()
                raise
        return net

    def _create_router(self) -> None:
        r, link = self.router, root_link(self.subnet)
        _run(["ip", "link", "delete", link], check=False)  # a leftover of a crashed run with this K
        _run(["ip", "netns", "add", r])
        _run(["ip", "-n", r, "link", "set", "lo", "up"])
        _run(["ip", "-n", r, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", r, "link", "set", "br0", "up"])
        _run(["ip", "link", "add", link, "type", "veth", "peer", "name", "host0", "netns", r])
        _run(["ip", "-n", r, "link", "set", "host0", "master", "br0", "up"])
        _run(["ip", "addr", "add", f"{self.gateway_ip}/24", "dev", link])
        _run(["ip", "link", "set", link, "up"])

    def add_node(self, node_id: int) -> str:
        """Create the node's namespace and plug it into the bridge (idempotent); returns its IP."""
        with self._mutex:
            if self.destroyed:
                raise NetnsError("the network was destroyed")
            if node_id in self.nodes:
                return self.ip(node_id)
            ns, ip = self.namespace(node_id), self.ip(node_id)
            _run(["ip", "netns", "add", ns])
            self.nodes.add(node_id)
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(["ip", "-n", self.router, "link", "add", f"n{node_id}", "type", "veth",
                  "peer", "name", "eth0", "netns", ns])  # fmt: skip
            _run(["ip", "-n", self.router, "link", "set", f"n{node_id}", "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            enter = self.exec_prefix(node_id)
            _run([*enter, "iptables", "-w", "-N", CHAIN])
            _run([*enter, "iptables", "-w", "-I", "INPUT", "-j", CHAIN])
            _run([*enter, "iptables", "-w", "-I", "OUTPUT", "-j", CHAIN])
            return ip

    def destroy(self) -> None:
        """Delete every namespace of this network and the root veth; safe to call twice."""
        with self._mutex:
            if self.destroyed:
                return
            self.destroyed = True
            if self.owner != os.getpid():
                return  # a forked child: the parent owns the network
            _run(["ip", "link", "delete", root_link(self.subnet)], check=False)
            for node_id in sorted(self.nodes):
                _delete_namespace(self.namespace(node_id))
            _delete_namespace(self.router)
            self.nodes.clear()
            self.cuts.clear()

    # ---- faults ---------------------------------------------------------------------------------------

    def set_cuts(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Make exactly ``pairs`` unable to exchange packets (both ways); every other link works."""
        wanted = {frozenset(p) for p in pairs if p[0] != p[1]}
        with self._mutex:
            if self.destroyed:
                raise NetnsError("the network was destroyed")
            for node_id in sorted(self.nodes):
                peers = sorted(
                    next(iter(pair - {node_id})) for pair in wanted if node_id in pair and pair - {node_id}
                )
                rules = "".join(
                    f"-A {CHAIN} -s {self.ip(p)} -j DROP\n-A {CHAIN} -d {self.ip(p)} -j DROP\n" for p in peers
                )
                # --noflush keeps INPUT/OUTPUT; declaring the chain flushes just it, atomically.
                _run(
                    [*self.exec_prefix(node_id), "iptables-restore", "-w", "--noflush"],
                    stdin=f"*filter\n:{CHAIN} - [0:0]\n{rules}COMMIT\n",
                )
            self.cuts = wanted

    def cut(self, groups: Iterable[Iterable[int]]) -> list[tuple[int, int]]:
        """Partition into ``groups``: nodes in different groups cannot talk; returns the cut pairs."""
        sides = [set(g) for g in groups]
        pairs = [(a, b) for i, x in enumerate(sides) for y in sides[i + 1 :] for a in x for b in y]
        self.set_cuts(pairs)
        return pairs

    def heal(self) -> None:
        """Remove every cut."""
        self.set_cuts([])

    def rules(self, node_id: int) -> str:
        """The node's cut rules as iptables prints them (for debugging and tests)."""
        return _run([*self.exec_prefix(node_id), "iptables", "-w", "-S", CHAIN]).stdout
