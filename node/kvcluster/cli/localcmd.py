"""``kvcluster local``: a cluster on this machine, in the foreground, for trying things out."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from kvcluster.local import CLUSTER_FILE, ClusterError, LocalCluster
from kvcluster.local.reshape import CONTROL_FILE, apply_control


def status_table(cluster: LocalCluster) -> Group:
    nodes = Table(title="nodes", expand=False)
    for col in ("id", "pid", "url", "process", "ready", "replicas", "leading"):
        nodes.add_column(col)
    view: dict[str, Any] | None = None
    try:
        view = cluster.cluster_view()
    except ClusterError:
        view = None
    leading: dict[int, int] = {}
    for p in (view or {}).get("partitions", []):
        if p["leader"] is not None:
            leading[p["leader"]] = leading.get(p["leader"], 0) + 1
    reported = {n["id"]: n for n in (view or {}).get("nodes", [])}
    for node in sorted(cluster.nodes.values(), key=lambda n: n.id):
        alive = node.alive()
        rep = reported.get(node.id, {})
        nodes.add_row(
            str(node.id),
            str(node.pid or "-"),
            node.url,
            "[green]running" if alive else "[red]stopped",
            "[green]yes" if alive and cluster.ready(node.id) else "[yellow]no",
            str(rep.get("replicas", "-")),
            str(leading.get(node.id, 0)),
        )
    parts = Table(title="partitions", expand=False)
    for col in ("id", "range", "epoch", "voters", "leader", "term", "commit", "applied"):
        parts.add_column(col)
    for p in (view or {}).get("partitions", []):
        parts.add_row(
            str(p["id"]),
            f"{p['range']['start']}..{p['range']['end']}",
            str(p["epoch"]),
            ",".join(map(str, p["voters"])),
            str(p["leader"] or "-"),
            str(p["term"]),
            str(p["commit"] if p["commit"] is not None else "-"),
            " ".join(f"{n}:{a}" for n, a in p["applied"].items()),
        )
    return Group(nodes, parts)


def _current_seq(data_dir: Path) -> int:
    """Control requests written before this run started are history, not orders."""
    path = data_dir / CONTROL_FILE
    try:
        return int(json.loads(path.read_text()).get("seq", 0)) if path.exists() else 0
    except ValueError:
        return 0


@click.command("local")
@click.option("--nodes", type=click.IntRange(1, 64), default=3, show_default=True)
@click.option("--partitions", type=click.IntRange(1, 1024), default=8, show_default=True)
@click.option("--replicas", type=click.IntRange(1, 15), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 65000), default=7001, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True
)
@click.option("--durability", type=click.Choice(["fsync", "relaxed"]), default="fsync", show_default=True)
@click.option(
    "--refresh", type=float, default=1.0, show_default=True, help="Seconds between status refreshes."
)
def local_command(
    nodes: int,
    partitions: int,
    replicas: int,
    base_port: int,
    host: str,
    data_dir: Path,
    durability: str,
    refresh: float,
) -> None:
    """Start a local cluster in the foreground; Ctrl-C stops it cleanly.

    Each node's id, pid and URL is printed and written to DATA_DIR/cluster.json.
    While it runs, `kvcluster reshape --data-dir DATA_DIR ...` can add and remove nodes.
    Run again with the same --data-dir to resume with the data intact (the saved
    layout wins over --nodes/--partitions/--replicas/--base-port).
    """
    console = Console()
    if replicas > nodes and not (data_dir / CLUSTER_FILE).exists():
        raise click.UsageError(f"--replicas ({replicas}) cannot exceed --nodes ({nodes})")
    cluster = LocalCluster(
        data_dir,
        nodes_count=nodes,
        partitions=partitions,
        replicas=replicas,
        base_port=base_port,
        host=host,
        node_args=["--durability", durability],
    )
    resumed = (data_dir / CLUSTER_FILE).exists()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())  # also when started in the background (SIGINT ignored)
    cluster.start()
    try:
        console.print(
            f"[bold]kvcluster local[/]: {len(cluster.nodes)} nodes, {cluster.partitions} partitions, "
            f"{cluster.replicas} replicas{' (resumed)' if resumed else ''}; "
            f"layout in {data_dir / CLUSTER_FILE}"
        )
        for node in sorted(cluster.nodes.values(), key=lambda n: n.id):
            console.print(f"  node {node.id}  pid {node.pid}  {node.url}  log {node.log_path}")
        try:
            cluster.wait_ready(timeout=60)
        except ClusterError as exc:
            console.print(f"[red]{exc}")
            raise SystemExit(1) from None
        first = cluster.nodes[min(cluster.nodes)]
        other = cluster.nodes[max(cluster.nodes)]
        console.print(
            "[green]ready.[/] Try:\n"
            f"  curl -X PUT --data-binary hello {first.url}/v1/kv/greeting\n"
            f"  curl {other.url}/v1/kv/greeting\n"
            "Ctrl-C stops the cluster."
        )
        seq = _current_seq(data_dir)
        if sys.stdout.isatty():
            with Live(status_table(cluster), console=console, refresh_per_second=2) as live:
                while not stop.wait(refresh):
                    seq = apply_control(cluster, seq)
                    live.update(status_table(cluster))
        else:
            ticks = 0
            while not stop.wait(min(refresh, 1.0)):
                seq = apply_control(cluster, seq)
                ticks += 1
                if ticks % 30 == 0:
                    down = [n.id for n in cluster.nodes.values() if not n.alive()]
                    console.print(f"nodes down: {down}" if down else f"{len(cluster.nodes)} nodes running")
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping nodes ...")
        cluster.stop()
        console.print("stopped; data kept in", str(data_dir))
