"""A node's settings: what the command line (or its environment) gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvcluster.storage import Durability
from kvcluster.storage.history import DEFAULT_KEEP
from kvcluster.transport import TlsSettings


@dataclass(frozen=True)
class NodeConfig:
    node_id: int
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 7000
    advertise_url: str = ""
    peers: dict[int, str] = field(default_factory=dict)
    """Node id -> base URL of the initial members (including this node)."""
    partitions: int = 8
    replicas: int = 3
    cluster_state: str = "new"
    """``new``: an empty data directory bootstraps the initial layout; ``existing``: it joins empty."""
    durability: Durability = Durability.FSYNC
    max_key_bytes: int = 1024
    max_value_bytes: int = 1 << 20
    client_token: str | None = None
    admin_token: str | None = None
    cluster_secret: bytes | None = None
    tick_ms: int = 100
    election_ticks: int = 10
    request_timeout_s: float = 5.0
    snapshot_entries: int = 10_000
    """Compact a partition's log once this many applied entries sit behind its snapshot point."""
    balance_interval_s: float = 30.0
    """How often the meta leader evens out leaderships when no reshape runs (0: never)."""
    snapshot_keep: int = 1_000
    """Entries kept after compaction for followers that are only slightly behind."""
    watch_history: int = DEFAULT_KEEP
    """Revisions of change history each partition keeps for watches that resume."""
    watch_stall_s: float = 30.0
    """A watcher whose connection takes no data for this long is cut off."""
    shutdown_s: float = 10.0
    """A graceful stop still unfinished after this long is given up: the node logs why and exits."""
    tls: TlsSettings = field(default_factory=TlsSettings)
    tls_reload_s: float = 2.0
    """How often the certificate files are checked for a rotation."""

    @property
    def url(self) -> str:
        scheme = "https" if self.tls.serving else "http"
        return self.advertise_url or f"{scheme}://{self.listen_host}:{self.listen_port}"
