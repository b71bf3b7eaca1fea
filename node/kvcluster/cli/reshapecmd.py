"""``kvcluster reshape``: change nodes, partitions and replicas of a running cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvcluster.client import SyncClient
from kvcluster.local import ClusterError
from kvcluster.local.reshape import ControlFileSupervisor, reshape


@click.command("reshape")
@click.option("--nodes", type=click.IntRange(1, 64), required=True, help="Node count to end with.")
@click.option("--partitions", type=click.IntRange(1, 1024), required=True)
@click.option("--replicas", type=click.IntRange(1, 15), required=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="The data dir of the running `kvcluster local`, which starts and stops the node processes.",
)
@click.option(
    "--token", envvar="KVCLUSTER_ADMIN_TOKEN", default=None, help="Admin token, if the nodes want one."
)
@click.option("--timeout", type=float, default=1800.0, show_default=True)
def reshape_command(
    nodes: int, partitions: int, replicas: int, data_dir: Path, token: str | None, timeout: float
) -> None:
    """Reshape a running local cluster, online, with a progress bar.

    Growing starts the new node processes first (through the running `kvcluster
    local`); the cluster then moves replicas and leaders, splits or merges
    partitions; shrinking drains the highest node ids before their processes stop.
    Clients keep reading and writing throughout.
    """
    console = Console()
    try:
        sup = ControlFileSupervisor(data_dir)
    except ClusterError as exc:
        raise click.UsageError(str(exc)) from None
    with (
        SyncClient(sup.endpoints(), token=token) as client,
        Progress(
            TextColumn("[bold]reshape[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        task = progress.add_task("starting", total=None)

        def show(job: dict[str, Any]) -> None:
            total = job.get("steps_total")
            progress.update(
                task,
                total=total if isinstance(total, int) else None,
                completed=int(job.get("steps_done") or 0),
                description=str(job.get("current") or job.get("state") or ""),
            )

        try:
            result = reshape(sup, client, nodes, partitions, replicas, timeout=timeout, on_progress=show)
        except ClusterError as exc:
            console.print(f"[red]reshape failed:[/] {exc}")
            raise SystemExit(1) from None
    console.print(
        f"[green]done[/] in {result.seconds:.1f}s: {result.job.get('steps_done')} steps"
        + (f", started nodes {result.added}" if result.added else "")
        + (f", drained and stopped nodes {result.removed}" if result.removed else "")
    )
