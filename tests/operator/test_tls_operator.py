"""The operator's TLS: the Secret it generates, and how pods mount a Secret in cert-manager's layout."""

from __future__ import annotations

import asyncio
import base64
import ssl
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from conftest import NAMESPACE, eventually
from k8s_emulator import K8sEmulator
from operator_harness import OperatorThread
from sts_controller import StatefulSetController

from kvoperator import config, statefulset
from kvoperator.kube import KVCLUSTERS, SECRETS, STATEFULSETS, KubeClient
from kvoperator.resources import ClusterRef
from kvoperator.spec import AppliedState, SpecError, check_transition, parse_spec
from kvoperator.tlssecret import build_tls_secret, generate_tls_material

REF = ClusterRef(name="demo", namespace="kv", uid="0b0f6f4e-uid")


def tls_spec(**tls: Any) -> Any:
    return parse_spec({"nodes": 3, "partitions": 8, "replicas": 3, "tls": tls}, default_image="kvcluster:1.0")


def test_a_given_secret_is_mounted_and_the_node_flags_point_at_it() -> None:
    spec = tls_spec(enabled=True, secretName="demo-certs")
    sts = statefulset.build_statefulset(REF, spec, replicas=3, auth_secret="demo-auth")
    kubernetes_validate.validate(sts, kubernetes_validate.latest_version(), strict=True)
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    flag = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    assert flag["--tls-cert"] == "/etc/kvcluster/tls/tls.crt"
    assert flag["--tls-key"] == "/etc/kvcluster/tls/tls.key"
    assert flag["--tls-ca"] == flag["--peer-tls-ca"] == "/etc/kvcluster/tls/ca.crt"
    assert flag["--advertise-url"].startswith("https://$(POD_NAME).demo-headless.kv.svc:")
    assert {"name": "tls", "mountPath": "/etc/kvcluster/tls", "readOnly": True} in container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "demo-certs"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    peers = config.build_configmap(REF, spec.layout, bootstrapped=False, tls=True)["data"]["peers"]
    assert all(p.split("=", 1)[1].startswith("https://") for p in peers.split(","))


def test_without_tls_nothing_changes() -> None:
    spec = tls_spec(enabled=False)
    sts = statefulset.build_statefulset(REF, spec, replicas=3, auth_secret="demo-auth")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--tls") for a in container["args"])
    assert all(v["name"] != "tls" for v in sts["spec"]["template"]["spec"]["volumes"])
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


async def _handshake(material: dict[str, bytes], ca_pem: bytes, server_name: str, tmp: Path) -> None:
    """A real TLS connection to a server presenting the generated node certificate."""
    (tmp / "tls.crt").write_bytes(material["tls.crt"])
    (tmp / "tls.key").write_bytes(material["tls.key"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_name), 5
        )
        assert await asyncio.wait_for(reader.read(), 5) == b"ok"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_generated_certificate_is_trusted_for_every_pod_name_and_only_by_its_ca(tmp_path: Path) -> None:
    material = generate_tls_material(REF)
    secret = build_tls_secret(REF, material)
    assert secret["type"] == "kubernetes.io/tls" and sorted(secret["data"]) == [
        "ca.crt",
        "tls.crt",
        "tls.key",
    ]
    for name in ("demo-0.demo-headless.kv.svc", "demo-7.demo-headless.kv.svc", "demo.kv.svc"):
        await _handshake(material, material["ca.crt"], name, tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(material, material["ca.crt"], "demo-0.other-headless.kv.svc", tmp_path)
    other = generate_tls_material(REF)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(material, other["ca.crt"], "demo-0.demo-headless.kv.svc", tmp_path)


async def test_operator_generates_the_tls_secret_before_the_pods_mount_it(
    k8s: K8sEmulator,
    kube: KubeClient,
    controller: StatefulSetController,
    operator: OperatorThread,
    tmp_path: Path,
) -> None:
    await kube.create(
        KVCLUSTERS.path(NAMESPACE),
        {
            "apiVersion": "kvcluster.io/v1alpha1",
            "kind": "KVCluster",
            "metadata": {"name": "demo", "namespace": NAMESPACE},
            "spec": {"nodes": 3, "partitions": 4, "replicas": 3, "tls": {"enabled": True}},
        },
    )

    async def pods_with_certs() -> bool:
        return len(controller.pods) == 3 and all("tls.crt" in p.files for p in controller.pods.values())

    await eventually(pods_with_certs, k8s=k8s, what="three pods with the TLS Secret mounted")
    secret = await kube.get(SECRETS.path(NAMESPACE, "demo-tls"))
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    material = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert all(p.files["ca.crt"] == material["ca.crt"].decode() for p in controller.pods.values())
    body = await kube.get(KVCLUSTERS.path(NAMESPACE, "demo"))
    assert body is not None and body["status"]["tlsEnabled"] is True
    sts = await kube.get(STATEFULSETS.path(NAMESPACE, "demo"))
    assert sts is not None
    assert "--peer-tls-ca" in sts["spec"]["template"]["spec"]["containers"][0]["args"]
    pod_name = f"demo-0.demo-headless.{NAMESPACE}.svc"
    await _handshake(material, material["ca.crt"], pod_name, tmp_path)
    # A later pass keeps the Secret: regenerating it would split nodes that trust different CAs.
    passes = operator.operator.passes
    await kube.patch(KVCLUSTERS.path(NAMESPACE, "demo"), {"metadata": {"labels": {"touched": "yes"}}})
    await eventually(lambda: operator.operator.passes > passes, k8s=k8s, what="another reconcile pass")
    again = await kube.get(SECRETS.path(NAMESPACE, "demo-tls"))
    assert again is not None and again["data"] == secret["data"]


def test_tls_cannot_be_switched_on_or_off_after_creation() -> None:
    applied = AppliedState(None, None, None, created=True, tls_enabled=False)
    with pytest.raises(SpecError, match=r"tls\.enabled is fixed"):
        check_transition(tls_spec(enabled=True), applied)
    check_transition(tls_spec(enabled=False), applied)
    # A new certificate Secret is a rotation, not a change of mode.
    check_transition(
        tls_spec(enabled=True, secretName="other"),
        AppliedState(None, None, None, created=True, tls_enabled=True),
    )
