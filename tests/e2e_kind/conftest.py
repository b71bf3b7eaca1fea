"""The kind end-to-end tests: marker registration and opt-in.

They create a Kubernetes cluster, which takes minutes, so they only run when asked
for: ``pytest -m kind tests/e2e_kind`` (``make test-kind``), or with
KVCLUSTER_E2E_KIND=1. Otherwise they are skipped with that hint.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kind: needs Docker and kind; creates a Kubernetes cluster (make test-kind)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markexpr = str(config.getoption("markexpr", "") or "")
    if "kind" in markexpr.replace("not kind", "") or os.environ.get("KVCLUSTER_E2E_KIND") == "1":
        return
    skip = pytest.mark.skip(reason="kind end-to-end tests run on request: make test-kind (pytest -m kind)")
    for item in items:
        if item.get_closest_marker("kind") is not None:
            item.add_marker(skip)
