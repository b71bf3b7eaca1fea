"""The spec rules the operator enforces itself, and the CRD that mirrors them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import jsonschema
import pytest

from kvoperator import crd
from kvoperator.main import parse_args
from kvoperator.spec import AppliedState, SpecError, check_transition, parse_quantity, parse_spec


def parse(**spec: Any) -> Any:
    return parse_spec(spec, default_image="img:1")


def test_defaults_match_the_crd_defaults() -> None:
    s = parse()
    props = crd.version_schema()["properties"]["spec"]["properties"]
    assert (s.nodes, s.partitions, s.replicas) == (
        props["nodes"]["default"],
        props["partitions"]["default"],
        props["replicas"]["default"],
    )
    assert s.storage_size == props["storage"]["properties"]["size"]["default"]
    assert s.durability == props["durability"]["default"]
    assert s.max_key_bytes == props["limits"]["properties"]["maxKeyBytes"]["default"]
    assert s.termination_grace_seconds == props["terminationGracePeriodSeconds"]["default"]
    assert s.image == "img:1"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"replicas": 4, "nodes": 3}, "must not exceed nodes"),
        ({"replicas": 0}, "replicas must be between"),
        ({"partitions": 0}, "partitions must be between"),
        ({"nodes": 0}, "nodes must be between"),
        ({"nodes": "3"}, "must be an integer"),
        ({"storage": {"size": "lots"}}, "not a quantity"),
        ({"storage": {"size": "0"}}, "must be positive"),
        ({"durability": "maybe"}, "durability"),
        ({"scheduling": {"podAntiAffinity": "Sometimes"}}, "podAntiAffinity"),
    ],
)
def test_invalid_specs(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(**spec)
    assert info.value.reason == "InvalidSpec" and fragment in info.value.message


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", 2**30),
        ("1024Mi", 2**30),
        ("500M", 500 * 10**6),
        ("1.5Gi", 3 * 2**29),
        ("2e3", 2000),
        ("100m", Decimal("0.1")),
    ],
)
def test_quantities(text: str, value: int | Decimal) -> None:
    assert parse_quantity(text) == value


def test_transition_rules() -> None:
    applied = AppliedState(storage_size="10Gi", storage_class="fast", auth_secret=None, created=True)
    check_transition(parse(storage={"size": "10240Mi", "storageClassName": "fast"}), applied)  # same size
    check_transition(parse(storage={"size": "20Gi", "storageClassName": "fast"}), applied)  # growth is fine
    for spec, fragment in [
        ({"storage": {"size": "9Gi", "storageClassName": "fast"}}, "cannot shrink"),
        ({"storage": {"size": "10Gi", "storageClassName": "slow"}}, "immutable"),
        (
            {"storage": {"size": "10Gi", "storageClassName": "fast"}, "auth": {"secretName": "x"}},
            "auth.secretName",
        ),
    ]:
        with pytest.raises(SpecError) as info:
            check_transition(parse(**spec), applied)
        assert info.value.reason == "UnsafeChange" and fragment in info.value.message
    check_transition(parse(storage={"size": "1Mi"}), AppliedState(None, None, None, created=False))


def test_crd_shape() -> None:
    manifest = crd.load_crd()
    assert manifest["metadata"]["name"] == crd.CRD_NAME
    assert manifest["spec"]["names"]["shortNames"] == ["kvc"]
    version = manifest["spec"]["versions"][0]
    assert version["name"] == crd.VERSION and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.nodes"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == ".status.readyNodes" and columns["Nodes"] == ".spec.nodes"
    assert {"Partitions", "Replicas", "Phase", "Age"} <= set(columns)


def _rules(schema: dict[str, Any]) -> list[str]:
    found = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
    for sub in schema.get("properties", {}).values():
        found += _rules(sub)
    return found


def test_cel_rules_cover_the_operator_checks() -> None:
    rules = " ".join(_rules(crd.version_schema()))
    assert "self.replicas <= self.nodes" in rules
    assert "oldSelf.size" in rules and "quantity" in rules  # storage never shrinks
    assert "self.storageClassName == oldSelf.storageClassName" in rules
    assert "self.auth == oldSelf.auth" in rules
    assert rules.count("self >= 1") == 3  # nodes, partitions, replicas


def test_schema_accepts_a_full_object_and_rejects_nonsense() -> None:
    schema = crd.version_schema()
    obj = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "demo"},
        "spec": {
            "nodes": 5,
            "partitions": 16,
            "replicas": 3,
            "image": "kvcluster:1",
            "storage": {"size": "10Gi", "storageClassName": "fast"},
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": 2147483648}},
            "scheduling": {
                "podAntiAffinity": "Required",
                "nodeSelector": {"a": "b"},
                "tolerations": [{"key": "k"}],
            },
            "limits": {"maxKeyBytes": 256, "maxValueBytes": 65536},
            "auth": {"secretName": "creds"},
            "durability": "relaxed",
        },
        "status": {
            "phase": "Reshaping",
            "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterReady", "message": "ok"}],
            "reshape": {"phase": "Drain", "target": {"nodes": 3, "partitions": 16, "replicas": 3}},
        },
    }
    jsonschema.validate(obj, schema)
    for bad in (
        {"nodes": 0},
        {"durability": "never"},
        {"scheduling": {"podAntiAffinity": "x"}},
        {"nodes": "3"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**obj, "spec": {**obj["spec"], **bad}}, schema)


def test_main_arguments() -> None:
    config, verbose = parse_args(
        ["-n", "a", "-n", "b", "--priority", "7", "-v"], {"KVOPERATOR_NODE_IMAGE": "img:2"}
    )
    assert config.namespaces == ("a", "b") and not config.clusterwide
    assert config.priority == 7 and verbose and config.default_image == "img:2"
    config, _ = parse_args([], {})
    assert config.clusterwide and config.peering_name == "kvcluster"
    assert config.priority is not None and config.priority > 0  # random: replicas never tie
