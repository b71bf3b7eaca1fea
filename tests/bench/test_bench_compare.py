"""``kvcluster bench-compare``: the comparison with etcd runs end to end and its arithmetic holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvcluster.cli.bench import Result
from kvcluster.cli.benchcompare import compare_rows
from kvcluster.cli.cpusampler import CpuSampler, process_cpu_seconds
from kvcluster.local.etcd import etcd_binary
from tests.environment import cannot_run


def result(workload: str, clients: int, ops_per_s: float, cpu: float | None) -> Result:
    return Result(workload, clients, 1, 1.0, int(ops_per_s), ops_per_s, 1.0, 2.0, 3.0, 0, {}, cpu, None)


def test_rows_pair_the_stores_and_divide_kvcluster_by_etcd() -> None:
    rows = compare_rows(
        {
            "etcd": [result("put", 1, 400.0, 1000.0), result("get", 32, 2000.0, 250.0)],
            "kvcluster": [result("put", 1, 600.0, 500.0), result("get", 32, 1000.0, None)],
        }
    )
    by_key = {(r["workload"], r["clients"]): r for r in rows}
    assert by_key[("put", 1)]["ratio_ops"] == pytest.approx(1.5)
    assert by_key[("put", 1)]["ratio_cpu_per_op"] == pytest.approx(0.5)
    assert by_key[("get", 32)]["ratio_ops"] == pytest.approx(0.5)
    assert by_key[("get", 32)]["ratio_cpu_per_op"] is None  # no CPU figure: no ratio, not a made-up one


def test_cpu_sampler_measures_a_busy_process_and_not_an_idle_one() -> None:
    spin = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        with CpuSampler([busy.pid], interval=0.02) as hot, CpuSampler([idle.pid], interval=0.02) as cold:
            time.sleep(0.3)
            start = time.time()
            time.sleep(1.0)
            end = time.time()
            time.sleep(0.1)
        used_hot, used_cold = hot.between(start, end), cold.between(start, end)
        assert used_hot is not None and used_cold is not None
        # Two cores shared with other work: the busy loop gets a good share of one, the sleeper none.
        assert used_hot > 0.3
        assert used_cold < 0.05
        assert hot.between(end + 10, end + 11) is None  # outside the samples: unknown, not zero
    finally:
        for p in (busy, idle):
            p.kill()
            p.wait()
    assert process_cpu_seconds(busy.pid) is None


def test_bench_compare_runs_both_stores_and_writes_the_table(tmp_path: Path) -> None:
    if etcd_binary() is None:
        cannot_run("etcd is not installed (Debian: etcd-server)")
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "kvcluster", "bench-compare",
            "--workloads", "put,get", "--clients", "2", "--duration", "1", "--warmup", "0.3",
            "--keys", "50", "--processes", "1", "--json", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ops ratio" in proc.stdout
    data = json.loads(out.read_text())
    assert data["machine"]["cpus"] == os.cpu_count()
    rows = {(r["workload"], r["clients"]): r for r in data["rows"]}
    assert set(rows) == {("put", 2), ("get", 2)}
    for row in rows.values():
        for store in ("etcd", "kvcluster"):
            figures = row[store]
            assert figures["ops"] > 0 and figures["errors"] == 0, (store, figures)
            assert figures["server_cpu_us_per_op"] > 0
            assert figures["p50_ms"] <= figures["p99_ms"]
        assert row["ratio_ops"] == pytest.approx(row["kvcluster"]["ops_per_s"] / row["etcd"]["ops_per_s"])
