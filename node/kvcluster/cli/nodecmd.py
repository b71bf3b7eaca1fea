"""``kvcluster node``: run one storage node (what a pod runs)."""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path

import click

from kvcluster.server import NodeConfig, serve
from kvcluster.storage import Durability
from kvcluster.storage.history import DEFAULT_KEEP
from kvcluster.transport import TlsSettings

from . import loops


def parse_peers(spec: str) -> dict[int, str]:
    """``1=http://a:7000,2=http://b:7000`` -> {1: "http://a:7000", 2: ...}."""
    peers: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        ident, sep, url = part.partition("=")
        if not sep or not ident.strip().isdigit() or not url.strip():
            raise click.BadParameter(f"expected ID=URL, got {part!r}", param_hint="--peers")
        peers[int(ident)] = url.strip().rstrip("/")
    return peers


def node_id_from_hostname(hostname: str) -> int:
    """StatefulSet pods are named ``<name>-<ordinal>``; node ids start at 1."""
    match = re.search(r"-(\d+)$", hostname)
    if not match:
        raise click.UsageError(f"cannot take a node id from host name {hostname!r} (expected NAME-ORDINAL)")
    return int(match.group(1)) + 1


def read_secret(path: str | None, value: str | None) -> str | None:
    if path:
        text = Path(path).read_text().strip()
        return text or None
    return value or None


@click.command("node", context_settings={"auto_envvar_prefix": "KVCLUSTER"})
@click.option("--id", "node_id", type=int, help="Node id (a positive integer).")
@click.option(
    "--id-from-hostname", is_flag=True, help="Use the host name's trailing ordinal plus one as the id."
)
@click.option("--listen", default="127.0.0.1:7000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--advertise-url", default="", help="Base URL peers and clients use to reach this node.")
@click.option("--peers", default="", help="Initial members: ID=URL,ID=URL,...")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--partitions", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--replicas", type=click.IntRange(1, 15), default=3, show_default=True)
@click.option(
    "--cluster-state",
    type=click.Choice(["new", "existing"]),
    default="new",
    show_default=True,
    help="With an empty data dir: 'new' bootstraps the initial layout, 'existing' joins holding nothing.",
)
@click.option(
    "--durability", type=click.Choice([d.value for d in Durability]), default="fsync", show_default=True
)
@click.option("--max-key-bytes", type=click.IntRange(1, 65536), default=1024, show_default=True)
@click.option("--max-value-bytes", type=click.IntRange(1, 64 << 20), default=1 << 20, show_default=True)
@click.option("--token", default=None, help="Bearer token clients must present (prefer --token-file).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None)
@click.option("--admin-token-file", type=click.Path(dir_okay=False), default=None)
@click.option("--cluster-secret-file", type=click.Path(dir_okay=False), default=None)
@click.option("--cluster-secret", default=None, help="Shared secret authenticating peers (prefer the file).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS: PEM chain.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Private key of --tls-cert.")
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA bundle the other nodes' serving certificates chain to (default: the system store).",
)
@click.option(
    "--peer-tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Mutual TLS between nodes: peers must present a certificate from this CA.",
)
@click.option(
    "--peer-tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Certificate presented to peers (default: --tls-cert).",
)
@click.option("--peer-tls-key", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tick-ms", type=click.IntRange(10, 10_000), default=100, show_default=True)
@click.option("--election-ticks", type=click.IntRange(3, 1000), default=10, show_default=True)
@click.option("--request-timeout", type=float, default=5.0, show_default=True)
@click.option("--snapshot-entries", type=click.IntRange(10), default=10_000, show_default=True)
@click.option(
    "--balance-interval",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds between leadership rebalancing rounds when no reshape runs (0: off).",
)
@click.option(
    "--watch-history",
    type=click.IntRange(10),
    default=DEFAULT_KEEP,
    show_default=True,
    help="Revisions of change history each partition keeps, for watches that resume (issue 10).",
)
@click.option(
    "--watch-stall-timeout",
    type=click.FloatRange(0.5),
    default=30.0,
    show_default=True,
    help="Seconds a watcher may leave its stream unread before it is cut off.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds a graceful stop may take before the node logs what it waits on and exits; "
    "keep it below the pod's terminationGracePeriodSeconds.",
)
@click.option(
    "--event-loop",
    type=click.Choice(["uvloop", "asyncio"]),
    default="uvloop",
    show_default=True,
    help="uvloop (libuv) spends about a third less CPU per request than asyncio's own loop.",
)
@click.option("--log-level", default="info", show_default=True)
def node_command(
    node_id: int | None,
    id_from_hostname: bool,
    listen: str,
    advertise_url: str,
    peers: str,
    data_dir: Path,
    partitions: int,
    replicas: int,
    cluster_state: str,
    durability: str,
    max_key_bytes: int,
    max_value_bytes: int,
    token: str | None,
    token_file: str | None,
    admin_token_file: str | None,
    cluster_secret_file: str | None,
    cluster_secret: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    peer_tls_ca: Path | None,
    peer_tls_cert: Path | None,
    peer_tls_key: Path | None,
    tick_ms: int,
    election_ticks: int,
    request_timeout: float,
    snapshot_entries: int,
    balance_interval: float,
    watch_history: int,
    watch_stall_timeout: float,
    shutdown_timeout: float,
    event_loop: str,
    log_level: str,
) -> None:
    """Run one storage node in the foreground until SIGTERM or Ctrl-C.

    Every option can also be given as an environment variable KVCLUSTER_<OPTION>,
    e.g. KVCLUSTER_DATA_DIR or KVCLUSTER_PEERS.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s node %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if id_from_hostname:
        node_id = node_id_from_hostname(socket.gethostname())
    if not node_id or node_id < 1:
        raise click.UsageError("give --id (a positive integer) or --id-from-hostname")
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise click.BadParameter("expected HOST:PORT", param_hint="--listen")
    secret = read_secret(cluster_secret_file, cluster_secret)
    tls = TlsSettings(tls_cert, tls_key, tls_ca, peer_tls_cert, peer_tls_key, peer_tls_ca)
    try:
        tls.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cfg = NodeConfig(
        node_id=node_id,
        data_dir=data_dir,
        listen_host=host or "0.0.0.0",
        listen_port=int(port),
        advertise_url=advertise_url.rstrip("/"),
        peers=parse_peers(peers),
        partitions=partitions,
        replicas=replicas,
        cluster_state=cluster_state,
        durability=Durability(durability),
        max_key_bytes=max_key_bytes,
        max_value_bytes=max_value_bytes,
        client_token=read_secret(token_file, token),
        admin_token=read_secret(admin_token_file, None),
        cluster_secret=secret.encode() if secret else None,
        tick_ms=tick_ms,
        election_ticks=election_ticks,
        request_timeout_s=request_timeout,
        snapshot_entries=snapshot_entries,
        balance_interval_s=balance_interval,
        snapshot_keep=max(1, min(1000, snapshot_entries // 10)),
        watch_history=watch_history,
        watch_stall_s=watch_stall_timeout,
        shutdown_s=shutdown_timeout,
        tls=tls,
    )
    code = loops.run(serve(cfg), event_loop)
    if code:
        logging.shutdown()
        os._exit(code)  # storage failure: do not wait on a writer thread stuck on a dead disk
