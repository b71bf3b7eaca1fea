"""Command-line parsing, configuration checks, variant rounds, reshape targets and exit codes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kvcluster.cli.main import cli
from kvcluster.local import LocalCluster
from kvcluster.torture import NEMESES, Config, Summary, parse_nemeses
from kvcluster.torture.nemesis import Crash, Disk, Env, FaultLog, Reshape, make_nemeses


def test_parse_nemeses() -> None:
    assert parse_nemeses("all") == (NEMESES, {})
    assert parse_nemeses("none") == ((), {})
    assert parse_nemeses("pause, crash") == (("crash", "pause"), {})
    assert parse_nemeses("disk:full+unwritable,reshape") == (
        ("disk", "reshape"),
        {"disk": ("full", "unwritable")},
    )
    with pytest.raises(ValueError, match="unknown nemesis"):
        parse_nemeses("crash,meteor")
    with pytest.raises(ValueError, match="no variant"):
        parse_nemeses("disk:melted")


def test_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workload"):
        Config(out=tmp_path, workload="nope")
    with pytest.raises(ValueError, match="replicas"):
        Config(out=tmp_path, nodes=3, replicas=5)
    with pytest.raises(ValueError, match="final_restart"):
        Config(out=tmp_path, final_restart="meteor")
    with pytest.raises(ValueError, match="no variant"):
        Config(out=tmp_path, nemeses=("disk",), variants={"disk": ("melted",)})
    flags = Config(out=tmp_path, node_args=["--durability", "relaxed"]).node_flags()
    assert flags[:2] == ["--tick-ms", "50"] and flags[-2:] == ["--durability", "relaxed"]


def _env(tmp_path: Path, nodes: int = 3) -> Env:
    cluster = LocalCluster(tmp_path / "c", nodes_count=nodes, base_port=40000)
    return Env(cluster=cluster, log=FaultLog(0), rng=random.Random(1))


def test_variants_come_in_rounds(tmp_path: Path) -> None:
    env = _env(tmp_path)
    disk = Disk()
    seen = [disk.next_variant(env, disk.variants) for _ in range(6)]
    assert sorted(seen[:3]) == sorted(seen[3:]) == sorted(Disk.variants)
    only = Disk(("full",))
    assert {only.next_variant(env, only.variants) for _ in range(4)} == {"full"}
    crash = Crash(("all", "minority"))
    assert {crash.next_variant(env, ["leader", "random", "all"]) for _ in range(4)} == {"all"}
    with pytest.raises(ValueError, match="no variant"):
        Crash(("sideways",))


def test_reshape_targets_step_between_shapes(tmp_path: Path) -> None:
    reshape = Reshape(4, 3)
    assert reshape.kinds(3) == ["partitions"] and reshape.kinds(5) == ["partitions", "replicas"]
    assert reshape.target("partitions") == (8, 3) and reshape.target("replicas") == (4, 5)
    reshape.current = (8, 5)
    assert reshape.target("partitions") == (4, 5) and reshape.target("replicas") == (8, 3)
    env = _env(tmp_path, nodes=5)
    both = [reshape.next_variant(env, reshape.kinds(5)) for _ in range(4)]
    assert sorted(both[:2]) == sorted(both[2:]) == ["partitions", "replicas"]  # rounds: each kind in turn
    only = Reshape(4, 3, ("replicas",))
    assert {only.next_variant(env, only.kinds(5)) for _ in range(3)} == {"replicas"}
    assert make_nemeses(["crash", "reshape"], 4, 3, {"crash": ("all",)})[0].only == ("all",)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"verdict": "ok", "durability": {"ok": True}}, "pass", 0),
        ({"verdict": "violation", "durability": {"ok": True}}, "fail", 1),
        ({"verdict": "ok", "durability": {"ok": False}, "lost": 2}, "fail", 1),
        ({"verdict": "ok", "durability": {"ok": True}, "problems": ["node 2 did not rejoin"]}, "fail", 1),
        ({"verdict": "unknown", "durability": {"ok": True}}, "unknown", 2),
        ({"verdict": "ok", "durability": {"ok": True}, "harness_errors": ["boom"]}, "error", 3),
    ],
)
def test_exit_codes(fields: dict[str, Any], status: str, code: int) -> None:
    summary = Summary(config={}, started_wall=0.0)
    for name, value in fields.items():
        setattr(summary, name, value)
    summary.decide()
    assert (summary.status, summary.exit_code) == (status, code)


def test_cli_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["torture", "--nemesis", "meteor"])
    assert result.exit_code == 2 and "unknown nemesis" in result.output
    result = runner.invoke(cli, ["torture", "--nodes", "3", "--replicas", "5", "--nemesis", "none"])
    assert result.exit_code == 2 and "cannot exceed" in result.output
    assert "power-cut" in runner.invoke(cli, ["torture", "--help"]).output


def test_hold_ends_early_when_the_run_stops(tmp_path: Path) -> None:
    env = _env(tmp_path)

    async def go() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        loop.call_later(0.05, env.stopping.set)
        await env.hold(30.0)
        return loop.time() - started

    assert asyncio.run(go()) < 5.0
