"""Fixtures for the operator tests: an emulated API server, a fake node admin API,
a test-side StatefulSet controller and the operator itself running in a thread."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest
from k8s_emulator import K8sEmulator

from kvoperator.crd import load_crd

NAMESPACE = "kv"

# kopf's peering resources, as the Helm chart installs them.
PEERING_CRD = {
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
        "versions": [{"name": "v1"}],
    }
}


@pytest.fixture
async def k8s() -> AsyncIterator[K8sEmulator]:
    """The emulated API server with the namespace and the CRDs the operator needs."""
    async with K8sEmulator() as emulator, kmock.Server(emulator):
        emulator.add_namespace(NAMESPACE)
        emulator.add_crd(load_crd())
        emulator.add_crd(PEERING_CRD)
        yield emulator


# --- the operator against the emulator --------------------------------------------

import asyncio  # noqa: E402
import inspect  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import kopf  # noqa: E402
from fake_admin import FakeNodes  # noqa: E402
from operator_harness import OperatorThread  # noqa: E402
from sts_controller import StatefulSetController  # noqa: E402

from kvoperator.controller import OperatorConfig  # noqa: E402
from kvoperator.kube import KVCLUSTERS, KubeClient  # noqa: E402

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "ignore:read_binary is deprecated:DeprecationWarning")


@pytest.fixture
async def kube(k8s: K8sEmulator) -> AsyncIterator[KubeClient]:
    """A client for the test's own reads and writes (the operator has its own)."""
    url = str(k8s.url).rstrip("/")
    client = KubeClient(lambda: kopf.ConnectionInfo(server=url))
    yield client
    await client.close()


@pytest.fixture
async def nodes() -> AsyncIterator[FakeNodes]:
    async with FakeNodes() as fake:
        yield fake


@pytest.fixture
async def controller(
    k8s: K8sEmulator, kube: KubeClient, nodes: FakeNodes
) -> AsyncIterator[StatefulSetController]:
    async with StatefulSetController(
        kube,
        NAMESPACE,
        wait_changed=k8s.wait_changed,
        on_pods_changed=nodes.pods_changed,
        readiness=nodes.ready,
    ) as ctl:
        yield ctl
    assert not ctl.errors, ctl.errors


@pytest.fixture
def config(nodes: FakeNodes) -> OperatorConfig:
    return OperatorConfig(
        default_image="kvcluster:test",
        admin_url_template=nodes.url,
        poll_interval=0.25,
        retry_delay=0.25,
    )


@pytest.fixture
def make_operator(k8s: K8sEmulator, config: OperatorConfig) -> Callable[..., OperatorThread]:
    def make(**kwargs: Any) -> OperatorThread:
        return OperatorThread(str(k8s.url).rstrip("/"), config, namespace=NAMESPACE, **kwargs)

    return make


@pytest.fixture
async def operator(
    make_operator: Callable[..., OperatorThread], controller: StatefulSetController
) -> AsyncIterator[OperatorThread]:
    async with make_operator() as op:
        yield op


async def eventually(
    check: Callable[[], T | Awaitable[T | None] | None],
    *,
    k8s: K8sEmulator | None = None,
    timeout: float = 15,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy, waking on every API write; bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        result = check()
        last = await result if inspect.isawaitable(result) else result
        if last:
            return last  # type: ignore[no-any-return]
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        if k8s is not None:
            await k8s.wait_changed(0.1)
        else:
            await asyncio.sleep(0.05)


async def get_cluster(kube: KubeClient, name: str) -> dict[str, Any] | None:
    return await kube.get(KVCLUSTERS.path(NAMESPACE, name))
