"""What a torture run does: cluster shape, workload, faults, durations, budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .nemesis import NEMESES, Timing, variants_of
from .script import Shape
from .workload import WORKLOADS, ClientSettings

FINAL_RESTARTS = ("term", "kill", "power-cut")


def parse_nemeses(spec: str) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """``crash,disk:full+unwritable`` / ``all`` / ``none`` -> (names in canonical order, variants).

    A nemesis may be narrowed to some of its variants with ``name:v1+v2``;
    without it, every variant is used.
    """
    names: set[str] = set()
    variants: dict[str, tuple[str, ...]] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, narrowed = part.partition(":")
        if name == "all":
            names |= set(NEMESES)
            continue
        if name == "none":
            continue
        if name not in NEMESES:
            raise ValueError(f"unknown nemesis {name!r} (choose from {', '.join(NEMESES)}, all, none)")
        names.add(name)
        if narrowed:
            chosen = tuple(v for v in narrowed.split("+") if v)
            unknown = sorted(set(chosen) - set(variants_of(name)))
            if unknown:
                raise ValueError(
                    f"{name} has no variant {', '.join(unknown)} (known: {', '.join(variants_of(name))})"
                )
            variants[name] = chosen
    return tuple(n for n in NEMESES if n in names), variants


@dataclass
class Config:
    """A run. ``duration`` is the time the clients run; faults stop at its end.

    ``netns``: None = automatic (namespaces when the partition nemesis is
    wanted and namespaces are available). ``disk`` volumes are made only
    when the disk nemesis is wanted.
    """

    out: Path
    workload: str = "mixed"
    nemeses: tuple[str, ...] = ()
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Nemesis -> the only variants to use (e.g. ``{"disk": ("full",)}``); absent: all of them."""
    duration: float = 60.0
    keys: int = 20
    concurrency: int = 10
    seed: int = 0
    lease_slots: int = 2
    """Clients running lease episodes next to the register workload (0: none); see torture/leases.py."""
    lease_ttl: float = 2.0
    watch: bool = True
    """Keep watch streams over the workloads' keys and check what they deliver (torture/watcher.py)."""
    watch_catch_up: float = 30.0
    """Seconds the watch streams get after the final reads to deliver every acknowledged write."""
    watch_max_events: int = 1_000_000
    """Watch events kept in memory; past it the record is cut short (and ``missing`` not judged)."""
    nodes: int = 3
    partitions: int = 4
    replicas: int = 3
    netns: bool | None = None
    base_port: int | None = None
    tick_ms: int = 50
    election_ticks: int = 10
    request_timeout: float = 2.0
    snapshot_entries: int = 1000
    """Low, so log compaction and snapshot installs happen during a run."""
    node_args: list[str] = field(default_factory=list)
    final_restart: str = "term"
    """How every node is stopped before the durability reads: ``term`` (SIGTERM, each must
    exit 0), ``kill`` (kill -9 all at once) or ``power-cut`` (every data volume's file
    system shut down at once: what was not fsynced is lost; needs root)."""
    check_budget: float = 120.0
    check_workers: int = 1
    preload: int = 0
    """Keys of 1 KiB written before the load starts (outside the history), checked after the restart."""
    script: tuple[Shape, ...] = ()
    """A planned walk through shapes instead of random faults (``--script``); the run lasts as long."""
    client: ClientSettings = field(default_factory=ClientSettings)
    timing: Timing = field(default_factory=Timing)
    fault_gap: tuple[float, float] = (1.0, 3.0)
    ready_timeout: float = 90.0
    volume_mb: int = 128
    progress_every: float = 10.0
    """Seconds between progress lines (0: none)."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r} (choose from {', '.join(WORKLOADS)})")
        unknown = sorted(set(self.nemeses) - set(NEMESES))
        if unknown:
            raise ValueError(f"unknown nemeses {unknown}")
        if self.nodes < 1 or self.replicas < 1 or self.replicas > self.nodes:
            raise ValueError("need 1 <= replicas <= nodes")
        if self.final_restart not in FINAL_RESTARTS:
            raise ValueError(f"final_restart must be one of {', '.join(FINAL_RESTARTS)}")
        for name, chosen in self.variants.items():
            unknown = sorted(set(chosen) - set(variants_of(name)))
            if unknown:
                raise ValueError(f"{name} has no variant {', '.join(unknown)}")
        if self.keys < 1 or self.concurrency < 1 or self.duration <= 0:
            raise ValueError("keys, concurrency and duration must be positive")
        if self.lease_slots < 0 or self.lease_ttl < 1:
            raise ValueError("lease_slots must be >= 0 and lease_ttl >= 1 s (the server's minimum)")
        if self.watch_catch_up < 0 or self.watch_max_events < 1:
            raise ValueError("watch_catch_up must be >= 0 and watch_max_events >= 1")

    def node_flags(self) -> list[str]:
        return [
            "--tick-ms",
            str(self.tick_ms),
            "--election-ticks",
            str(self.election_ticks),
            "--request-timeout",
            str(self.request_timeout),
            "--snapshot-entries",
            str(self.snapshot_entries),
            "--log-level",
            "info",
            *self.node_args,
        ]
