"""``kvcluster bench``: throughput and latency of puts, linearizable gets and a 90/10 mix.

For every client count and workload, that many concurrent client loops (asyncio
tasks sharing one pooled AsyncClient) issue requests back to back for a fixed
duration after a short warm-up; every operation's latency is recorded, and
errors are counted by kind instead of stopping the run. ``--processes N``
spreads the client loops over N worker processes: a single Python process
saturates one core on JSON, HTTP parsing and the event loop long before a
cluster does, so without it the benchmark would mostly measure itself.

The numbers are throughput (operations completed in the measured window per
second) and latency percentiles (nearest rank) in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import multiprocessing
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kvcluster.client import KVError
from kvcluster.local import LocalCluster
from kvcluster.local.ports import free_port_block

from . import loops
from .benchstores import Store, open_store
from .cpusampler import CpuSampler
from .kvcmds import DEFAULT_ENDPOINT, ENDPOINT_ENV, read_token, split_endpoints, wide_console

WORKLOADS = ("put", "get", "mixed")
MIXED_PUT_SHARE = 0.10
POPULATE_CONCURRENCY = 64


@dataclass(frozen=True)
class BenchConfig:
    """What every client loop needs; picklable, so worker processes get it as is."""

    endpoints: list[str]
    token: str | None
    keys: int
    value_size: int
    key_prefix: str
    timeout: float
    warmup: float
    duration: float
    store: str = "kvcluster"
    """Which store the loops drive: ``kvcluster`` (its own client) or ``etcd`` (its JSON gateway)."""
    sequential_puts: bool = False
    """Puts write new keys in sequence (``<prefix>seq/<loop>/<n>``) instead of random existing ones."""

    def key_names(self) -> list[bytes]:
        return [f"{self.key_prefix}{i:08d}".encode() for i in range(self.keys)]


@dataclass
class Share:
    """What one process measured: latencies of successful operations and errors by kind."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    window: float = 0.0
    start: float = 0.0
    """Wall-clock start of the measured window (``time.time()``), to line up server CPU samples."""


@dataclass
class Result:
    workload: str
    clients: int
    processes: int
    duration: float
    ops: int
    ops_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    errors: int
    error_kinds: dict[str, int]
    server_cpu_us_per_op: float | None = None
    """Server processes' CPU time (user + system, all threads) in the window, per completed operation."""
    server_cpu_cores: float | None = None
    """The same CPU time as cores kept busy on average over the window."""

    @classmethod
    def from_shares(cls, workload: str, clients: int, processes: int, shares: list[Share]) -> Result:
        latencies = sorted(x for s in shares for x in s.latencies)
        errors: Counter[str] = Counter()
        for s in shares:
            errors.update(s.errors)
        window = max((s.window for s in shares), default=0.0) or 1e-9
        return cls(
            workload=workload,
            clients=clients,
            processes=processes,
            duration=round(window, 3),
            ops=len(latencies),
            ops_per_s=len(latencies) / window,
            p50_ms=percentile_ms(latencies, 0.50),
            p99_ms=percentile_ms(latencies, 0.99),
            p999_ms=percentile_ms(latencies, 0.999),
            errors=sum(errors.values()),
            error_kinds=dict(errors),
        )


def percentile_ms(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted latencies in seconds, as milliseconds."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] * 1000.0


def split_clients(clients: int, processes: int) -> list[int]:
    """Spread client loops as evenly as possible; never more processes than clients."""
    processes = max(1, min(processes, clients))
    base, extra = divmod(clients, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


# ---- the load -------------------------------------------------------------------------------------------


async def client_loop(
    kv: Store,
    workload: str,
    keys: list[bytes],
    value: bytes,
    start: float,
    end: float,
    rng: random.Random,
    share: Share,
    sequential: bytes | None = None,
) -> None:
    """Issue operations back to back until ``end``; record those that start in ``[start, end)``.

    With ``sequential`` (a key prefix) puts write fresh keys ``sequential + n``, as a log or an
    event store would; reads always pick a random existing key.
    """
    written = 0
    while (began := time.time()) < end:
        is_put = workload == "put" or (workload == "mixed" and rng.random() < MIXED_PUT_SHARE)
        if is_put and sequential is not None:
            key = sequential + b"%010d" % written
            written += 1
        else:
            key = keys[rng.randrange(len(keys))]
        error: str | None = None
        t0 = time.perf_counter()
        try:
            if is_put:
                await kv.put(key, value)
            else:
                await kv.get(key)
        except KVError as exc:
            error = f"{type(exc).__name__}:{exc.code}"
        except Exception as exc:  # a benchmark counts failures, it does not stop on them
            error = type(exc).__name__
        elapsed = time.perf_counter() - t0
        if began >= start:
            if error is None:
                share.latencies.append(elapsed)
            else:
                share.errors[error] += 1


async def run_share(cfg: BenchConfig, workload: str, clients: int, seed: int, start: float) -> Share:
    """``clients`` concurrent loops in this process: warm-up until ``start``, measure ``duration``."""
    share = Share()
    keys = cfg.key_names()
    value = random.Random(seed).randbytes(cfg.value_size)
    end = start + cfg.duration
    async with open_store(cfg.store, cfg.endpoints, cfg.token, cfg.timeout, max(100, clients)) as kv:
        await asyncio.gather(
            *(
                client_loop(
                    kv,
                    workload,
                    keys,
                    value,
                    start,
                    end,
                    random.Random(seed * 1000 + i),
                    share,
                    f"{cfg.key_prefix}seq/{seed}-{i}/".encode() if cfg.sequential_puts else None,
                )
                for i in range(clients)
            )
        )
    share.window = cfg.duration
    share.start = start
    return share


def process_main(
    cfg: BenchConfig,
    workload: str,
    clients: int,
    seed: int,
    barrier: Any,
    results: Any,
) -> None:
    """Entry point of a worker process: start together with the others, report one Share."""
    try:
        barrier.wait(timeout=60)
        share = loops.run(run_share(cfg, workload, clients, seed, time.time() + cfg.warmup))
        results.put((share.latencies, dict(share.errors), share.window, share.start))
    except BaseException as exc:
        results.put(([], {f"worker:{type(exc).__name__}": 1}, 0.0, 0.0))
        raise


def run_in_processes(cfg: BenchConfig, workload: str, clients: int, processes: int, seed: int) -> list[Share]:
    """Run one measurement over worker processes (spawned: no inherited loops or threads)."""
    ctx = multiprocessing.get_context("spawn")
    split = split_clients(clients, processes)
    barrier = ctx.Barrier(len(split))
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=process_main,
            args=(cfg, workload, n, seed + i, barrier, results),
            name=f"kvcluster-bench-{i}",
            daemon=True,
        )
        for i, n in enumerate(split)
    ]
    for p in procs:
        p.start()
    shares: list[Share] = []
    deadline = time.monotonic() + 90 + cfg.warmup + cfg.duration + cfg.timeout
    try:
        while len(shares) < len(procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise click.ClickException("bench worker processes did not report in time")
            try:
                latencies, errors, window, began = results.get(timeout=min(remaining, 1.0))
            except Exception:  # queue.Empty: check the workers are still alive
                if all(not p.is_alive() for p in procs) and results.empty():
                    raise click.ClickException("bench worker processes died") from None
                continue
            shares.append(Share(list(latencies), Counter(errors), float(window), float(began)))
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return shares


async def populate(cfg: BenchConfig) -> int:
    """Write every benchmark key once, so reads find values; returns the number of failures."""
    value = random.Random(0).randbytes(cfg.value_size)
    failures = 0
    sem = asyncio.Semaphore(POPULATE_CONCURRENCY)
    async with open_store(cfg.store, cfg.endpoints, cfg.token, cfg.timeout, POPULATE_CONCURRENCY) as kv:

        async def one(key: bytes) -> None:
            nonlocal failures
            async with sem:
                try:
                    await kv.put(key, value)
                except KVError:
                    failures += 1

        await asyncio.gather(*(one(k) for k in cfg.key_names()))
    return failures


def measure(
    cfg: BenchConfig, workload: str, clients: int, processes: int, seed: int, cpu: CpuSampler | None = None
) -> Result:
    """One workload at one client count; with ``cpu``, the servers' CPU cost per operation too."""
    procs = len(split_clients(clients, processes))
    if processes > 1:
        shares = run_in_processes(cfg, workload, clients, processes, seed)
    else:
        shares = [loops.run(run_share(cfg, workload, clients, seed, time.time() + cfg.warmup))]
    result = Result.from_shares(workload, clients, procs, shares)
    starts = [s.start for s in shares if s.start]
    if cpu is not None and starts and result.ops:
        cpu.sample()  # the window has just closed: make sure a sample lies past its end
        start = min(starts)
        used = cpu.between(start, start + cfg.duration)
        if used is not None:
            result.server_cpu_us_per_op = used / result.ops * 1e6
            result.server_cpu_cores = used / cfg.duration
    return result


def run_bench(
    cfg: BenchConfig,
    workloads: list[str],
    client_counts: list[int],
    processes: int,
    console: Console | None = None,
    seed: int = 1,
    cpu: CpuSampler | None = None,
) -> list[Result]:
    """Every workload at every client count, in that order; keys populated before the first read."""
    results: list[Result] = []
    populated = False
    for workload in workloads:
        if workload in ("get", "mixed") and not populated:
            if console:
                console.print(f"populating {cfg.keys} keys ...")
            failed = loops.run(populate(cfg))
            if failed and console:
                console.print(f"[yellow]{failed} of {cfg.keys} keys could not be written")
            populated = True
        for clients in client_counts:
            procs = len(split_clients(clients, processes))
            if console:
                console.print(f"{workload}: {clients} clients, {procs} process(es), {cfg.duration:g} s ...")
            results.append(measure(cfg, workload, clients, processes, seed, cpu))
            seed += 1
    return results


def results_table(results: list[Result]) -> Table:
    table = Table(title="kvcluster bench", expand=False)
    for col in ("workload", "clients", "procs", "ops", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"):
        table.add_column(col, justify="left" if col == "workload" else "right")

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    for r in results:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(r.error_kinds.items()))
        table.add_row(
            r.workload,
            str(r.clients),
            str(r.processes),
            str(r.ops),
            f"{r.ops_per_s:.0f}",
            ms(r.p50_ms),
            ms(r.p99_ms),
            ms(r.p999_ms),
            f"{r.errors} ({kinds})" if r.errors else "0",
        )
    return table


def parse_list(value: str, name: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter("must not be empty", param_hint=name)
    return items


@contextlib.contextmanager
def fresh_local_cluster(nodes: int, console: Console) -> Iterator[list[str]]:
    """A throw-away local cluster (fsync durability, the defaults) on free ports."""
    with tempfile.TemporaryDirectory(prefix="kvcluster-bench-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            nodes_count=nodes,
            partitions=8,
            replicas=min(3, nodes),
            base_port=free_port_block(nodes),
        )
        console.print(
            f"starting a local cluster: {nodes} nodes, 8 partitions, {min(3, nodes)} replicas in {tmp}"
        )
        cluster.start()
        try:
            cluster.wait_ready(timeout=60)
            yield cluster.urls()
        finally:
            cluster.stop()


@click.command("bench")
@click.option(
    "--endpoint",
    "-e",
    "endpoints",
    multiple=True,
    envvar=ENDPOINT_ENV,
    default=[DEFAULT_ENDPOINT],
    show_default=True,
    show_envvar=True,
    help="Node URL; repeat (or comma-separate) to spread over nodes as fallbacks.",
)
@click.option("--token", envvar="KVCLUSTER_TOKEN", default=None)
@click.option("--token-file", envvar="KVCLUSTER_TOKEN_FILE", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--clients", default="1,32", show_default=True, help="Comma-separated concurrent client counts."
)
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds.")
@click.option("--warmup", type=click.FloatRange(min=0.0), default=1.0, show_default=True, help="Seconds.")
@click.option("--keys", type=click.IntRange(min=1), default=1000, show_default=True, help="Key space size.")
@click.option("--value-size", type=click.IntRange(min=0), default=100, show_default=True, help="Bytes.")
@click.option("--key-prefix", default="bench/", show_default=True)
@click.option(
    "--workloads",
    default="put,get,mixed",
    show_default=True,
    help="put, get (linearizable) and/or mixed (90% get, 10% put).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to spread the clients over (Python is CPU-bound).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Per operation."
)
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False, writable=True), help="Save results here."
)
@click.option(
    "--local",
    "local_nodes",
    type=click.IntRange(min=1),
    default=None,
    help="Start a fresh local cluster of this many nodes (8 partitions, 3 replicas at most) for the run.",
)
def bench_command(
    endpoints: tuple[str, ...],
    token: str | None,
    token_file: str | None,
    clients: str,
    duration: float,
    warmup: float,
    keys: int,
    value_size: int,
    key_prefix: str,
    workloads: str,
    processes: int,
    timeout: float,
    json_file: str | None,
    local_nodes: int | None,
) -> None:
    """Measure ops/s and p50/p99/p99.9 latency of puts, linearizable gets and a 90/10 mix.

    Each client count of --clients runs each workload for --duration seconds
    after --warmup seconds. Keys are written once before the first read
    workload. Errors are counted by kind, never fatal.
    """
    try:
        client_counts = [int(c) for c in parse_list(clients, "--clients")]
    except ValueError:
        raise click.BadParameter("expected integers like 1,32", param_hint="--clients") from None
    if any(c < 1 for c in client_counts):
        raise click.BadParameter("client counts must be >= 1", param_hint="--clients")
    chosen = parse_list(workloads, "--workloads")
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        raise click.BadParameter(
            f"unknown workload(s) {unknown}; choose from {WORKLOADS}", param_hint="--workloads"
        )
    cfg = BenchConfig(
        endpoints=split_endpoints(endpoints),
        token=read_token(token, token_file),
        keys=keys,
        value_size=value_size,
        key_prefix=key_prefix,
        timeout=timeout,
        warmup=warmup,
        duration=duration,
    )
    progress = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        if local_nodes is not None:
            cfg = dataclasses.replace(
                cfg, endpoints=stack.enter_context(fresh_local_cluster(local_nodes, progress))
            )
        results = run_bench(cfg, chosen, client_counts, processes, console=progress)
    wide_console().print(results_table(results))
    if json_file:
        payload = {
            "config": {**asdict(cfg), "token": None, "processes": processes, "clients": client_counts},
            "results": [asdict(r) for r in results],
        }
        Path(json_file).write_text(json.dumps(payload, indent=2) + "\n")
