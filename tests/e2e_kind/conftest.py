"""The kind end-to-end tests: marker registration and opt-in.

They create a Kubernetes cluster, which takes minutes, so they only run when asked
for: ``pytest -m kind tests/e2e_kind`` (``make test-kind``), or with
KVCLUSTER_E2E_KIND=1. Where Docker or kind is missing they are skipped with that reason;
where both exist, ``make test`` leaves them out and ``make test-kind`` runs them.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.optin import deselect, requested


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kind: needs Docker and kind; creates a Kubernetes cluster (make test-kind)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if requested(config, "kind") or os.environ.get("KVCLUSTER_E2E_KIND") == "1":
        return
    missing = [tool for tool in ("docker", "kind") if shutil.which(tool) is None]
    if not missing:
        deselect(config, items, "kind")  # they can run here: make test-kind
        return
    skip = pytest.mark.skip(
        reason=f"{' and '.join(missing)} not installed here; the GitHub workflow runs these (make test-kind)"
    )
    for item in items:
        if item.get_closest_marker("kind") is not None:
            item.add_marker(skip)
