"""Helpers for the deployment tests: running tools, loading YAML, validating objects.

Kubernetes objects are validated with ``kubernetes-validate`` (the upstream
OpenAPI schemas, strict: unknown fields are errors). Custom resources have no
upstream schema; they are validated with ``jsonschema`` against the
``openAPIV3Schema`` of their CRD, converted the way the API server reads it:
``x-kubernetes-*`` extensions dropped, and unknown fields rejected where the
server would prune them (as ``kubectl apply``'s strict field validation does).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kvcluster-operator"
MANIFESTS = REPO / "manifests"
SCRIPTS = REPO / "scripts"
OPERATOR_CRD = REPO / "operator" / "kvoperator" / "crd.yaml"
CHART_CRD = CHART / "crds" / "kvclusters.yaml"
WORKFLOWS = REPO / ".github" / "workflows"

# The oldest and the newest Kubernetes minor the manifests must be valid for.
KUBE_VERSIONS = ("1.30.0", "1.33.0")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(
    argv: Sequence[str | Path],
    *,
    timeout: float = 300,
    cwd: Path = REPO,
    env: Mapping[str, str] | None = None,
) -> Result:
    """Run a command to completion and capture its output (never raises on failure).

    ``env`` adds to (not replaces) the current environment.
    """
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **env} if env else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def which(name: str, *extra_dirs: Path) -> Path | None:
    for d in extra_dirs:
        candidate = d / name
        if candidate.is_file():
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def load_all(text: str) -> list[Obj]:
    """Every non-empty document of a multi-document YAML stream."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    for d in docs:
        assert isinstance(d, dict), f"a YAML document is not a mapping: {d!r}"
    return docs


def load_file(path: Path) -> list[Obj]:
    return load_all(path.read_text(encoding="utf-8"))


def ident(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')}/{ns + '/' if ns else ''}{name}"


# --- CRDs -------------------------------------------------------------------------


def crd_index(crds: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of the CRDs."""
    index: dict[tuple[str, str], Obj] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                index[key] = version["schema"]["openAPIV3Schema"]
    return index


def structural_to_jsonschema(schema: Any, *, strict: bool = True) -> Any:
    """Turn a CRD structural schema into a plain JSON schema.

    ``x-kubernetes-*`` keys are dropped (``int-or-string`` is already spelled as
    ``anyOf``; CEL rules cannot be checked here). With ``strict``, an object with
    ``properties`` and neither ``additionalProperties`` nor
    ``x-kubernetes-preserve-unknown-fields`` rejects other fields: the API server
    would prune them silently, and kubectl's strict field validation reports them.
    """
    if isinstance(schema, list):
        return [structural_to_jsonschema(s, strict=strict) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: structural_to_jsonschema(v, strict=strict) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = structural_to_jsonschema(value, strict=strict)
        else:
            out[key] = value
    if (
        strict
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if schema.get("nullable"):
        out.pop("nullable", None)
        if "type" in out:
            out["type"] = [out["type"], "null"]
    return out


def validate_custom(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Errors of a custom resource against its CRD's schema (empty when valid)."""
    body = dict(obj)
    # The API server owns metadata's schema; the CRD only says `type: object`.
    body["metadata"] = dict(body.get("metadata") or {})
    converted = structural_to_jsonschema(schema)
    # apiVersion, kind and metadata are implicit at the root of every CRD schema.
    converted["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **converted.get("properties", {}),
    }
    validator = jsonschema.Draft7Validator(converted)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    ]


# --- Kubernetes objects -----------------------------------------------------------


def validate_k8s(obj: Mapping[str, Any], version: str) -> list[str]:
    """Errors of a built-in Kubernetes object against the upstream schema (strict)."""
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in getattr(exc, "path", ()) or ())
        return [f"{path or '<root>'}: {getattr(exc, 'message', exc)}"]
    return []


def is_builtin(obj: Mapping[str, Any], version: str) -> bool:
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    except kubernetes_validate.ValidationError:
        return True
    return True


def validate_objects(
    objects: Iterable[Mapping[str, Any]], crd_schemas: Mapping[tuple[str, str], Obj]
) -> Iterator[str]:
    """Yield one line per problem; every object must be a known built-in or custom kind."""
    for obj in objects:
        key = (str(obj.get("apiVersion")), str(obj.get("kind")))
        if key in crd_schemas:
            for err in validate_custom(obj, crd_schemas[key]):
                yield f"{ident(obj)}: {err}"
            continue
        for version in KUBE_VERSIONS:
            if not is_builtin(obj, version):
                yield f"{ident(obj)}: no schema for {key} in Kubernetes {version} nor in the CRDs"
                break
            for err in validate_k8s(obj, version):
                yield f"{ident(obj)} (k8s {version}): {err}"
