"""The pure state machine and condition logic, without any API."""

from __future__ import annotations

from typing import Any

import pytest

from kvoperator import reconcile as rc
from kvoperator import status as st
from kvoperator.spec import Layout, SpecError, parse_spec

NOW = "2030-01-01T00:00:00Z"
LATER = "2030-01-01T00:05:00Z"


def spec(**over: Any) -> Any:
    return parse_spec({"nodes": 3, "partitions": 4, "replicas": 3} | over, default_image="img")


def created_status(nodes: int = 3, partitions: int = 4, replicas: int = 3, **extra: Any) -> dict[str, Any]:
    layout = Layout(nodes, partitions, replicas).to_dict()
    return {"initial": layout, "applied": layout, "storage": "1Gi", "bootstrapped": True} | extra


def obs(status: dict[str, Any], *, sts: tuple[int, int, int] | None = (3, 3, 3), **kw: Any) -> rc.Observation:
    view = rc.StsView(*sts) if sts is not None else None
    kw.setdefault("spec", spec())
    kw.setdefault("summary", rc.Summary(total=4, leaderless=0, leaders_per_node={1: 4}))
    return rc.Observation(generation=kw.pop("generation", 1), status=status, sts=view, now=NOW, **kw)


def conds(plan: rc.Plan) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}


# --- conditions ----------------------------------------------------------------


def test_transition_time_moves_only_when_status_flips() -> None:
    healthy = st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=3, partitions_total=4, leaderless=0)
    first = st.merge_conditions([], st.desired_conditions(healthy), generation=1, now=NOW)
    same = st.merge_conditions(first, st.desired_conditions(healthy), generation=2, now=LATER)
    assert [c["lastTransitionTime"] for c in same] == [NOW] * 3
    assert [c["observedGeneration"] for c in same] == [2] * 3
    sick = st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=2, partitions_total=4, leaderless=0)
    flipped = {
        c["type"]: c for c in st.merge_conditions(same, st.desired_conditions(sick), generation=2, now=LATER)
    }
    assert (
        flipped["Ready"]["lastTransitionTime"] == LATER and flipped["Degraded"]["lastTransitionTime"] == LATER
    )
    assert flipped["Progressing"]["lastTransitionTime"] == NOW


def test_events_only_for_transitions() -> None:
    healthy = st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=3)
    refused = st.Health(
        bootstrapped=True, expected_nodes=3, ready_nodes=3, spec_problem=st.Problem("InvalidSpec", "no")
    )
    c0 = st.merge_conditions([], st.desired_conditions(healthy), generation=1, now=NOW)
    c1 = st.merge_conditions(c0, st.desired_conditions(refused), generation=2, now=NOW)
    assert [(e.type, e.reason) for e in st.condition_events(c0, c1)] == [("Warning", "InvalidSpec")]
    assert st.condition_events(c1, c1) == []  # the timer re-evaluating says nothing new
    back = st.merge_conditions(c1, st.desired_conditions(healthy), generation=3, now=NOW)
    assert [e.reason for e in st.condition_events(c1, back)] == ["Recovered"]


@pytest.mark.parametrize(
    ("health", "reshaping", "phase"),
    [
        (st.Health(bootstrapped=False, expected_nodes=3, ready_nodes=0), False, "Pending"),
        (st.Health(bootstrapped=False, expected_nodes=3, ready_nodes=2), False, "Bootstrapping"),
        (st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=3), False, "Running"),
        (st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=3), True, "Reshaping"),
        (st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=1), False, "Degraded"),
        (st.Health(bootstrapped=True, expected_nodes=3, ready_nodes=3, leaderless=1), False, "Degraded"),
    ],
)
def test_phase(health: st.Health, reshaping: bool, phase: str) -> None:
    assert st.phase_for(health, reshaping=reshaping) == phase


# --- the state machine ------------------------------------------------------


def test_first_pass_records_the_initial_layout() -> None:
    plan = rc.decide(obs({}, sts=None, summary=None))
    assert plan.ensure_objects and plan.sts_replicas == 3 and not plan.bootstrapped
    assert plan.status["initial"] == {"nodes": 3, "partitions": 4, "replicas": 3}
    assert plan.status["phase"] == "Pending"
    assert [e.reason for e in plan.events] == ["Creating"]


def test_bootstrap_waits_for_all_initial_nodes_and_leaders() -> None:
    status = created_status(bootstrapped=False)
    assert not rc.decide(obs(status, sts=(3, 3, 2))).bootstrapped
    leaderless = rc.Summary(total=4, leaderless=1, leaders_per_node={})
    assert not rc.decide(obs(status, summary=leaderless)).bootstrapped
    plan = rc.decide(obs(status))
    assert plan.bootstrapped and plan.status["bootstrapped"] is True


def test_refused_spec_changes_nothing() -> None:
    error = SpecError("InvalidSpec", "replicas must not exceed nodes")
    plan = rc.decide(obs(created_status(), spec=error))
    assert not plan.ensure_objects and plan.sts_replicas is None and plan.start_reshape is None
    assert conds(plan)["Degraded"] == ("True", "InvalidSpec") and plan.status["phase"] == "Degraded"
    shrink = rc.decide(obs(created_status(storage="2Gi"), spec=spec(storage={"size": "1Gi"})))
    assert conds(shrink)["Degraded"] == ("True", "UnsafeChange") and shrink.sts_replicas is None


def walk(status: dict[str, Any], target: Any, *, sts: tuple[int, int, int], **kw: Any) -> rc.Plan:
    plan = rc.decide(obs(status, spec=target, sts=sts, **kw))
    status.update(plan.status)
    return plan


def test_grow_then_reshape() -> None:
    status = created_status()
    target = spec(nodes=5)
    plan = walk(status, target, sts=(3, 3, 3))
    assert status["reshape"]["phase"] == "GrowNodes" and plan.sts_replicas == 5 and plan.start_reshape is None
    plan = walk(status, target, sts=(5, 5, 4))  # one new pod not ready yet: keep waiting
    assert status["reshape"]["phase"] == "GrowNodes" and plan.start_reshape is None
    plan = walk(
        status, target, sts=(5, 5, 5), nodes={4: rc.NodeView.unknown(4), 5: rc.NodeView(5, 0, 0, True)}
    )
    assert status["reshape"]["phase"] == "GrowNodes" and plan.start_reshape is None  # node 4 has not joined
    assert rc.admin_needs(status, rc.StsView(5, 5, 5)).nodes == (4, 5)
    joined = {4: rc.NodeView(4, 0, 0, True), 5: rc.NodeView(5, 0, 0, True)}
    walk(status, target, sts=(5, 5, 5), nodes=joined)
    assert status["reshape"]["phase"] == "Reshape"
    plan = walk(status, target, sts=(5, 5, 5), job=rc.JobView(state="idle", target=None))
    assert status["reshape"]["phase"] == "Reshape" and plan.start_reshape == Layout(5, 4, 3)
    rc.after_reshape_posted(plan, "job-1")
    running = rc.JobView(
        state="running", target=Layout(5, 4, 3), steps_total=4, steps_done=1, current="move p1"
    )
    plan = walk(status, target, sts=(5, 5, 5), job=running)
    assert plan.start_reshape is None and status["reshape"]["stepsDone"] == 1
    assert conds(plan)["Progressing"] == ("True", "Reshaping")
    plan = walk(status, target, sts=(5, 5, 5), job=rc.JobView(state="done", target=Layout(5, 4, 3)))
    assert status["reshape"] is None and status["applied"]["nodes"] == 5
    assert [e.reason for e in plan.events][-1:] == ["ReshapeCompleted"] or "ReshapeCompleted" in [
        e.reason for e in plan.events
    ]


def test_shrink_drains_before_removing_pods() -> None:
    status = created_status(nodes=5)
    target = spec(nodes=3)
    plan = walk(status, target, sts=(5, 5, 5), job=rc.JobView(state="idle", target=None))
    assert status["reshape"]["phase"] == "Reshape" and plan.sts_replicas == 5
    assert plan.start_reshape == Layout(3, 4, 3)
    plan = walk(status, target, sts=(5, 5, 5), job=rc.JobView(state="done", target=Layout(3, 4, 3)))
    assert status["reshape"]["phase"] == "Drain" and plan.sts_replicas == 5
    assert rc.admin_needs(status, rc.StsView(5, 5, 5)).nodes == (4, 5)
    busy = {4: rc.NodeView(4, 1, 0, False), 5: rc.NodeView(5, 0, 0, True)}
    plan = walk(status, target, sts=(5, 5, 5), nodes=busy)
    assert plan.drain == [4] and plan.sts_replicas == 5 and status["reshape"]["drainRequested"] == [4]
    plan = walk(status, target, sts=(5, 5, 5), nodes=busy)
    assert plan.drain == []  # asked once
    drained = {4: rc.NodeView(4, 0, 0, True), 5: rc.NodeView(5, 0, 0, True)}
    plan = walk(status, target, sts=(5, 5, 5), nodes=drained)
    assert status["reshape"]["phase"] == "ShrinkNodes" and plan.sts_replicas == 3
    plan = walk(status, target, sts=(3, 3, 3))
    assert status["reshape"] is None and status["applied"]["nodes"] == 3


def test_statefulset_never_shrinks_before_the_drain() -> None:
    status = created_status(nodes=5)
    target = spec(nodes=3)
    for job in (
        None,
        rc.JobView("idle", None),
        rc.JobView("running", Layout(3, 4, 3)),
        rc.JobView("failed", None),
    ):
        plan = walk(dict(status), target, sts=(5, 5, 5), job=job)
        assert plan.sts_replicas == 5


def test_failed_jobs_are_retried_then_given_up() -> None:
    status = created_status()
    target = spec(partitions=8)
    walk(status, target, sts=(3, 3, 3), job=rc.JobView("idle", None))
    for attempt in range(1, rc.MAX_RESHAPE_ATTEMPTS + 1):
        status["reshape"]["job"] = f"job-{attempt}"
        plan = walk(
            status, target, sts=(3, 3, 3), job=rc.JobView("failed", Layout(3, 8, 3), error="leader lost")
        )
        assert status["reshape"]["attempts"] == attempt
        assert (plan.start_reshape is not None) == (attempt < rc.MAX_RESHAPE_ATTEMPTS)
    assert conds(plan)["Degraded"][1] == "ReshapeFailed"
    # A new spec after giving up starts afresh instead of waiting forever.
    plan = walk(status, spec(partitions=6), sts=(3, 3, 3), job=rc.JobView("failed", Layout(3, 8, 3)))
    assert status["reshape"]["target"]["partitions"] == 6 and plan.start_reshape == Layout(3, 6, 3)


def test_rejected_target_is_parked_until_the_spec_changes() -> None:
    status = created_status()
    target = spec(partitions=64)
    plan = walk(status, target, sts=(3, 3, 3), job=rc.JobView("idle", None))
    rc.after_reshape_rejected(plan, "bad_request", "cannot")
    status.update(plan.status)
    plan = walk(status, target, sts=(3, 3, 3))
    assert plan.start_reshape is None and conds(plan)["Degraded"] == ("True", "ReshapeRejected")
    plan = walk(status, spec(partitions=8), sts=(3, 3, 3), job=rc.JobView("idle", None))
    assert plan.start_reshape == Layout(3, 8, 3)


def test_another_running_job_is_waited_for() -> None:
    status = created_status()
    plan = walk(status, spec(partitions=8), sts=(3, 3, 3), job=rc.JobView("running", Layout(3, 16, 3)))
    assert plan.start_reshape is None and "another reshape" in plan.status["conditions"][1]["message"]


def test_retarget_while_growing() -> None:
    status = created_status()
    walk(status, spec(nodes=6), sts=(3, 3, 3))
    plan = walk(status, spec(nodes=4), sts=(6, 4, 4))
    assert status["reshape"]["phase"] == "GrowNodes"  # pod 4 is ready but has not joined yet
    assert status["reshape"]["target"]["nodes"] == 4 and plan.sts_replicas == 6  # pods 5, 6 go via Drain
    assert status["reshape"]["from"]["nodes"] == 6
    assert rc.admin_needs(status, rc.StsView(6, 4, 4)).nodes == (4,)
    plan = walk(status, spec(nodes=4), sts=(6, 6, 6), nodes={4: rc.NodeView(4, 0, 0, True)})
    assert status["reshape"]["phase"] == "Reshape" and plan.sts_replicas == 6


def test_summary_and_job_parsing() -> None:
    summary = rc.Summary.from_cluster(
        {"partitions": [{"id": 0, "leader": 1}, {"id": 1, "leader": 2}, {"id": 2, "leader": None}]}
    )
    assert (summary.total, summary.leaderless, dict(summary.leaders_per_node)) == (2, 1, {2: 1})
    assert rc.target_layout({"nodes": [3, 1, 2], "partitions": 4, "replicas": 3}) == Layout(3, 4, 3)
    assert rc.target_layout({"nodes": [1, 3], "partitions": 4, "replicas": 1}) == Layout(-1, 4, 1)
    assert rc.target_layout(None) is None
    changes = rc.layout_changes([("change", ("nodes",), 3, 5)])
    assert changes == ["spec.nodes: 3 -> 5"]
