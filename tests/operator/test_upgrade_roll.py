"""The rolling-upgrade state machine (kvoperator.upgrade), pass by pass, with no API at all."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kvoperator.upgrade import PodView, Replication, RollDecision, RollInput, decide_roll

OLD, NEW = "demo-aaaa", "demo-bbbb"


def replication(complete: bool = True, leading: dict[int, tuple[int, ...]] | None = None) -> Replication:
    """Three voters per partition; ``leading`` maps node -> partitions it leads."""
    led = {n: tuple((pid, (1, 2, 3)) for pid in pids) for n, pids in (leading or {}).items()}
    return Replication(complete, () if complete else (1,), led)


def pods(revisions: dict[int, str], down: tuple[int, ...] = ()) -> dict[int, PodView]:
    return {o: PodView(o, rev, o not in down, "img:" + rev) for o, rev in revisions.items()}


def start(**kw: Any) -> RollInput:
    base = RollInput(
        update_revision=NEW,
        pods=pods({0: OLD, 1: OLD, 2: OLD}),
        expected=3,
        image="img:new",
        replication=replication(),
        upgrade=None,
        now="2026-12-06T10:00:00Z",
        pod_ready_timeout_s=60,
    )
    return replace(base, **kw)


def step(inp: RollInput, decision: RollDecision, **kw: Any) -> RollInput:
    return replace(inp, upgrade=decision.upgrade, **kw)


def test_one_pod_at_a_time_highest_first_leaders_moved_first() -> None:
    inp = start(replication=replication(leading={3: (1, 2), 1: (3, 4)}))
    d = decide_roll(inp)
    # The highest ordinal (node 3) leads partitions 1 and 2: they move before its pod goes.
    assert d.delete_pod is None
    assert d.move_leaders_from == ((1, 2), (2, 1))  # spread over the other voters
    assert d.upgrade is not None and d.upgrade["phase"] == "Rolling" and d.upgrade["updatedPods"] == 0
    assert [e.reason for e in d.events] == ["UpgradeStarted"]

    inp = step(inp, d, replication=replication(leading={1: (1, 2, 3, 4)}))
    d = decide_roll(inp)
    assert d.delete_pod == 2 and d.move_leaders_from == ()
    assert d.upgrade is not None and d.upgrade["pod"] == 2

    # Gone, then back but not ready, then ready while a partition is still catching up: wait.
    inp = step(inp, d, pods=pods({0: OLD, 1: OLD}), replication=replication(False))
    assert decide_roll(inp).delete_pod is None
    inp = step(inp, decide_roll(inp), pods=pods({0: OLD, 1: OLD, 2: NEW}, down=(2,)))
    assert decide_roll(inp).delete_pod is None
    inp = step(inp, decide_roll(inp), pods=pods({0: OLD, 1: OLD, 2: NEW}))
    d = decide_roll(inp)
    assert d.delete_pod is None and d.progress is not None and "catch up" in d.progress.message

    # Caught up: pod 2 counts as done and pod 1 goes next, in the same pass.
    inp = step(inp, d, replication=replication(leading={1: (1, 2, 3, 4)}))
    d = decide_roll(inp)
    assert d.delete_pod == 1
    assert [e.reason for e in d.events] == ["PodUpgraded", "PodReplaced"]

    inp = step(inp, d, pods=pods({0: OLD, 1: NEW, 2: NEW}))
    d = decide_roll(inp)
    # Node 1 leads everything: its leaderships move first.
    assert d.delete_pod is None and {pid for pid, _ in d.move_leaders_from} == {1, 2, 3, 4}
    assert all(node != 1 for _, node in d.move_leaders_from)
    inp = step(inp, d, replication=replication(leading={2: (1, 2, 3, 4)}))
    d = decide_roll(inp)
    assert d.delete_pod == 0

    inp = step(inp, d, pods=pods({0: NEW, 1: NEW, 2: NEW}))
    d = decide_roll(inp)
    assert d.upgrade is not None and d.upgrade["phase"] == "Completed" and d.upgrade["updatedPods"] == 3
    assert not d.rolling and "UpgradeCompleted" in [e.reason for e in d.events]
    assert d.upgrade["fromImage"] == "img:" + OLD and d.upgrade["toImage"] == "img:new"

    # Nothing more to do afterwards.
    again = decide_roll(step(inp, d))
    assert again.delete_pod is None and again.events == [] and not again.rolling


def test_nothing_moves_while_a_pod_is_down_or_a_partition_lags() -> None:
    lagging = decide_roll(start(replication=replication(False)))
    assert lagging.delete_pod is None and lagging.rolling
    two_down = decide_roll(start(pods=pods({0: OLD, 1: OLD, 2: OLD}, down=(0, 1))))
    assert two_down.delete_pod is None
    # A pod that is down on the *new* revision is not replaced: it is what we wait for.
    new_down = decide_roll(start(pods=pods({0: OLD, 1: OLD, 2: NEW}, down=(2,))))
    assert new_down.delete_pod is None
    assert decide_roll(start(replication=None)).delete_pod is None


def test_a_pod_that_does_not_come_back_stops_the_roll_and_a_fix_resumes_it() -> None:
    inp = start()
    d = decide_roll(inp)
    assert d.delete_pod == 2
    inp = step(inp, d, pods=pods({0: OLD, 1: OLD, 2: NEW}, down=(2,)), now="2026-12-06T10:00:59Z")
    d = decide_roll(inp)
    assert d.problem is None and d.delete_pod is None
    inp = step(inp, d, now="2026-12-06T10:01:01Z")
    d = decide_roll(inp)
    assert d.problem is not None and d.problem.reason == "UpgradeStalled"
    assert d.upgrade is not None and d.upgrade["phase"] == "Stalled"
    assert [e.reason for e in d.events] == ["UpgradeStalled"]
    # Stalled is sticky, with one Warning only.
    inp = step(inp, d, now="2026-12-06T10:05:00Z")
    d = decide_roll(inp)
    assert d.problem is not None and d.events == [] and d.delete_pod is None

    # The image is fixed: a new template revision. The broken pod is down anyway: it is replaced first.
    fixed = "demo-cccc"
    inp = step(inp, d, update_revision=fixed, image="img:fixed")
    d = decide_roll(inp)
    assert d.delete_pod == 2 and d.problem is None
    assert [e.reason for e in d.events] == ["UpgradeRetargeted", "PodReplaced"]
    assert d.upgrade is not None and d.upgrade["toImage"] == "img:fixed"


def test_pods_above_the_expected_count_are_left_to_the_reshape() -> None:
    d = decide_roll(start(pods=pods({0: NEW, 1: NEW, 2: NEW, 3: OLD}), expected=3))
    assert not d.rolling and d.delete_pod is None


def test_replication_from_the_cluster_view() -> None:
    view = {
        "partitions": [
            {"id": 0, "leader": 1, "voters": [1, 2, 3], "commit": 10, "applied": {"1": 10, "2": 9, "3": 10}},
            {"id": 1, "leader": 2, "voters": [1, 2, 3], "commit": 500, "applied": {"1": 500, "2": 500}},
            {"id": 2, "leader": None, "voters": [1, 2, 3], "commit": None, "applied": {}},
            {"id": 3, "leader": 3, "voters": [2, 3], "commit": 900, "applied": {"2": 700, "3": 900}},
        ]
    }
    r = Replication.from_cluster(view)
    # 1: node 3 reports nothing; 2: no leader; 3: node 2 is 200 entries behind.
    assert not r.complete and r.behind == (1, 2, 3)
    assert r.leading == {1: ((0, (1, 2, 3)),), 2: ((1, (1, 2, 3)),), 3: ((3, (2, 3)),)}
    whole = Replication.from_cluster({"partitions": view["partitions"][:1]})
    assert whole.complete and whole.behind == ()
