"""The Helm chart: lint, render with several value sets, validate every object."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from .support import (
    CHART,
    CHART_CRD,
    OPERATOR_CRD,
    Obj,
    Result,
    crd_index,
    load_all,
    load_file,
    run,
    validate_objects,
)

# Value sets the chart must lint and render cleanly with (name -> helm flags).
VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "namespaced": ["watch.scope=namespaced"],
    "namespaced-list-peering": [
        "watch.scope=namespaced",
        "watch.namespaces={team-a,team-b}",
        "peering.enabled=true",
        "replicaCount=2",
        "rbac.watchCRDs=false",
        "example.enabled=true",
        "example.namespace=team-a",
    ],
    "cluster-peering-example": [
        "peering.enabled=true",
        "example.enabled=true",
        "namespace.create=true",
        "image.repository=registry.example.com/kvcluster",
        "image.tag=1.2.3",
        "operator.verbose=true",
        "operator.extraArgs={--log-format=json}",
        "imagePullSecrets[0].name=regcred",
        "serviceAccount.name=kvop",
        "fullnameOverride=kvop",
    ],
}


def sets(*assignments: str) -> list[str]:
    """helm flags for ``key=value`` assignments."""
    return [flag for a in assignments for flag in ("--set", a)]


RELEASE = "kvop-test"
NAMESPACE = "kvcluster-system"


def template(helm: Path, *flags: str, kube_version: str = "1.30.0") -> Result:
    return run(
        [
            helm,
            "template",
            RELEASE,
            CHART,
            "-n",
            NAMESPACE,
            "--include-crds",
            "--kube-version",
            kube_version,
            *flags,
        ]
    )


def render(helm: Path, flags: Sequence[str]) -> list[Obj]:
    result = template(helm, *flags)
    assert result.returncode == 0, result.output
    return load_all(result.stdout)


def chart_crds() -> list[Obj]:
    return [d for f in sorted((CHART / "crds").glob("*.yaml")) for d in load_file(f)]


def by_kind(objects: Sequence[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def operator_container(objects: Sequence[Obj]) -> Obj:
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


# --- lint and render ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(helm: Path, name: str) -> None:
    result = run([helm, "lint", "--strict", CHART, "--namespace", NAMESPACE, *sets(*VALUE_SETS[name])])
    assert result.returncode == 0, result.output
    assert "0 chart(s) failed" in result.output


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_objects_are_valid(helm: Path, name: str) -> None:
    objects = render(helm, sets(*VALUE_SETS[name]))
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "ServiceAccount", "Deployment"} <= kinds
    problems = list(validate_objects(objects, crd_index(chart_crds())))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kube_version", ["1.27.0", "1.30.0", "1.33.0"])
def test_renders_for_supported_kubernetes(helm: Path, kube_version: str) -> None:
    result = template(helm, kube_version=kube_version)
    assert result.returncode == 0, result.output


def test_refuses_kubernetes_older_than_kube_version(helm: Path) -> None:
    result = template(helm, kube_version="1.25.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.output or "incompatible" in result.output


# --- values.schema.json ------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--set", "watch.scope=everywhere"], "watch.scope"),
        (["--set", "replicaCount=-1"], "replicaCount"),
        (["--set", "replicaCount=9"], "replicaCount"),
        (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy"),
        (["--set", "image.repository="], "image.repository"),
        (["--set", "operator.healthPort=80"], "operator.healthPort"),
        (["--set", "watch.namespaces={Not_A_Namespace}"], "watch.namespaces"),
        (["--set", "example.name=Bad_Name"], "example.name"),
        (["--set", "unknownTopLevel=1"], "unknownTopLevel"),
        (["--set", "resources.cpu=1"], "cpu"),
        (["--set-string", "peering.enabled=yes"], "peering.enabled"),
    ],
)
def test_values_schema_rejects_bad_values(helm: Path, flags: list[str], field: str) -> None:
    result = template(helm, *flags)
    assert result.returncode != 0, f"helm template accepted {flags}"
    # Helm 3 names the field `a.b`, Helm 4 as a JSON pointer `/a/b`.
    assert field in result.output or "/" + field.replace(".", "/") in result.output, result.output


def test_several_replicas_need_peering(helm: Path) -> None:
    result = template(helm, "--set", "replicaCount=2")
    assert result.returncode != 0
    assert "peering.enabled" in result.output


def test_example_must_be_in_a_watched_namespace(helm: Path) -> None:
    result = template(
        helm, *sets("watch.scope=namespaced", "watch.namespaces={team-a}", "example.enabled=true")
    )
    assert result.returncode != 0
    assert "is not watched" in result.output


# --- what the objects say ----------------------------------------------------------


def test_chart_crd_is_the_operators_crd() -> None:
    if not OPERATOR_CRD.exists():
        pytest.skip(f"{OPERATOR_CRD} does not exist yet")
    assert CHART_CRD.read_bytes() == OPERATOR_CRD.read_bytes(), (
        "charts/kvcluster-operator/crds/kvclusters.yaml differs from operator/kvoperator/crd.yaml: "
        "run scripts/render-install.sh"
    )


def test_chart_ships_kopf_peering_crds() -> None:
    names = {c["metadata"]["name"] for c in chart_crds()}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= names


def test_default_deployment_is_hardened(helm: Path) -> None:
    objects = render(helm, [])
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["enableServiceLinks"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    # kopf's liveness endpoint is what the probes ask.
    assert container["command"] == ["kvcluster-operator"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    (port,) = container["ports"]
    assert port["containerPort"] == 8080
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}

    # Standalone by default: one replica, never two during a rollout; every namespace.
    assert "--standalone" in container["args"]
    assert not [a for a in container["args"] if a.startswith(("--namespace", "-n"))]
    assert "--node-image=kvcluster:0.1.0" in container["args"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert container["image"] == "kvcluster:0.1.0"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_operator_accepts_the_rendered_arguments(helm: Path, name: str) -> None:
    """The Deployment's args parse with the operator's own command line (kvoperator.main)."""
    main = pytest.importorskip("kvoperator.main", reason="kvoperator.main is not written yet")
    container = operator_container(render(helm, sets(*VALUE_SETS[name])))
    args = [a for a in container["args"] if a != "--log-format=json"]  # an extraArgs example
    config, _verbose = main.parse_args(args, {})
    assert config.liveness_endpoint == f"http://0.0.0.0:{container['ports'][0]['containerPort']}/healthz"
    assert config.default_image
    assert config.standalone == ("--standalone" in args)
    if "watch.scope=namespaced" in VALUE_SETS[name]:
        assert not config.clusterwide and config.namespaces
    else:
        assert config.clusterwide


def _rules(obj: Obj) -> list[Obj]:
    rules = obj.get("rules") or []
    assert isinstance(rules, list)
    return rules


def _grants(rules: Sequence[Obj], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rbac_has_no_wildcards(helm: Path, name: str) -> None:
    for obj in render(helm, sets(*VALUE_SETS[name])):
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in _rules(obj):
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(key, []), f"{obj['kind']} {rule}"
                assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]
                assert "nonResourceURLs" not in rule


def test_cluster_scope_rbac(helm: Path) -> None:
    objects = render(helm, [])
    (role,) = by_kind(objects, "ClusterRole")
    rules = _rules(role)
    crd = load_file(CHART_CRD)[0]["spec"]
    group, plural = crd["group"], crd["names"]["plural"]
    assert _grants(rules, group, plural) == {"get", "list", "watch", "patch"}
    assert _grants(rules, group, f"{plural}/status") == {"get", "patch"}
    assert _grants(rules, group, f"{plural}/finalizers") == {"update"}
    assert _grants(rules, "apps", "statefulsets") == {"get", "create", "patch"}
    assert _grants(rules, "", "secrets") == {"get", "create"}
    # Rolling upgrades delete one node pod at a time (the StatefulSet uses OnDelete).
    assert _grants(rules, "", "pods") == {"get", "list", "watch", "delete"}
    assert "create" in _grants(rules, "", "events")
    assert _grants(rules, "apiextensions.k8s.io", "customresourcedefinitions") == {"get", "list", "watch"}
    # Owned objects go with their KVCluster through the garbage collector; the only deletes are of
    # the backup CronJob (spec.backup removed) and of pods (rolling upgrades).
    deleting = [r for r in rules if "delete" in r["verbs"] or "deletecollection" in r["verbs"]]
    assert sorted((r["apiGroups"], r["resources"], "deletecollection" in r["verbs"]) for r in deleting) == [
        ([""], ["pods"], False),
        (["batch"], ["cronjobs"], False),
    ]
    assert _grants(rules, "batch", "jobs") == {"get", "list", "watch", "create"}
    # Peering is off by default, and so is its permission.
    assert not _grants(rules, "kopf.dev", "clusterkopfpeerings")
    assert not by_kind(objects, "Role")
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_rbac_covers_every_kind_the_operator_uses(helm: Path) -> None:
    """Each resource kind declared in kvoperator.kube may at least be read."""
    kube = pytest.importorskip("kvoperator.kube", reason="kvoperator.kube is not written yet")
    (role,) = by_kind(render(helm, []), "ClusterRole")
    kinds = [v for v in vars(kube).values() if isinstance(v, kube.Kind)]
    assert kinds
    for kind in kinds:
        group = kind.api_version.rpartition("/")[0]
        wanted = "create" if kind.plural == "events" else "get"
        assert wanted in _grants(_rules(role), group, kind.plural), f"no {wanted} on {group}/{kind.plural}"


def test_namespaced_scope_keeps_workload_access_namespaced(helm: Path) -> None:
    objects = render(helm, sets(*VALUE_SETS["namespaced-list-peering"]))
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(objects, "RoleBinding")) == ["team-a", "team-b"]
    # With rbac.watchCRDs=false nothing at all is cluster-wide.
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    for role in roles:
        assert _grants(_rules(role), "kopf.dev", "kopfpeerings") == {"get", "list", "watch", "patch"}
        assert "get" in _grants(_rules(role), "", "secrets")
    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    args = operator_container(objects)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args and "--standalone" not in args
    assert any(a.startswith("--peering=") for a in args)


def test_namespaced_scope_defaults_to_release_namespace(helm: Path) -> None:
    objects = render(helm, sets("watch.scope=namespaced"))
    (role,) = by_kind(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    (cluster_role,) = by_kind(objects, "ClusterRole")  # only the CRD watch
    assert [r["resources"] for r in _rules(cluster_role)] == [["customresourcedefinitions"]]
    assert f"--namespace={NAMESPACE}" in operator_container(objects)["args"]


def test_example_follows_the_crd(helm: Path) -> None:
    objects = render(helm, sets(*VALUE_SETS["cluster-peering-example"]))
    crd = load_file(CHART_CRD)[0]["spec"]
    (example,) = [o for o in objects if o["kind"] == crd["names"]["kind"]]
    storage_version = next(v["name"] for v in crd["versions"] if v.get("storage"))
    assert example["apiVersion"] == f"{crd['group']}/{storage_version}"
    assert example["metadata"]["namespace"] == NAMESPACE
    assert by_kind(objects, "ClusterKopfPeering")
    assert by_kind(objects, "Namespace")
    container = operator_container(objects)
    assert container["image"] == "registry.example.com/kvcluster:1.2.3"
    assert {"--verbose", "--log-format=json"} <= set(container["args"])


def test_notes_tell_what_to_apply_next(helm4: Path) -> None:
    # Helm 3's install --dry-run still asks a cluster; Helm 4's renders NOTES offline.
    result = run([helm4, "install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client"])
    assert result.returncode == 0, result.output
    notes = result.stdout.split("NOTES:", 1)[1]
    crd = load_file(CHART_CRD)[0]["spec"]
    assert "kubectl apply" in notes
    assert f"kind: {crd['names']['kind']}" in notes
    assert "kubectl -n kvcluster-system rollout status" in notes
    assert "scale" in notes and "helm uninstall" in notes
