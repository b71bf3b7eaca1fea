"""Unit tests of the pure builders: every object validates against the Kubernetes schemas."""

from __future__ import annotations

import base64
from typing import Any

import kopf
import kubernetes_validate
import pytest

from kvoperator import config, pdb, secret, services, statefulset
from kvoperator.resources import (
    HASH_ANNOTATION,
    ClusterRef,
    owned_by,
    owner_reference,
    selector_string,
    spec_hash,
)
from kvoperator.spec import Layout, parse_spec

REF = ClusterRef(name="demo", namespace="kv", uid="0b0f6f4e-uid")
K8S_VERSION = kubernetes_validate.latest_version()


def spec(**over: Any) -> Any:
    return parse_spec({"nodes": 3, "partitions": 8, "replicas": 3} | over, default_image="kvcluster:1.0")


def valid(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_owner_reference_matches_kopf() -> None:
    body = kopf.Body(
        {
            "apiVersion": "kvcluster.io/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "demo", "uid": REF.uid},
        }
    )
    assert dict(owner_reference(REF)) == kopf.build_owner_reference(body)


def test_statefulset_shape() -> None:
    sts = statefulset.build_statefulset(REF, spec(), replicas=3, auth_secret="demo-auth")
    valid(sts)
    s = sts["spec"]
    assert s["replicas"] == 3
    assert s["serviceName"] == "demo-headless"
    assert s["podManagementPolicy"] == "Parallel"
    assert s["persistentVolumeClaimRetentionPolicy"] == {"whenScaled": "Delete", "whenDeleted": "Retain"}
    pod = s["template"]["spec"]
    node = pod["containers"][0]
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert node["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert node["securityContext"]["runAsNonRoot"] and node["securityContext"]["readOnlyRootFilesystem"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["enableServiceLinks"] is False
    args = node["args"]
    assert args[args.index("--advertise-url") + 1] == "http://$(POD_NAME).demo-headless.kv.svc:7000"
    assert args[args.index("--data-dir") + 1] == "/data"
    assert args[args.index("--durability") + 1] == "fsync"
    env = {e["name"]: e for e in node["env"]}
    assert env["KVCLUSTER_ID_FROM_HOSTNAME"]["value"] == "1"
    for var, key in [("KVCLUSTER_PEERS", "peers"), ("KVCLUSTER_CLUSTER_STATE", "cluster-state")]:
        assert env[var]["valueFrom"]["configMapKeyRef"] == {"name": "demo-config", "key": key}
    claim = s["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_template_does_not_depend_on_layout() -> None:
    """Scaling or reshaping must never roll the pods: the template ignores nodes/partitions/replicas."""
    a = statefulset.build_statefulset(REF, spec(), replicas=3, auth_secret="s")
    b = statefulset.build_statefulset(
        REF, spec(nodes=7, partitions=32, replicas=5), replicas=7, auth_secret="s"
    )
    assert a["spec"]["template"] == b["spec"]["template"]
    assert a["metadata"]["annotations"][HASH_ANNOTATION] == b["metadata"]["annotations"][HASH_ANNOTATION]
    c = statefulset.build_statefulset(REF, spec(durability="relaxed"), replicas=3, auth_secret="s")
    assert c["metadata"]["annotations"][HASH_ANNOTATION] != a["metadata"]["annotations"][HASH_ANNOTATION]


def test_scheduling_options() -> None:
    sched = {
        "podAntiAffinity": "Required",
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "kv", "effect": "NoSchedule"}],
        "nodeSelector": {"disk": "ssd"},
    }
    sts = statefulset.build_statefulset(
        REF, spec(scheduling=sched, resources={"requests": {"cpu": "500m"}}), replicas=3, auth_secret="s"
    )
    valid(sts)
    pod = sts["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    assert pod["tolerations"][0]["key"] == "dedicated" and pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "500m"}}
    none = statefulset.build_statefulset(
        REF, spec(scheduling={"podAntiAffinity": "None"}), replicas=1, auth_secret="s"
    )
    assert "affinity" not in none["spec"]["template"]["spec"]
    user = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}
    own = statefulset.build_statefulset(REF, spec(scheduling={"affinity": user}), replicas=1, auth_secret="s")
    assert own["spec"]["template"]["spec"]["affinity"] == user  # the user's own rule wins


def test_mutable_patch_leaves_immutable_fields_and_replicas_out() -> None:
    patch = statefulset.mutable_patch(statefulset.build_statefulset(REF, spec(), replicas=3, auth_secret="s"))
    assert set(patch["spec"]) == {"template", "updateStrategy", "persistentVolumeClaimRetentionPolicy"}


def test_services() -> None:
    client, headless = services.build_client_service(REF), services.build_headless_service(REF)
    valid(client)
    valid(headless)
    assert client["spec"]["ports"][0]["port"] == 7000 and client["spec"]["type"] == "ClusterIP"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert client["spec"]["selector"] == headless["spec"]["selector"]


@pytest.mark.parametrize(
    ("replicas", "unavailable"), [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (7, 3), (9, 4)]
)
def test_pdb_never_allows_losing_a_quorum(replicas: int, unavailable: int) -> None:
    assert pdb.max_unavailable(replicas) == unavailable
    # For every partition on `replicas` distinct nodes, losing `unavailable` nodes leaves a majority.
    assert replicas - unavailable > replicas // 2
    # ...and one more would not.
    assert replicas - (unavailable + 1) <= replicas // 2
    obj = pdb.build_pdb(REF, replicas)
    valid(obj)
    assert obj["spec"]["maxUnavailable"] == unavailable


def test_configmap_and_peers() -> None:
    cm = config.build_configmap(REF, Layout(3, 8, 3), bootstrapped=False)
    valid(cm)
    assert cm["data"]["cluster-state"] == "new"
    assert cm["data"]["peers"] == ",".join(
        f"{i + 1}=http://demo-{i}.demo-headless.kv.svc:7000" for i in range(3)
    )
    assert (cm["data"]["partitions"], cm["data"]["replicas"]) == ("8", "3")
    assert (
        config.build_configmap(REF, Layout(3, 8, 3), bootstrapped=True)["data"]["cluster-state"] == "existing"
    )


def test_secret() -> None:
    creds = secret.generate_credentials()
    assert creds["token"] != creds["cluster-secret"] and len(creds["token"]) >= 32
    obj = secret.build_secret(REF, creds)
    valid(obj)
    assert base64.b64decode(obj["data"]["token"]).decode() == creds["token"]
    assert secret.decode_secret_value(obj, "token") == creds["token"]
    assert secret.decode_secret_value({"stringData": {"token": "t"}}, "token") == "t"
    assert secret.decode_secret_value(obj, "missing") is None


def test_every_object_is_owned_and_labelled() -> None:
    objs = [
        statefulset.build_statefulset(REF, spec(), replicas=3, auth_secret="s"),
        services.build_client_service(REF),
        services.build_headless_service(REF),
        pdb.build_pdb(REF, 3),
        config.build_configmap(REF, Layout(3, 8, 3), bootstrapped=False),
        secret.build_secret(REF, secret.generate_credentials()),
    ]
    for obj in objs:
        assert owned_by(obj, REF)
        assert obj["metadata"]["namespace"] == "kv"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert not owned_by(objs[0], ClusterRef("demo", "kv", "another-uid"))
    assert selector_string(REF) == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=kvcluster"


def test_spec_hash_ignores_its_own_annotation() -> None:
    obj = services.build_client_service(REF)
    assert spec_hash(obj) == obj["metadata"]["annotations"][HASH_ANNOTATION]
