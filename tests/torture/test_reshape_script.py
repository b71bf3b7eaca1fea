"""The reshape issue's scenario under load, with crashes, checked end to end.

Partitions 4 -> 8 -> 16 -> 4, replicas 3 -> 5 -> 3, nodes 3 -> 5 -> 3 (the two drained
nodes' processes stopped), while clients read, write, compare-and-set and delete; the node
driving one reshape (the meta group's leader) and a random node during another are killed
with kill -9 half-way. Afterwards every acknowledged write is present, no failed write's
value is visible (the checker would call that non-linearizable), the history is
linearizable, and after each reshape the map matches the target and is balanced.
"""

from __future__ import annotations

import pytest

from kvcluster.torture.script import ISSUE_SCENARIO

from .conftest import Torture, assert_clean, faults

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_issue_scenario_under_load_with_crashes(torture: Torture) -> None:
    summary = torture((), seed=4242, script=ISSUE_SCENARIO, preload=1000, duration=1.0)
    assert_clean(summary)
    steps = faults(summary, "reshape-script")
    assert [s["variant"] for s in steps] == [str(shape) for shape in ISSUE_SCENARIO]
    for step in steps:
        assert not step["problems"], step
        observed = step["observed"]
        assert observed["steps"] and observed["steps"] > 0, step
        assert observed["rate_during"] and observed["rate_during"] > 0, "clients stalled during a reshape"
    killed = {s["variant"]: s["observed"].get("killed") for s in steps if "+kill" in s["variant"]}
    assert all(killed.values()), f"a planned kill -9 did not happen: {killed}"
    grow, shrink = steps[1]["observed"], steps[-1]["observed"]
    assert grow["added"] == [4, 5] and shrink["removed"] == [4, 5]
    final = {str(node): count for node, count in steps[-1]["observed"]["replicas_per_node"].items()}
    assert final == {"1": 4, "2": 4, "3": 4}
