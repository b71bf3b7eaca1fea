"""Lint what cannot run here: the Dockerfile, the shell scripts, the CI workflow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .support import REPO, WORKFLOWS, run

DOCKERFILE = REPO / "Dockerfile"
SHELL_SCRIPTS = sorted([*(REPO / "scripts").glob("*.sh"), *(REPO / "tests").rglob("*.sh")])
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def test_hadolint_dockerfile(hadolint: Path) -> None:
    result = run([hadolint, "--failure-threshold", "info", DOCKERFILE])
    assert result.returncode == 0, result.output


def test_dockerfile_shape() -> None:
    """The properties the issue asks for, checked on the text (the build is test_container)."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage: a builder and a final stage"
    assert all("${BASE_IMAGE}" in ln for ln in froms), "every stage from the overridable base"
    first_from = next(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    assert any(ln.startswith("ARG BASE_IMAGE=") for ln in lines[:first_from])
    final = lines[next(i for i, ln in enumerate(lines) if ln == froms[-1]) :]
    users = [ln for ln in final if ln.startswith("USER ")]
    assert users and re.fullmatch(r"USER 10001(:10001)?", users[-1]), users
    assert any(ln.startswith("HEALTHCHECK ") for ln in final)
    assert any("org.opencontainers.image.title" in ln for ln in final)
    assert any(ln.startswith("COPY --from=builder") for ln in final)
    assert not any(re.search(r"\b(apt-get|gcc|build-essential)\b", ln) for ln in final)
    assert 'ENTRYPOINT ["kvcluster"]' in final
    assert 'CMD ["node"]' in final


def test_dockerignore_keeps_context_small() -> None:
    patterns = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert patterns[patterns.index("*")] == "*", "allow-list: everything is excluded first"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert {"pyproject.toml", "node", "operator"} <= allowed
    assert not allowed & {".venv", ".git", ".tools", "charts", "tests"}


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(shellcheck: Path, script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n"), "scripts are bash"
    assert "set -euo pipefail" in text
    result = run([shellcheck, "--severity=style", "--external-sources", script])
    assert result.returncode == 0, result.output


@pytest.mark.parametrize("workflow", WORKFLOW_FILES, ids=lambda p: p.name)
def test_github_workflow_schema(check_jsonschema: Path, workflow: Path) -> None:
    result = run([check_jsonschema, "--builtin-schema", "vendor.github-workflows", workflow])
    assert result.returncode == 0, result.output


def test_workflows_exist() -> None:
    assert WORKFLOW_FILES, "no workflow under .github/workflows"
