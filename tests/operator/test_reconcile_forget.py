"""After a shrink, the removed nodes leave the cluster's member list (found by the real-node test).

Real nodes keep a drained, stopped node in their member list until someone
forgets it: ``/v1/cluster`` then reports it unreachable forever, every status
call tries to reach it, and the member list no longer matches the spec. The
nodes re-register themselves while they run, so the forget must come after
the pods are gone, in ``ShrinkNodes``, and the reshape completes only once the
nodes answer that they no longer know them.
"""

from __future__ import annotations

from test_reconcile import created_status, spec, walk

from kvoperator import reconcile as rc
from kvoperator.spec import Layout


def shrinking() -> dict[str, object]:
    """A 5 -> 3 reshape that reached ShrinkNodes (data moved off, nodes 4 and 5 drained)."""
    status = created_status(nodes=5)
    target = spec(nodes=3)
    walk(status, target, sts=(5, 5, 5), job=rc.JobView(state="idle", target=None))
    walk(status, target, sts=(5, 5, 5), job=rc.JobView(state="done", target=Layout(3, 4, 3)))
    drained = {4: rc.NodeView(4, 0, 0, True), 5: rc.NodeView(5, 0, 0, True)}
    plan = walk(status, target, sts=(5, 5, 5), nodes=drained)
    assert status["reshape"]["phase"] == "ShrinkNodes" and plan.sts_replicas == 3 and plan.forget == []
    return status


def test_removed_nodes_are_forgotten_once_their_pods_are_gone() -> None:
    status = shrinking()
    target = spec(nodes=3)
    assert rc.admin_needs(status, rc.StsView(3, 3, 3)).nodes == (4, 5)
    members = {4: rc.NodeView(4, 0, 0, True), 5: rc.NodeView(5, 0, 0, True)}

    plan = walk(status, target, sts=(3, 5, 3), nodes=members)  # pods still terminating
    assert plan.forget == [] and status["reshape"]["phase"] == "ShrinkNodes"

    plan = walk(status, target, sts=(3, 3, 3), nodes=members)
    assert plan.forget == [4, 5] and status["reshape"] is not None
    assert "member list" in plan.status["conditions"][1]["message"]

    plan = walk(status, target, sts=(3, 3, 3), nodes={4: rc.NodeView.unknown(4), 5: members[5]})
    assert plan.forget == [5] and status["reshape"] is not None

    plan = walk(status, target, sts=(3, 3, 3), nodes={4: rc.NodeView.unknown(4), 5: rc.NodeView.unknown(5)})
    assert plan.forget == [] and status["reshape"] is None and status["applied"]["nodes"] == 3


def test_shrink_does_not_complete_while_the_nodes_cannot_say() -> None:
    status = shrinking()
    plan = walk(status, spec(nodes=3), sts=(3, 3, 3), admin_error="GET /v1/cluster: HTTP 503")
    assert plan.forget == [] and status["reshape"] is not None
