"""The chart's dashboard and alerts in a real Prometheus scraping three real nodes.

Where Debian's `prometheus` is installed: a Prometheus on 127.0.0.1 scrapes a local 3-node cluster
every second (each node labelled as the chart's ServiceMonitor would label it) while a client writes
and a reshape runs. Then every dashboard query must return data, and no alert may fire on the healthy
cluster except those whose condition the test itself created. Without the binary the static checks
of test_monitoring.py still run, and this one skips, or fails where every tool must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from kvcluster.local import LocalCluster
from kvcluster.local.ports import free_port_block, free_ports
from tests.environment import cannot_run

from .test_monitoring import DASHBOARD_FILE, alert_rules, dashboard_queries, rendered

pytestmark = pytest.mark.slow

FAST_TICKS = ["--tick-ms", "50", "--election-ticks", "10"]
# Dashboard queries that may rightly be empty on a healthy cluster.
MAY_BE_EMPTY = (
    'code=~"5.."',  # no server errors
    "kvcluster_raft_snapshots_sent_total",  # no follower fell behind the log
)


@contextlib.contextmanager
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(
        tmp_path / "cluster",
        nodes_count=3,
        partitions=4,
        replicas=3,
        base_port=free_port_block(7),
        node_args=FAST_TICKS,
    )
    try:
        cluster.start()
        cluster.wait_ready(timeout=30)
        yield cluster
    finally:
        cluster.stop()


def prometheus_config(cluster: LocalCluster, rules: Path) -> dict[str, Any]:
    """One scrape job as the ServiceMonitor makes it: job kvcluster; namespace, pod, kvcluster labels."""
    groups = [
        {
            "targets": [url.removeprefix("http://")],
            "labels": {"namespace": "live", "kvcluster": "demo", "pod": f"demo-{i}"},
        }
        for i, url in enumerate(cluster.urls())
    ]
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "kvcluster", "metrics_path": "/metrics", "static_configs": groups}],
    }


@contextlib.asynccontextmanager
async def prometheus(binary: str, config: dict[str, Any], tmp_path: Path) -> AsyncIterator[str]:
    (config_file := tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert proc.returncode is None, (tmp_path / "prometheus.log").read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/ready") as resp:
                        if resp.status == 200:
                            break
                assert time.monotonic() < deadline, "Prometheus not ready after 30 s"
                await asyncio.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 15)
        log.close()


async def query(session: aiohttp.ClientSession, url: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_query(session: aiohttp.ClientSession, url: str, expr: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await query(session, url, expr):
        assert time.monotonic() < deadline, f"no data after {timeout} s for {expr}"
        await asyncio.sleep(0.5)


async def write_load(node: str, stop: asyncio.Event) -> int:
    """Puts, gets and a miss through one node until told to stop: what the dashboard plots."""
    done = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            key = f"load-{done % 50}"
            async with session.put(f"{node}/v1/kv/{key}", data=b"v") as resp:
                await resp.read()
            async with session.get(f"{node}/v1/kv/{key}") as resp:
                await resp.read()
            async with session.get(f"{node}/v1/kv/missing") as resp:
                await resp.read()
            done += 1
            await asyncio.sleep(0.01)
    return done


async def test_dashboard_and_alerts_in_a_real_prometheus(helm4: Path, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        cannot_run("prometheus is not installed (Debian package prometheus)")
    rule = rendered(helm4, "metrics.prometheusRule.enabled=true")["PrometheusRule"]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    with local_cluster(tmp_path) as cluster:
        n1 = cluster.urls()[0]
        async with (
            prometheus(binary, prometheus_config(cluster, rules_file), tmp_path) as prom,
            aiohttp.ClientSession() as session,
        ):
            await wait_query(session, prom, 'sum(up{job="kvcluster"}) == 3')
            stop = asyncio.Event()
            load = asyncio.create_task(write_load(n1, stop))
            try:
                body = {"nodes": [1, 2, 3], "partitions": 5, "replicas": 3}
                async with session.post(f"{n1}/v1/admin/reshape", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                await wait_query(session, prom, 'kvcluster_reshape_job_state{state="done"} == 1')
                await wait_query(session, prom, "kvcluster_reshape_steps_planned")
                # Enough samples under load for rate() over the dashboard's window.
                await wait_query(session, prom, 'rate(kvcluster_http_requests_total{op="put"}[15s]) > 0')
                # The misses too (the 4xx panel): under load their series can reach the window later.
                await wait_query(session, prom, 'rate(kvcluster_http_requests_total{code=~"4.."}[15s]) > 0')
                dashboard = json.loads(DASHBOARD_FILE.read_text())
                exprs = dashboard_queries(dashboard, rate_interval="15s")
                empty = [e for e in exprs if not await query(session, prom, e)]
            finally:
                stop.set()
                assert await load > 0
            assert [e for e in empty if not any(m in e for m in MAY_BE_EMPTY)] == []
            # A healthy cluster fires nothing. Moments without a leader (a split's new partition, a
            # leadership transfer while leaders are balanced) may make an alert pending: they must
            # pass well within its `for`.
            assert await query(session, prom, 'ALERTS{alertstate="firing"}') == []
            deadline = time.monotonic() + 30
            while pending := await query(session, prom, "ALERTS"):
                assert time.monotonic() < deadline, [a["metric"] for a in pending]
                await asyncio.sleep(0.5)
            # Each alert expression is evaluated against the real series without error.
            for r in alert_rules(rule):
                await query(session, prom, r["expr"])
