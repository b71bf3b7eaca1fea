"""The long run: every nemesis mixed on five nodes.

Only on request: ``pytest -m soak`` (KVCLUSTER_SOAK_SECONDS, default 600); ``make soak`` is the
same run through the CLI.
"""

from __future__ import annotations

import os

import pytest

from kvcluster.torture import NEMESES

from .conftest import Torture, assert_clean, faults

pytestmark = [pytest.mark.soak, pytest.mark.timeout(0)]

SECONDS = float(os.environ.get("KVCLUSTER_SOAK_SECONDS", "600"))


def test_soak(torture: Torture) -> None:
    seed = int(os.environ.get("KVCLUSTER_SOAK_SEED", "1"))
    summary = torture(
        NEMESES, seed=seed, duration=SECONDS, nodes=5, keys=20, concurrency=10, check_budget=900.0
    )
    assert_clean(summary)
    for kind in NEMESES:
        if kind not in summary.skipped_nemeses:
            assert faults(summary, kind), f"no {kind} fault in {SECONDS}s"
