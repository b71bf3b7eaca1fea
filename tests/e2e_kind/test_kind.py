"""End to end on a real Kubernetes cluster made with kind.

create a kind cluster -> build the image and load it -> helm install the chart ->
apply the small example -> write and read through the Service -> kubectl scale kvc ->
delete a pod -> a rolling upgrade to a new image tag -> no data lost -> a backup to a PVC from the
CronJob -> a second cluster restored from it reads back every key -> uninstall.

Skips, saying why, where docker or kind is missing. Environment:
  KVCLUSTER_TEST_IMAGE       use this already built image (else scripts/build-image.sh builds one)
  KVCLUSTER_TEST_BASE_IMAGE  base for that build (default python:3.11-slim)
  KVCLUSTER_KIND_CLUSTER     use this existing kind cluster, and keep it
  KVCLUSTER_KIND_KEEP=1      keep the cluster this test creates (for debugging)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kvcluster-operator"
SMALL_EXAMPLE = REPO / "manifests" / "examples" / "kvcluster-small.yaml"
TOOLS = REPO / ".tools" / "bin"

CLUSTER = "kvcluster-e2e"
IMAGE_REPO, IMAGE_TAG = "kvcluster", "e2e"
IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}"
NEXT_IMAGE = f"{IMAGE_REPO}:{IMAGE_TAG}-next"
"""The same image under a second tag: what a rolling upgrade moves the pods to."""
RELEASE = "kvcluster-operator"
OPERATOR_NS = "kvcluster-system"
NS = "kv-e2e"
NAME = "demo"

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
    """Poll ``probe`` until it returns something other than None, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value is not None:
                return value
        except Exception as exc:  # keep polling; report the last failure
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass
class Tools:
    kind: str
    docker: str
    helm: str
    kubectl: str
    kubeconfig: Path

    def sh(
        self, argv: Sequence[str], *, timeout: float = 600, stdin: str | None = None, check: bool = True
    ) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def k(self, *args: str, timeout: float = 300, stdin: str | None = None, check: bool = True) -> str:
        return self.sh([self.kubectl, *args], timeout=timeout, stdin=stdin, check=check)

    def kvc(self) -> dict[str, Any]:
        obj = json.loads(self.k("-n", NS, "get", "kvc", NAME, "-o", "json"))
        assert isinstance(obj, dict)
        return obj


def _tool_or_skip(name: str) -> str:
    found = shutil.which(name) or (str(TOOLS / name) if (TOOLS / name).is_file() else None)
    if not found:
        pytest.skip(f"`{name}` is not installed")
    return found


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    docker = _tool_or_skip("docker")
    kind = _tool_or_skip("kind")
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        pytest.skip(f"the Docker daemon is not reachable: {info.stderr.strip()[-300:]}")
    installed = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-tools.sh"), "helm", "kubectl"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if installed.returncode != 0:
        pytest.skip(f"cannot install helm/kubectl: {installed.stderr[-500:]}")
    with tempfile.TemporaryDirectory() as tmp:
        yield Tools(kind, docker, str(TOOLS / "helm"), str(TOOLS / "kubectl"), Path(tmp) / "kubeconfig")


@pytest.fixture(scope="module")
def cluster(tools: Tools) -> Iterator[Tools]:
    existing = os.environ.get("KVCLUSTER_KIND_CLUSTER")
    name = existing or CLUSTER
    if not existing:
        tools.sh([tools.kind, "delete", "cluster", "--name", name], check=False)
        tools.sh([tools.kind, "create", "cluster", "--name", name, "--wait", "180s"], timeout=900)
    tools.sh([tools.kind, "export", "kubeconfig", "--name", name, "--kubeconfig", str(tools.kubeconfig)])
    try:
        image = os.environ.get("KVCLUSTER_TEST_IMAGE")
        if image:
            tools.sh([tools.docker, "tag", image, IMAGE])
        else:
            env = {
                **os.environ,
                "BASE_IMAGE": os.environ.get("KVCLUSTER_TEST_BASE_IMAGE", "python:3.11-slim"),
            }
            subprocess.run(
                ["bash", str(REPO / "scripts" / "build-image.sh"), "--tag", IMAGE],
                env=env, check=True, timeout=1800,
            )  # fmt: skip
        tools.sh([tools.docker, "tag", IMAGE, NEXT_IMAGE])
        for tag in (IMAGE, NEXT_IMAGE):
            tools.sh([tools.kind, "load", "docker-image", tag, "--name", name], timeout=900)
        yield tools
    finally:
        if not existing and os.environ.get("KVCLUSTER_KIND_KEEP") != "1":
            tools.sh([tools.kind, "delete", "cluster", "--name", name], check=False, timeout=300)


# In-cluster client: runs inside a node pod (the image has Python), talks to the
# Service by DNS name with the cluster's bearer token, retries 503/504 until a deadline.
CLIENT = r"""
import json, sys, time, urllib.error, urllib.request
ops, base = json.loads(sys.argv[1]), sys.argv[2]
try:
    token = open("/etc/kvcluster/auth/token").read().strip()
except OSError:
    token = ""
out = []
for method, key, value in ops:
    deadline = time.monotonic() + 60
    while True:
        req = urllib.request.Request(f"{base}/v1/kv/{key}", method=method,
                                     data=value.encode() if value is not None else None)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, body = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode()
        except OSError as e:
            status, body = 0, str(e)
        if status in (0, 503, 504) and time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        out.append([status, body])
        break
print(json.dumps(out))
"""


def kv(
    tools: Tools, pod: str, ops: list[tuple[str, str, str | None]], instance: str = NAME
) -> list[tuple[int, str]]:
    """Run PUT/GET operations from inside ``pod`` against the cluster's client Service."""
    service = f"http://{instance}.{NS}.svc:7000"
    out = tools.k(
        "-n", NS, "exec", pod, "-c", "node", "--",
        "python3", "-c", CLIENT, json.dumps(ops), service,
        timeout=600,
    )  # fmt: skip
    return [(int(s), str(b)) for s, b in json.loads(out)]


def put_all(tools: Tools, pod: str, data: dict[str, str]) -> None:
    results = kv(tools, pod, [("PUT", k, v) for k, v in data.items()])
    bad = [(k, r) for k, r in zip(data, results, strict=True) if r[0] != 200]
    assert not bad, bad


def check_all(tools: Tools, pod: str, data: dict[str, str], instance: str = NAME) -> None:
    results = kv(tools, pod, [("GET", k, None) for k in data], instance)
    lost = [(k, v, r) for (k, v), r in zip(data.items(), results, strict=True) if r != (200, v)]
    assert not lost, f"{len(lost)} of {len(data)} keys lost or wrong: {lost[:5]}"


def settled(tools: Tools, nodes: int) -> bool | None:
    status = tools.kvc().get("status") or {}
    applied = (status.get("applied") or {}).get("nodes")
    ok = status.get("phase") == "Running" and status.get("readyNodes") == nodes and applied in (None, nodes)
    return True if ok else None


def replaced_and_ready(tools: Tools, pod: str, old_uid: str) -> bool | None:
    obj = json.loads(tools.k("-n", NS, "get", "pod", pod, "-o", "json", check=False) or "{}")
    if not obj or obj["metadata"]["uid"] == old_uid:
        return None
    conditions = {c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])}
    return True if conditions.get("Ready") == "True" else None


def ready_pod(tools: Tools, exclude: str = "", instance: str = NAME) -> str:
    selector = f"app.kubernetes.io/instance={instance},app.kubernetes.io/component=node"
    pods = json.loads(tools.k("-n", NS, "get", "pods", "-l", selector, "-o", "json"))["items"]
    for pod in pods:
        name = pod["metadata"]["name"]
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if (
            name != exclude
            and conditions.get("Ready") == "True"
            and not pod["metadata"].get("deletionTimestamp")
        ):
            return str(name)
    raise AssertionError("no ready node pod")


def test_install_scale_delete_pod_uninstall(cluster: Tools) -> None:
    t = cluster
    try:
        # helm install: CRDs from crds/, RBAC, the operator; wait for it to be ready.
        t.sh(
            [t.helm, "install", RELEASE, str(CHART), "--namespace", OPERATOR_NS, "--create-namespace",
             "--set", f"image.repository={IMAGE_REPO}", "--set", f"image.tag={IMAGE_TAG}",
             "--wait", "--timeout", "5m"],
            timeout=420,
        )  # fmt: skip
        t.k("-n", OPERATOR_NS, "rollout", "status", f"deployment/{RELEASE}", "--timeout=120s", timeout=180)

        # Apply the small example in a namespace of its own.
        t.k("create", "namespace", NS)
        example = yaml.safe_load(SMALL_EXAMPLE.read_text(encoding="utf-8"))
        example["metadata"]["namespace"] = NS
        example["metadata"]["name"] = NAME
        t.k("apply", "-f", "-", stdin=yaml.safe_dump(example))
        nodes = int(example["spec"]["nodes"])
        wait_for(f"{nodes} nodes running", lambda: settled(t, nodes), timeout=600)

        # Write and read through the Service.
        data = {f"key-{i:03d}": f"value-{i}" for i in range(50)}
        put_all(t, ready_pod(t), data)
        check_all(t, ready_pod(t), data)

        # Scale through the scale subresource; the operator grows and reshapes.
        t.k("-n", NS, "scale", "kvc", NAME, f"--replicas={nodes + 2}")
        wait_for(f"{nodes + 2} nodes running", lambda: settled(t, nodes + 2), timeout=900)
        assert t.kvc()["status"].get("currentNodes") == nodes + 2
        check_all(t, ready_pod(t), data)

        # Delete a pod: the others keep serving; it comes back; nothing is lost.
        victim = f"{NAME}-1"
        old_uid = t.k("-n", NS, "get", "pod", victim, "-o", "jsonpath={.metadata.uid}").strip()
        t.k("-n", NS, "delete", "pod", victim, "--wait=false")
        more = {f"during-{i:03d}": f"v{i}" for i in range(20)}
        put_all(t, ready_pod(t, exclude=victim), more)
        wait_for(f"{victim} replaced and ready", lambda: replaced_and_ready(t, victim, old_uid), timeout=600)
        wait_for(f"{nodes + 2} nodes running again", lambda: settled(t, nodes + 2), timeout=600)
        check_all(t, victim, {**data, **more})

        # Rolling upgrade: a new image, one pod at a time; nothing is lost.
        t.k(
            "-n",
            NS,
            "patch",
            "kvc",
            NAME,
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": {"image": NEXT_IMAGE}}),
        )

        def upgraded() -> bool | None:
            upgrade = (t.kvc().get("status") or {}).get("upgrade") or {}
            return (
                True if upgrade.get("phase") == "Completed" and upgrade.get("toImage") == NEXT_IMAGE else None
            )

        wait_for("the rolling upgrade to complete", upgraded, timeout=900)
        wait_for(f"{nodes + 2} nodes running after the upgrade", lambda: settled(t, nodes + 2), timeout=600)
        node_pods = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=node"
        jsonpath = "jsonpath={.items[*].spec.containers[0].image}"
        images = t.k("-n", NS, "get", "pods", "-l", node_pods, "-o", jsonpath).split()
        assert images == [NEXT_IMAGE] * (nodes + 2), images
        check_all(t, ready_pod(t), {**data, **more})

        # Backup from the CronJob into a PVC (started by hand, as `kubectl create job --from` does),
        # then a second, smaller cluster created from that file.
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "backups", "namespace": NS},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
        t.k("apply", "-f", "-", stdin=yaml.safe_dump(claim))
        backup = {"schedule": "0 0 1 1 *", "keep": 2, "pvc": {"claimName": "backups", "path": "nightly"}}
        t.k("-n", NS, "patch", "kvc", NAME, "--type", "merge", "-p", json.dumps({"spec": {"backup": backup}}))
        cronjob = f"{NAME}-backup"
        wait_for(
            "the backup CronJob",
            lambda: t.k("-n", NS, "get", "cronjob", cronjob, "-o", "name", check=False).strip() or None,
            timeout=120,
        )
        t.k("-n", NS, "create", "job", "backup-now", f"--from=cronjob/{cronjob}")

        def backed_up() -> dict[str, Any] | None:
            last = (t.kvc().get("status") or {}).get("backup") or {}
            return last if last.get("lastJob") == "backup-now" and last.get("lastResult") else None

        last = wait_for("the backup run", backed_up, timeout=600)
        assert last["lastResult"] == "Succeeded", last
        assert last["lastKeys"] == len(data) + len(more), last
        copy = yaml.safe_load(SMALL_EXAMPLE.read_text(encoding="utf-8"))
        copy["metadata"] = {"name": "copy", "namespace": NS}
        source = {"pvc": {"claimName": "backups", "path": "nightly/" + Path(last["lastFile"]).name}}
        copy["spec"].update(nodes=1, partitions=2, replicas=1, restoreFrom=source)
        t.k("apply", "-f", "-", stdin=yaml.safe_dump(copy))

        def restored() -> bool | None:
            body = json.loads(t.k("-n", NS, "get", "kvc", "copy", "-o", "json"))
            phase = ((body.get("status") or {}).get("restore") or {}).get("phase")
            assert phase != "Failed", body["status"]
            return True if phase == "Succeeded" else None

        wait_for("the restore of the copy", restored, timeout=900)
        check_all(t, ready_pod(t, instance="copy"), {**data, **more}, instance="copy")
        t.k("-n", NS, "delete", "kvc", "copy", "--timeout=300s", timeout=360)

        # Uninstall: the cluster first (the operator cleans up), then the chart.
        t.k("-n", NS, "delete", "kvc", NAME, "--timeout=300s", timeout=360)
        wait_for(
            "node pods gone",
            lambda: (
                True
                if not t.k(
                    "-n", NS, "get", "pods", "-l", f"app.kubernetes.io/instance={NAME}", "-o", "name"
                ).strip()
                else None
            ),
            timeout=300,
        )
        t.sh(
            [t.helm, "uninstall", RELEASE, "--namespace", OPERATOR_NS, "--wait", "--timeout", "3m"],
            timeout=240,
        )
        assert not t.k("-n", OPERATOR_NS, "get", "deployments", "-o", "name").strip()
        # Helm leaves CRDs in place on purpose (deleting them deletes every KVCluster).
        assert t.k("get", "crd", "kvclusters.kvcluster.io", "-o", "name").strip()
    except BaseException:
        print(t.k("get", "all,kvc,pvc", "-A", "-o", "wide", check=False))
        print(t.k("-n", OPERATOR_NS, "logs", f"deployment/{RELEASE}", "--tail=200", check=False))
        raise
