"""``kvcluster put|get|delete|scan|status|bench`` through click's CliRunner against a real cluster."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kvcluster.cli.main import cli

from .conftest import NodeCluster, dead_endpoint

Invoke = Callable[..., Result]


@pytest.fixture
def run(cluster: NodeCluster) -> Invoke:
    """Invoke ``kvcluster ARGS`` with KVCLUSTER_ENDPOINT naming every node of the cluster."""
    runner = CliRunner()
    env = {"KVCLUSTER_ENDPOINT": ",".join(cluster.endpoints)}

    def invoke(*args: str, input: bytes | str | None = None) -> Result:
        return runner.invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def error_of(result: Result) -> dict[str, object]:
    err: dict[str, object] = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    return err


def test_put_get_delete(run: Invoke, prefix: bytes) -> None:
    key = prefix.decode() + "greeting"
    put = run("put", key, "hello world")
    assert put.exit_code == 0, put.stderr
    version = int(put.stdout)
    got = run("get", key, "--show-version")
    assert got.exit_code == 0
    assert got.stdout_bytes == b"hello world"  # raw value, no newline
    assert f"version {version}" in got.stderr
    stale = run("get", key, "--consistency", "stale")
    assert stale.exit_code == 0
    deleted = run("delete", key)
    assert deleted.exit_code == 0 and int(deleted.stdout) > version
    missing = run("get", key)
    assert missing.exit_code == 1
    assert missing.stdout == ""
    assert error_of(missing)["code"] == "not_found"
    assert run("delete", key).exit_code == 1


def test_put_value_sources(run: Invoke, prefix: bytes, tmp_path: Path) -> None:
    key = prefix.decode() + "src"
    assert run("put", key, "-", input=b"\x00from stdin\xff").exit_code == 0
    assert run("get", key).stdout_bytes == b"\x00from stdin\xff"
    f = tmp_path / "value.bin"
    f.write_bytes(b"from a file")
    assert run("put", key, "--file", str(f)).exit_code == 0
    assert run("get", key).stdout_bytes == b"from a file"
    assert run("put", key, "--file", "-", input=b"stdin via --file").exit_code == 0
    assert run("get", key).stdout_bytes == b"stdin via --file"
    neither = run("put", key)
    assert neither.exit_code == 2
    both = run("put", key, "x", "--file", str(f))
    assert both.exit_code == 2


def test_compare_and_set_exit_codes(run: Invoke, prefix: bytes) -> None:
    key = prefix.decode() + "cas"
    v1 = int(run("put", key, "a", "--if-version", "0").stdout)
    conflict = run("put", key, "b", "--if-version", "0")
    assert conflict.exit_code == 3
    err = error_of(conflict)
    assert err["code"] == "version_conflict" and err["current_version"] == v1
    assert run("put", key, "b", "--if-version", str(v1)).exit_code == 0
    assert run("delete", key, "--if-version", str(v1)).exit_code == 3
    assert run("get", key).stdout_bytes == b"b"
    too_large = run("put", "k" * 5000, "v")
    assert too_large.exit_code == 2
    assert error_of(too_large)["code"] == "too_large"


def test_scan_table_json_and_paging(run: Invoke, prefix: bytes) -> None:
    p = prefix.decode()
    for i in range(5):
        assert run("put", f"{p}k{i}", f"value-{i}").exit_code == 0
    assert run("put", f"{p}bin", "-", input=b"\xff\xfe").exit_code == 0

    table = run("scan", "--prefix", p)
    assert table.exit_code == 0
    for i in range(5):
        assert f"{p}k{i}" in table.stdout and f"value-{i}" in table.stdout
    assert "\\xff\\xfe" in table.stdout  # binary values shown escaped

    lines = [json.loads(line) for line in run("scan", "--prefix", p, "--json").stdout.splitlines()]
    assert [x["key"] for x in lines if x["encoding"] == "utf-8"] == [f"{p}k{i}" for i in range(5)]
    (binary,) = [x for x in lines if x["encoding"] == "base64"]
    assert base64.b64decode(binary["key"]) == (p + "bin").encode()
    assert base64.b64decode(binary["value"]) == b"\xff\xfe"

    first = run("scan", "--prefix", p, "--limit", "2", "--json")
    assert len(first.stdout.splitlines()) == 2
    assert "--cursor" in first.stderr
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    second = run("scan", "--prefix", p, "--limit", "2", "--json", "--cursor", cursor)
    assert [json.loads(x)["key"] for x in second.stdout.splitlines()] == [f"{p}k1", f"{p}k2"]  # after bin, k0

    everything = run("scan", "--prefix", p, "--limit", "2", "--all", "--json")
    assert len(everything.stdout.splitlines()) == 6
    assert everything.stderr == ""
    start = run("scan", "--prefix", p, "--start", f"{p}k3", "--json")
    assert [json.loads(x)["key"] for x in start.stdout.splitlines()] == [f"{p}k3", f"{p}k4"]


def test_status(run: Invoke, cluster: NodeCluster) -> None:
    table = run("status")
    assert table.exit_code == 0
    assert "partitions" in table.stdout
    for url in cluster.endpoints:
        assert url in table.stdout
    as_json = json.loads(run("status", "--json").stdout)
    assert len(as_json["partitions"]) == 4
    assert all(len(p["applied"]) == 3 for p in as_json["partitions"])


def test_unavailable_exit_code(prefix: bytes) -> None:
    result = CliRunner().invoke(cli, ["get", "-e", dead_endpoint(), "--timeout", "1", prefix.decode() + "k"])
    assert result.exit_code == 4
    assert error_of(result)["code"] == "unreachable"


def test_endpoint_option_and_fallbacks(cluster: NodeCluster, prefix: bytes) -> None:
    args = ["put", "-e", dead_endpoint(), "-e", cluster.endpoints[1], prefix.decode() + "e", "v"]
    result = CliRunner().invoke(cli, args, env={"KVCLUSTER_ENDPOINT": dead_endpoint()})
    assert result.exit_code == 0, result.stderr


@pytest.mark.slow
def test_bench(cluster: NodeCluster, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--duration", "1", "--clients", "1,4", "--warmup", "0.2", "--keys", "50"]
    args += ["--key-prefix", "bench-test/", "--json", str(out)]
    for url in cluster.endpoints:
        args += ["-e", url]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["put", "put", "get", "get", "mixed", "mixed"]
    saved = json.loads(out.read_text())["results"]
    assert [(r["workload"], r["clients"]) for r in saved] == [
        (w, c) for w in ("put", "get", "mixed") for c in (1, 4)
    ]
    for r in saved:
        assert r["ops"] > 0 and r["ops_per_s"] > 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"]
        assert r["errors"] == 0, r["error_kinds"]


@pytest.mark.slow
def test_bench_over_processes(cluster: NodeCluster, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--duration", "1", "--clients", "4", "--processes", "2", "--workloads", "mixed"]
    args += ["--warmup", "0.2", "--keys", "50", "--key-prefix", "bench-test/", "--json", str(out)]
    args += ["-e", ",".join(cluster.endpoints)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    (r,) = json.loads(out.read_text())["results"]
    assert (r["workload"], r["clients"], r["processes"]) == ("mixed", 4, 2)
    assert r["ops_per_s"] > 0 and r["errors"] == 0
