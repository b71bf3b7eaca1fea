"""``kvcluster bench-compare``: kvcluster and etcd side by side, in one run, on this machine.

Absolute figures on a shared two-core machine move by a third between runs;
the ratio between two stores measured minutes apart by the same client, the
same workloads and the same machine is what can be compared over time. Both
clusters get the same member count, fsync on every write (etcd's only mode,
kvcluster's default), loopback, and the same load: sequential new keys for
puts, random keys out of a preloaded set for linearizable gets and for the
90/10 mix. Server CPU is the members' own user + system time in each window.
Both clusters run for the whole benchmark and each row is measured on one
right after the other (see ``run_interleaved``); an idle cluster's heartbeats
cost a few percent of one core (measured here: about 4 % for three kvcluster
nodes with 8 partitions, 3 % for three etcd members).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kvcluster.local import LocalCluster
from kvcluster.local.etcd import LocalEtcd, etcd_binary
from kvcluster.local.ports import free_port_block

from . import loops
from .bench import WORKLOADS, BenchConfig, Result, measure, parse_list, populate, split_clients
from .benchstores import STORES
from .cpusampler import CpuSampler
from .kvcmds import wide_console


@contextlib.contextmanager
def running(
    store: str, nodes: int, partitions: int, replicas: int, node_args: list[str], console: Console
) -> Iterator[tuple[list[str], list[int]]]:
    """A fresh cluster of ``store``: its client URLs and its server pids."""
    with tempfile.TemporaryDirectory(prefix=f"kvcluster-compare-{store}-") as tmp:
        if store == "etcd":
            etcd = LocalEtcd(Path(tmp), members=nodes)
            console.print(f"starting etcd: {nodes} members in {tmp}")
            try:
                etcd.start()
                etcd.wait_ready()
                yield etcd.urls(), etcd.pids()
            finally:
                etcd.stop()
            return
        cluster = LocalCluster(
            Path(tmp),
            nodes_count=nodes,
            partitions=partitions,
            replicas=replicas,
            base_port=free_port_block(nodes),
            node_args=node_args,
        )
        console.print(f"starting kvcluster: {nodes} nodes, {partitions} partitions, {replicas} replicas")
        try:
            cluster.start()
            cluster.wait_ready(timeout=60)
            pids = [n.pid for n in cluster.nodes.values() if n.pid is not None]
            yield cluster.urls(), pids
        finally:
            cluster.stop()


def run_interleaved(
    benches: dict[str, tuple[BenchConfig, CpuSampler]],
    workloads: list[str],
    client_counts: list[int],
    processes: int,
    console: Console,
) -> dict[str, list[Result]]:
    """Each row on every store back to back, the first store alternating from row to row.

    Run one store's whole series and then the other's, and a change in the
    machine's load between them (another job, a thermal step) lands on one
    store only; seconds apart, and in both orders, it lands on both.
    """
    by_store: dict[str, list[Result]] = {store: [] for store in benches}
    stores = list(benches)
    populated: set[str] = set()
    seed = 1
    row = 0
    for workload in workloads:
        for clients in client_counts:
            order = stores[row % len(stores) :] + stores[: row % len(stores)]
            for store in order:
                cfg, cpu = benches[store]
                if workload in ("get", "mixed") and store not in populated:
                    console.print(f"{store}: populating {cfg.keys} keys ...")
                    failed = loops.run(populate(cfg))
                    if failed:
                        console.print(f"[yellow]{failed} of {cfg.keys} keys could not be written")
                    populated.add(store)
                procs = len(split_clients(clients, processes))
                console.print(
                    f"{store} {workload}: {clients} clients, {procs} process(es), {cfg.duration:g} s ..."
                )
                by_store[store].append(measure(cfg, workload, clients, processes, seed, cpu))
            seed += 1
            row += 1
    return by_store


def compare_rows(by_store: dict[str, list[Result]]) -> list[dict[str, Any]]:
    """One row per workload and client count, every store's figures and kvcluster/etcd ratios."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for store, results in by_store.items():
        for r in results:
            row = rows.setdefault((r.workload, r.clients), {"workload": r.workload, "clients": r.clients})
            row[store] = asdict(r)
    for row in rows.values():
        kv, etcd = row.get("kvcluster"), row.get("etcd")
        if kv and etcd:
            row["ratio_ops"] = kv["ops_per_s"] / etcd["ops_per_s"] if etcd["ops_per_s"] else None
            a, b = kv["server_cpu_us_per_op"], etcd["server_cpu_us_per_op"]
            row["ratio_cpu_per_op"] = a / b if a and b else None
    return list(rows.values())


def compare_table(rows: list[dict[str, Any]], stores: list[str], title: str) -> Table:
    table = Table(title=title, expand=False)
    table.add_column("workload")
    table.add_column("clients", justify="right")
    for store in stores:
        for col in ("ops/s", "p50 ms", "p99 ms", "cpu µs/op", "err"):
            table.add_column(f"{store} {col}", justify="right")
    if len(stores) == 2:
        table.add_column("ops ratio", justify="right")
        table.add_column("cpu ratio", justify="right")

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for row in rows:
        cells = [row["workload"], str(row["clients"])]
        for store in stores:
            r = row.get(store)
            if r is None:
                cells += ["-"] * 5
                continue
            cells += [
                num(r["ops_per_s"], ".0f"),
                num(r["p50_ms"], ".2f"),
                num(r["p99_ms"], ".2f"),
                num(r["server_cpu_us_per_op"], ".0f"),
                str(r["errors"]),
            ]
        if len(stores) == 2:
            cells += [num(row.get("ratio_ops"), ".2f"), num(row.get("ratio_cpu_per_op"), ".2f")]
        table.add_row(*cells)
    return table


def machine_note() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in load],
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


@click.command("bench-compare")
@click.option("--stores", default="etcd,kvcluster", show_default=True, help="Which stores, in run order.")
@click.option("--nodes", type=click.IntRange(min=1), default=3, show_default=True, help="Members of each.")
@click.option("--partitions", type=click.IntRange(min=1), default=8, show_default=True, help="kvcluster.")
@click.option("--replicas", type=click.IntRange(min=1), default=3, show_default=True, help="kvcluster only.")
@click.option("--clients", default="1,32", show_default=True, help="Comma-separated client counts.")
@click.option("--workloads", default="put,get,mixed", show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.5), default=10.0, show_default=True)
@click.option("--warmup", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
@click.option("--keys", type=click.IntRange(min=1), default=10_000, show_default=True, help="Preloaded keys.")
@click.option("--value-size", type=click.IntRange(min=0), default=100, show_default=True)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Client worker processes for multi-client rows (one Python process tops out before a cluster).",
)
@click.option("--node-arg", "node_args", multiple=True, help="Extra `kvcluster node` flag (repeatable).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, writable=True), help="Save results.")
def bench_compare_command(
    stores: str,
    nodes: int,
    partitions: int,
    replicas: int,
    clients: str,
    workloads: str,
    duration: float,
    warmup: float,
    keys: int,
    value_size: int,
    processes: int,
    node_args: tuple[str, ...],
    json_file: str | None,
) -> None:
    """Run the same benchmark against a local etcd cluster and a local kvcluster, row by row.

    Prints one table: ops/s, p50/p99 latency and server CPU per operation for
    each store, and the kvcluster/etcd ratios per row. Ratios within one run
    are the figures to compare across runs.
    """
    chosen = parse_list(stores, "--stores")
    if unknown := [s for s in chosen if s not in STORES]:
        raise click.BadParameter(f"unknown store(s) {unknown}; choose from {STORES}", param_hint="--stores")
    if "etcd" in chosen and etcd_binary() is None:
        raise click.ClickException("etcd is not installed (Debian: apt-get install etcd-server)")
    loads = parse_list(workloads, "--workloads")
    if unknown := [w for w in loads if w not in WORKLOADS]:
        raise click.BadParameter(f"unknown workload(s) {unknown}", param_hint="--workloads")
    try:
        counts = [int(c) for c in parse_list(clients, "--clients")]
    except ValueError:
        raise click.BadParameter("expected integers like 1,32", param_hint="--clients") from None
    progress = Console(stderr=True)
    note = machine_note()
    shape_args = (nodes, partitions, min(replicas, nodes), list(node_args))
    with contextlib.ExitStack() as stack:
        benches: dict[str, tuple[BenchConfig, CpuSampler]] = {}
        for store in chosen:
            urls, pids = stack.enter_context(running(store, *shape_args, progress))
            cfg = BenchConfig(
                endpoints=urls,
                token=None,
                keys=keys,
                value_size=value_size,
                key_prefix="bench/",
                timeout=10.0,
                warmup=warmup,
                duration=duration,
                store=store,
                sequential_puts=True,
            )
            benches[store] = (cfg, stack.enter_context(CpuSampler(pids)))
        by_store = run_interleaved(benches, loads, counts, processes, progress)
    rows = compare_rows(by_store)
    shape = f"{nodes} nodes" + (f", kvcluster {partitions} partitions x {min(replicas, nodes)} replicas")
    title = f"kvcluster vs etcd — {shape}, {value_size}-byte values, {duration:g} s windows"
    wide_console().print(compare_table(rows, chosen, title))
    progress.print(
        f"machine: {note['cpus']} cpus {note['machine']}, python {note['python']}, "
        f"load at start {note['load_at_start']}"
    )
    if json_file:
        payload = {
            "machine": note,
            "config": {
                "stores": chosen,
                "nodes": nodes,
                "partitions": partitions,
                "replicas": min(replicas, nodes),
                "clients": counts,
                "workloads": loads,
                "duration": duration,
                "warmup": warmup,
                "keys": keys,
                "value_size": value_size,
                "processes": processes,
                "node_args": list(node_args),
            },
            "rows": rows,
        }
        Path(json_file).write_text(json.dumps(payload, indent=2) + "\n")
