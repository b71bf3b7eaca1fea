"""``kvcluster bench-reshape``: how much throughput a cluster keeps while it reshapes under load.

A local cluster serves a steady client load; after a steady window the
cluster is reshaped (new nodes started, partitions split, replicas and
leaders moved) while the load goes on. Operations completed per second are
counted in one-second buckets by the client processes, so the result shows
the steady rate, the mean rate during the reshape and its worst second.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from kvcluster.client import KVError, SyncClient
from kvcluster.local import LocalCluster
from kvcluster.local.ports import free_port_block
from kvcluster.local.reshape import DirectSupervisor, reshape

from . import loops
from .bench import MIXED_PUT_SHARE, split_clients
from .benchstores import open_store


@dataclass
class ReshapeBench:
    steady_ops_per_s: float
    reshape_ops_per_s: float
    worst_second_ops: int
    kept: float
    """Mean throughput during the reshape over the steady throughput."""
    reshape_seconds: float
    errors: int
    steady_window: tuple[float, float]
    reshape_window: tuple[float, float]
    per_second: dict[int, int]


async def _loop_share(
    endpoints: list[str], workload: str, clients: int, seed: int, stop_at: Any, out: Any
) -> None:
    buckets: dict[int, int] = {}
    errors = 0
    value = random.Random(seed).randbytes(100)

    async def one(i: int) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + i)
        n = 0
        while time.time() < stop_at.value:
            is_put = workload == "put" or rng.random() < MIXED_PUT_SHARE
            try:
                if is_put:
                    await kv.put(f"reshape/{seed}/{i}/{n}".encode(), value)
                    n += 1
                else:
                    await kv.get(f"reshape/{seed}/{i}/{rng.randrange(max(1, n))}".encode())
            except KVError:
                errors += 1
                continue
            second = int(time.time())
            buckets[second] = buckets.get(second, 0) + 1

    async with open_store("kvcluster", endpoints, None, 15.0, max(100, clients)) as kv:
        await asyncio.gather(*(one(i) for i in range(clients)))
    out.put((buckets, errors))


def _worker(endpoints: list[str], workload: str, clients: int, seed: int, stop_at: Any, out: Any) -> None:
    loops.run(_loop_share(endpoints, workload, clients, seed, stop_at, out))


def _rate(buckets: dict[int, int], start: float, end: float) -> float:
    """Mean operations per second over the whole seconds inside ``[start, end)``."""
    seconds = range(int(start) + 1, int(end))
    return sum(buckets.get(s, 0) for s in seconds) / max(1, len(seconds))


def run_reshape_bench(
    console: Console,
    *,
    nodes: tuple[int, int],
    partitions: tuple[int, int],
    replicas: int,
    clients: int,
    processes: int,
    steady: float,
    workload: str,
) -> ReshapeBench:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="kvcluster-bench-reshape-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            nodes_count=nodes[0],
            partitions=partitions[0],
            replicas=replicas,
            base_port=free_port_block(nodes[1] + 2),
        )
        cluster.start()
        try:
            cluster.wait_ready(timeout=60)
            stop_at = ctx.Value("d", time.time() + 3600)
            out = ctx.Queue()
            urls = cluster.urls()
            procs = [
                ctx.Process(target=_worker, args=(urls, workload, n, i + 1, stop_at, out), daemon=True)
                for i, n in enumerate(split_clients(clients, processes))
            ]
            for p in procs:
                p.start()
            time.sleep(2.0)  # warm-up: connections, routing tables
            steady_start = time.time()
            console.print(f"steady load: {clients} clients, {steady:g} s ...")
            time.sleep(steady)
            steady_end = time.time()
            console.print(
                f"reshaping {nodes[0]}->{nodes[1]} nodes, {partitions[0]}->{partitions[1]} partitions ..."
            )
            with SyncClient(cluster.urls()) as admin:
                result = reshape(DirectSupervisor(cluster), admin, nodes[1], partitions[1], replicas)
            reshape_end = time.time()
            stop_at.value = time.time()
            buckets: dict[int, int] = {}
            errors = 0
            for _ in procs:
                part, errs = out.get(timeout=60)
                errors += errs
                for s, n in part.items():
                    buckets[s] = buckets.get(s, 0) + n
            for p in procs:
                p.join(timeout=10)
        finally:
            cluster.stop()
    steady_rate = _rate(buckets, steady_start, steady_end)
    during = _rate(buckets, steady_end, reshape_end)
    inside = [buckets.get(s, 0) for s in range(int(steady_end) + 1, int(reshape_end))]
    base = int(steady_start)
    return ReshapeBench(
        steady_ops_per_s=steady_rate,
        reshape_ops_per_s=during,
        worst_second_ops=min(inside, default=0),
        kept=during / steady_rate if steady_rate else 0.0,
        reshape_seconds=result.seconds,
        errors=errors,
        steady_window=(steady_start, steady_end),
        reshape_window=(steady_end, reshape_end),
        per_second={s - base: n for s, n in sorted(buckets.items())},
    )


@click.command("bench-reshape")
@click.option("--from-nodes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--to-nodes", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--from-partitions", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--to-partitions", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--clients", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--steady", type=click.FloatRange(min=2), default=10.0, show_default=True, help="Seconds.")
@click.option("--workload", type=click.Choice(["put", "mixed"]), default="put", show_default=True)
@click.option("--json", "json_file", type=click.Path(dir_okay=False, writable=True))
def bench_reshape_command(
    from_nodes: int,
    to_nodes: int,
    from_partitions: int,
    to_partitions: int,
    replicas: int,
    clients: int,
    processes: int,
    steady: float,
    workload: str,
    json_file: str | None,
) -> None:
    """Throughput of a fresh local cluster before and during a reshape under constant client load."""
    console = Console(stderr=True)
    res = run_reshape_bench(
        console,
        nodes=(from_nodes, to_nodes),
        partitions=(from_partitions, to_partitions),
        replicas=replicas,
        clients=clients,
        processes=processes,
        steady=steady,
        workload=workload,
    )
    click.echo(
        f"steady {res.steady_ops_per_s:.0f} ops/s; during the reshape ({res.reshape_seconds:.1f} s) "
        f"{res.reshape_ops_per_s:.0f} ops/s = {res.kept:.0%} of steady; worst second {res.worst_second_ops} "
        f"ops; errors {res.errors}"
    )
    if json_file:
        Path(json_file).write_text(json.dumps(asdict(res), indent=2) + "\n")
