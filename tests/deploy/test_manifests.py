"""The plain manifests: install.yaml is the rendered chart, and every file validates."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from .support import (
    CHART,
    KUBE_VERSIONS,
    MANIFESTS,
    OPERATOR_CRD,
    SCRIPTS,
    Obj,
    crd_index,
    load_file,
    run,
    validate_custom,
    validate_k8s,
    validate_objects,
)

INSTALL = MANIFESTS / "install.yaml"
EXAMPLES = MANIFESTS / "examples"
MANIFEST_FILES = sorted(MANIFESTS.rglob("*.yaml"))


def all_crds() -> list[Obj]:
    crds = [d for f in sorted((CHART / "crds").glob("*.yaml")) for d in load_file(f)]
    if OPERATOR_CRD.exists():
        crds += load_file(OPERATOR_CRD)  # the source of truth wins (later keys overwrite)
    return crds


def kvcluster_schema() -> Obj:
    (crd,) = load_file(OPERATOR_CRD if OPERATOR_CRD.exists() else CHART / "crds" / "kvclusters.yaml")
    spec = crd["spec"]
    version = next(v for v in spec["versions"] if v.get("storage"))
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def examples() -> list[Obj]:
    return [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in load_file(f) if d["kind"] == "KVCluster"]


def test_install_yaml_is_the_rendered_chart(helm4: Path) -> None:
    """manifests/install.yaml and the chart's CRD copy are what scripts/render-install.sh makes."""
    result = run(["bash", SCRIPTS / "render-install.sh", "--check"], env={"HELM": str(helm4)})
    assert result.returncode == 0, f"stale: run scripts/render-install.sh\n{result.stderr[-4000:]}"


def test_install_yaml_holds_crds_namespace_rbac_operator() -> None:
    objects = load_file(INSTALL)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("CustomResourceDefinition") == 3
    # CRDs and the namespace come before anything that needs them.
    assert kinds.index("Namespace") < kinds.index("ServiceAccount") < kinds.index("Deployment")
    assert max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition") < kinds.index("Namespace")
    assert {"ClusterRole", "ClusterRoleBinding"} <= set(kinds)
    (ns,) = [o for o in objects if o["kind"] == "Namespace"]
    namespaced = [o for o in objects if o["metadata"].get("namespace")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {ns["metadata"]["name"]}
    # Nothing that needs a CRD to be established first (kubectl apply cannot order that).
    assert not [o for o in objects if o["apiVersion"].split("/")[0] in ("kvcluster.io", "kopf.dev")]


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_file_is_valid(path: Path) -> None:
    objects = load_file(path)
    assert objects, f"{path} holds no objects"
    problems = list(validate_objects(objects, crd_index(all_crds())))
    assert not problems, "\n".join(problems)


def test_examples_small_and_production() -> None:
    by_name = {e["metadata"]["name"]: e for e in examples()}
    assert len(by_name) >= 2, "want a small and a production-like KVCluster in manifests/examples/"
    sizes = sorted(e["spec"]["nodes"] for e in by_name.values())
    assert sizes[0] <= 3 < sizes[-1]
    for example in by_name.values():
        spec = example["spec"]
        # The CRD's CEL rule `self.replicas <= self.nodes`, which jsonschema cannot run.
        assert spec.get("replicas", 3) <= spec.get("nodes", 3)
        assert not validate_custom(example, kvcluster_schema())


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s.__setitem__("replicationFactor", 3), "replicationFactor"),
        (lambda s: s.__setitem__("nodes", 0), "nodes"),
        (lambda s: s.__setitem__("nodes", "three"), "nodes"),
        (lambda s: s.__setitem__("durability", "sometimes"), "durability"),
        (lambda s: s["storage"].__setitem__("sise", "1Gi"), "storage"),
    ],
)
def test_crd_schema_check_catches_mistakes(mutate: object, expected: str) -> None:
    """The CRD-based validation is not vacuous: typical mistakes in a KVCluster fail."""
    example = copy.deepcopy(examples()[0])
    assert callable(mutate)
    mutate(example["spec"])
    errors = validate_custom(example, kvcluster_schema())
    assert errors and any(expected in e for e in errors), errors


def test_kubernetes_schema_check_catches_mistakes() -> None:
    """kubernetes-validate is strict: unknown fields and wrong types fail."""
    (deployment,) = [o for o in load_file(INSTALL) if o["kind"] == "Deployment"]
    for version in KUBE_VERSIONS:
        assert not validate_k8s(deployment, version)
        typo = copy.deepcopy(deployment)
        typo["spec"]["replica"] = 1
        assert validate_k8s(typo, version)
        wrong_type = copy.deepcopy(deployment)
        wrong_type["spec"]["replicas"] = "one"
        assert validate_k8s(wrong_type, version)
