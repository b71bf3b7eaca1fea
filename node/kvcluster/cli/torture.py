"""``kvcluster torture``: a fault-injection run with a linearizability and durability verdict.

Exit codes: 0 pass (linearizable, 0 acknowledged writes lost, every fault
recovered), 1 fail (violation, lost write, or the store misbehaved under a
fault), 2 unknown (the checker ran out of time on some key), 3 the run could
not be carried out. Usage errors exit 2 as well (click), with a usage message.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from kvcluster.torture import WORKLOADS, Config, parse_nemeses, render, replay, run
from kvcluster.torture.nemesis import NEMESES
from kvcluster.torture.script import ISSUE_SCENARIO, Shape


def _nemeses(
    ctx: click.Context, param: click.Parameter, value: str
) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    try:
        return parse_nemeses(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_script(text: str | None) -> tuple[Shape, ...]:
    if not text:
        return ()
    if text.strip() == "issue":
        return ISSUE_SCENARIO
    try:
        return tuple(Shape.parse(part) for part in text.split())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--script") from None


@click.command("torture")
@click.option(
    "--workload",
    type=click.Choice(sorted(WORKLOADS)),
    default="mixed",
    show_default=True,
    help="mixed: read/write/cas/delete; register: read/write; cas: read/cas.",
)
@click.option(
    "--nemesis",
    "nemeses",
    default="all",
    show_default=True,
    callback=_nemeses,
    help=f"Comma-separated faults to inject: {','.join(NEMESES)}, or all, or none;"
    " NAME:V1+V2 narrows one to some of its variants (e.g. disk:full+unwritable).",
)
@click.option(
    "--duration", type=click.FloatRange(1), default=60.0, show_default=True, help="Seconds of load."
)
@click.option("--keys", type=click.IntRange(1), default=20, show_default=True)
@click.option("--concurrency", type=click.IntRange(1), default=10, show_default=True, help="Client slots.")
@click.option(
    "--lease-slots",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="Clients running lease episodes (grant, bind, keep alive, revoke or expire); 0: none.",
)
@click.option(
    "--seed", type=int, default=None, help="Seed of the fault schedule and the clients (default: time)."
)
@click.option("--nodes", type=click.IntRange(1, 250), default=3, show_default=True)
@click.option("--partitions", type=click.IntRange(1), default=4, show_default=True)
@click.option("--replicas", type=click.IntRange(1), default=3, show_default=True)
@click.option(
    "--netns/--no-netns",
    default=None,
    help="Run the nodes in network namespaces (default: when the partition nemesis is on and root).",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output directory."
)
@click.option(
    "--check-budget", type=click.FloatRange(1), default=120.0, show_default=True, help="Checker seconds."
)
@click.option("--check-workers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--snapshot-entries", type=click.IntRange(10), default=1000, show_default=True)
@click.option(
    "--final-restart",
    type=click.Choice(["term", "kill", "power-cut"]),
    default="term",
    show_default=True,
    help="How all nodes stop before the durability reads (power-cut: file systems die at once; root).",
)
@click.option(
    "--node-arg",
    "node_args",
    multiple=True,
    help="Extra flag for every node, repeatable (e.g. --node-arg=--durability=relaxed).",
)
@click.option(
    "--check",
    "check_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Do not run anything: re-judge a previous run's directory (history.jsonl, summary.json).",
)
@click.option(
    "--script",
    "script",
    default=None,
    help="Instead of random faults, walk through shapes under load: 'issue' (partitions 4-8-16-4, "
    "replicas 3-5-3, nodes 3-5-3, a kill -9 mid-reshape) or 'N,P,R[,kill] N,P,R ...'.",
)
@click.option(
    "--preload",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Write this many 1 KiB keys before the run, so reshapes move real data (checked at the end).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the harness does.")
def torture_command(
    workload: str,
    nemeses: tuple[tuple[str, ...], dict[str, tuple[str, ...]]],
    duration: float,
    keys: int,
    concurrency: int,
    lease_slots: int,
    seed: int | None,
    nodes: int,
    partitions: int,
    replicas: int,
    netns: bool | None,
    out: Path | None,
    check_budget: float,
    check_workers: int,
    snapshot_entries: int,
    final_restart: str,
    node_args: tuple[str, ...],
    check_dir: Path | None,
    script: str | None,
    preload: int,
    verbose: bool,
) -> None:
    """Run clients against a local cluster while injecting faults, then check what they saw.

    Starts NODES real node processes, runs CONCURRENCY clients doing reads,
    writes, compare-and-sets and deletes on KEYS keys for DURATION seconds
    while the nemeses crash (kill -9), pause (SIGSTOP), partition (network
    namespaces, root only), break disks (loop volumes, root only) and reshape
    the cluster. Then it heals everything, restarts every node, checks that no
    acknowledged write was lost and that the history is linearizable.
    """
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if check_dir is not None:
        summary = replay(check_dir, check_budget, check_workers)
        render(summary, console)
        sys.exit(summary.exit_code)
    if seed is None:
        seed = int(time.time()) % 1_000_000
    if replicas > nodes:
        raise click.BadParameter("cannot exceed --nodes", param_hint="--replicas")
    out = out or Path(f"torture-{time.strftime('%Y%m%d-%H%M%S')}-s{seed}")
    config = Config(
        out=out,
        workload=workload,
        nemeses=nemeses[0],
        variants=nemeses[1],
        duration=duration,
        keys=keys,
        concurrency=concurrency,
        lease_slots=lease_slots,
        seed=seed,
        nodes=nodes,
        partitions=partitions,
        replicas=replicas,
        netns=netns,
        check_budget=check_budget,
        check_workers=check_workers,
        snapshot_entries=snapshot_entries,
        node_args=list(node_args),
        final_restart=final_restart,
        script=parse_script(script),
        preload=preload,
    )
    if config.script:
        config.nemeses, config.variants = (), {}  # the script is the fault plan; nothing random on top
    started = time.monotonic()

    def progress(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - started:7.1f}s[/dim] {text}", highlight=False)

    summary = run(config, progress)
    render(summary, console)
    sys.exit(summary.exit_code)
