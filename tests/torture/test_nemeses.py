"""One short run per nemesis: linearizable, no acknowledged write lost, and the fault really happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvcluster.torture import replay
from tests.environment import cannot_run

from .conftest import Torture, assert_clean, disk_skip_reason, faults, netns_skip_reason

pytestmark = pytest.mark.slow


def test_crash(torture: Torture, tmp_path: Path) -> None:
    summary = torture(("crash",), seed=101)
    assert_clean(summary)
    crashes = faults(summary, "crash")
    assert crashes, summary.faults
    for crash in crashes:
        killed = crash["observed"]["killed"]
        restarted = crash["observed"]["restarted"]
        for node, before in killed.items():
            assert before["exit"] == -9
            assert restarted[node] != before["pid"], crash  # a new process on the same data
        assert set(crash["observed"]["caught_up_after_s"]) == set(killed), crash
    # The saved run replays through the checker to the same verdict.
    again = replay(tmp_path / "run", budget=30.0)
    assert (again.verdict, again.lost, again.exit_code) == ("ok", 0, 0)
    # ...and so do its watch events (watch.jsonl), to the same counts.
    assert again.watch.get("ok") and again.watch["events"] == summary.watch["events"], again.watch


def test_pause(torture: Torture) -> None:
    summary = torture(("pause",), seed=202)
    assert_clean(summary)
    pauses = faults(summary, "pause")
    assert pauses, summary.faults
    replaced = [p for p in pauses if p["observed"].get("new_leader") not in (None, p["targets"][0])]
    assert replaced, f"no paused leader was replaced while frozen: {pauses}"
    assert all(p["observed"]["paused_s"] > 2.0 for p in pauses)


def test_partition(torture: Torture) -> None:
    reason = netns_skip_reason()
    if reason:
        cannot_run(f"partition: {reason}")
    summary = torture(("partition",), seed=303)
    assert_clean(summary)
    assert summary.cluster["network"].startswith("namespaces"), summary.cluster
    cuts = faults(summary, "partition")
    judged = [c for c in cuts if "minority_frozen" in c["observed"]]
    assert judged, f"no majority/minority cut was measured: {cuts}"
    for cut in judged:
        # The cut-off side stopped applying while the other side went on committing.
        assert cut["observed"]["minority_frozen"], cut
        assert cut["observed"]["majority_progress"] > 0, cut


def test_disk(torture: Torture, tmp_path: Path) -> None:
    reason = disk_skip_reason(tmp_path)
    if reason:
        cannot_run(f"disk: {reason}")
    # Ends with a power cut of the whole cluster: every acknowledged write must have been fsynced.
    summary = torture(
        ("disk",), seed=404, variants={"disk": ("full", "unwritable")}, final_restart="power-cut"
    )
    assert_clean(summary)
    broken = faults(summary, "disk")
    assert {b["variant"] for b in broken} == {"full", "unwritable"}, broken
    for fault in broken:
        assert fault["observed"]["exit"] == 70, fault  # fail-stop, by design
        assert fault["observed"]["quick_check"] == "ok", fault
        assert fault["observed"].get("caught_up_after_s"), fault  # it rejoined
    unwritable = next(b for b in broken if b["variant"] == "unwritable")
    assert "busy" in unwritable["observed"]["remount_ro"]  # why a plain read-only remount cannot be used


def test_reshape(torture: Torture) -> None:
    # Five nodes: reshapes change the partition count (splits, merges) and the replica count
    # (3 <-> 5: new replicas arrive as snapshots -- where the soak found a node-crashing race).
    summary = torture(("reshape",), seed=505, nodes=5)
    assert_clean(summary)
    reshapes = faults(summary, "reshape")
    assert reshapes and all(r["observed"].get("state") == "done" for r in reshapes), reshapes
    changed = set()
    for r in reshapes:
        before, after = r["variant"].split("->")
        changed |= {"partitions"} if before.split("r")[0] != after.split("r")[0] else set()
        changed |= {"replicas"} if before.split("r")[1] != after.split("r")[1] else set()
    assert changed == {"partitions", "replicas"}, [r["variant"] for r in reshapes]


def test_the_checks_catch_a_store_that_does_not_fsync(torture: Torture, tmp_path: Path) -> None:
    """Negative control: with ``--durability relaxed`` (no fsync per commit) a power cut of the whole
    cluster loses acknowledged writes, and the run must say so -- otherwise the checks prove nothing."""
    reason = disk_skip_reason(tmp_path)
    if reason:
        cannot_run(f"power cut: {reason}")
    summary = torture(
        (), seed=606, duration=8.0, final_restart="power-cut", node_args=["--durability", "relaxed"]
    )
    assert summary.exit_code == 1 and summary.status == "fail", summary.to_dict()
    assert summary.lost > 0, summary.durability
    assert summary.verdict == "violation"  # reads after the restart went back in time
    assert "is missing" in summary.durability["lost_details"][0]
