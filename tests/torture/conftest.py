"""Torture runs as tests: short runs of each nemesis on real node processes.

Each run gets its own output directory, its own ports (loopback) or its own
``10.77.K.0/24`` (namespaces), and the runner tears everything down (node
processes by pid, namespaces and loop mounts by name) even when it fails; the
``no_leftovers`` fixture checks that nothing of this test process survives.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvcluster.local import netns
from kvcluster.torture import Config, Summary, Timing, run
from kvcluster.torture import disk as disk_mod
from tests.environment import must_run
from tests.optin import deselect, requested

TEST_TIMING = Timing(hold=(2.0, 3.5), pause_hold=(3.0, 4.0), settle=1.0, rejoin_timeout=45.0)
"""Shorter faults than the default, so a 20-second run sees two or three of each."""

Torture = Callable[..., Summary]


def netns_skip_reason() -> str | None:
    """Why namespaces cannot be used here -- checked by really making one, not guessed."""
    reason = netns.unavailable_reason()
    if reason:
        return reason
    try:
        network = netns.Network.allocate()
    except netns.NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    network.destroy()
    return None


def disk_skip_reason(tmp_path: Path) -> str | None:
    reason = disk_mod.unavailable_reason()
    if reason:
        return reason
    volume = disk_mod.Volume.for_node("probe", 0, tmp_path / "probe", size_mb=16)
    try:
        volume.create()
    except disk_mod.DiskError as exc:
        return f"cannot make a loop-mounted volume: {exc}"
    finally:
        volume.destroy()
    return None


def _ours() -> list[str]:
    prefix = f"{netns.PREFIX}-{os.getpid()}-"
    return (
        [ns for ns in netns.list_namespaces() if ns.startswith(prefix)]
        if netns.unavailable_reason() is None
        else []
    )


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """After each test: no namespace of this process, no mount under its directory."""
    yield
    leaked = _ours()
    for ns in leaked:
        subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
    with open("/proc/self/mounts", encoding="utf-8") as fp:
        mounts = [line.split()[1] for line in fp if str(tmp_path.resolve()) in line]
    for mount in mounts:
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    assert not leaked, f"namespaces left behind: {leaked}"
    assert not mounts, f"mounts left behind: {mounts}"


@pytest.fixture
def torture(tmp_path: Path) -> Torture:
    def go(nemeses: tuple[str, ...], *, seed: int, duration: float = 20.0, **overrides: Any) -> Summary:
        settings: dict[str, Any] = {
            "keys": 10,
            "concurrency": 8,
            "timing": TEST_TIMING,
            "check_budget": 60.0,
            "progress_every": 0.0,
            **overrides,
        }
        config = Config(out=tmp_path / "run", nemeses=nemeses, duration=duration, seed=seed, **settings)
        summary = run(config)
        print(json.dumps(summary.to_dict(), indent=1, default=str)[:20000])
        if summary.exit_code != 0:
            print_node_failures(tmp_path / "run" / "cluster")
        if summary.skipped_nemeses and must_run():
            # The runner skips a nemesis it cannot inject and the run still passes; here that
            # would hide a broken setup behind a green suite.
            pytest.fail(f"nemeses skipped as root: {summary.skipped_nemeses}", pytrace=False)
        return summary

    return go


def print_node_failures(cluster_dir: Path, lines_after: int = 40) -> None:
    """Print each node log's first fatal record with its traceback: CI keeps stdout, not the files."""
    for log_path in sorted(cluster_dir.glob("node*.log")):
        lines = log_path.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "CRITICAL" in line or "Traceback" in line:
                print(f"--- {log_path.name}, line {i + 1} ---")
                print("\n".join(lines[max(0, i - 5) : i + lines_after]))
                break


def assert_clean(summary: Summary) -> None:
    """Linearizable, nothing acknowledged lost, no store misbehaviour, no harness error, the
    lease and watch checks passed."""
    details = {
        "status": summary.status,
        "verdict": summary.verdict,
        "lost": summary.lost,
        "problems": summary.problems,
        "harness_errors": summary.harness_errors,
        "violations": summary.violations[:2],
        "durability": summary.durability,
    }
    assert summary.exit_code == 0, details
    assert summary.verdict == "ok" and summary.keys.get("violation") == 0, details
    assert summary.lost == 0 and summary.durability.get("ok"), details
    assert summary.durability["acknowledged"] > 100, details
    ok = sum(counts["ok"] for counts in summary.operations.values())
    assert ok > 300, f"too little load to prove anything: {summary.operations}"
    # Leases under the same faults: no early expiry, nothing readable after a revoke or its end.
    leases = summary.leases
    assert leases.get("ok") and not leases.get("violations"), leases
    assert leases["episodes"] >= 2 and leases["checked_reads"] >= 5, f"too few lease episodes: {leases}"
    # Watch streams open through the same faults: every acknowledged write delivered once, in order,
    # nothing that was not written, no lease-bound key readable once its expiry was delivered.
    watch = summary.watch
    assert watch.get("ok") and not watch.get("violations") and watch.get("complete"), watch
    assert watch["events"] > 100 and watch["acknowledged"] > 100, f"too few watch events: {watch}"
    assert watch["reconnects"] >= 1, watch  # at least across the full restart


def faults(summary: Summary, kind: str) -> list[dict[str, Any]]:
    return [f for f in summary.faults if f["kind"] == kind and f["variant"] != "error"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not (requested(config, "soak") or os.environ.get("KVCLUSTER_SOAK_SECONDS")):
        deselect(config, items, "soak")
