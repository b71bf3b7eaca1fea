"""The emulator subclass fixes, one test per gap it patches in kmock 0.8."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from conftest import NAMESPACE
from k8s_emulator import K8sEmulator, merge_diff, merge_patch

CM = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
KVC = f"/apis/kvcluster.io/v1alpha1/namespaces/{NAMESPACE}/kvclusters"


async def _json(resp: aiohttp.ClientResponse) -> Any:
    return json.loads(await resp.read())


async def test_create_stamps_identity_and_answers_201(k8s: K8sEmulator) -> None:
    resp = await k8s.post(CM, json={"metadata": {"name": "a"}, "data": {"k": "v"}})
    assert resp.status == 201
    body = await _json(resp)
    meta = body["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == NAMESPACE


async def test_generate_name_gives_distinct_objects(k8s: K8sEmulator) -> None:
    names = set()
    for _ in range(2):
        resp = await k8s.post(
            f"/api/v1/namespaces/{NAMESPACE}/events", json={"metadata": {"generateName": "e-"}}
        )
        assert resp.status == 201
        names.add((await _json(resp))["metadata"]["name"])
    assert len(names) == 2 and all(n.startswith("e-") for n in names)


async def test_resource_version_moves_and_generation_follows_spec_only(k8s: K8sEmulator) -> None:
    created = await _json(await k8s.post(KVC, json={"metadata": {"name": "c"}, "spec": {"nodes": 3}}))
    rv0 = int(created["metadata"]["resourceVersion"])
    patched = await _json(await k8s.patch(f"{KVC}/c", json={"spec": {"nodes": 5}}))
    assert int(patched["metadata"]["resourceVersion"]) > rv0
    assert patched["metadata"]["generation"] == 2
    status = await _json(await k8s.patch(f"{KVC}/c/status", json={"status": {"phase": "Running"}}))
    assert status["metadata"]["generation"] == 2  # status writes never bump the generation
    assert status["status"] == {"phase": "Running"}
    # A no-op patch keeps the version (as the API server does).
    again = await _json(await k8s.patch(f"{KVC}/c/status", json={"status": {"phase": "Running"}}))
    assert again["metadata"]["resourceVersion"] == status["metadata"]["resourceVersion"]


async def test_status_subresource_is_split_from_the_main_resource(k8s: K8sEmulator) -> None:
    await k8s.post(KVC, json={"metadata": {"name": "s"}, "spec": {"nodes": 3}})
    main = await _json(await k8s.patch(f"{KVC}/s", json={"spec": {"nodes": 4}, "status": {"phase": "X"}}))
    assert "status" not in main and main["spec"]["nodes"] == 4
    sub = await _json(
        await k8s.patch(f"{KVC}/s/status", json={"spec": {"nodes": 9}, "status": {"phase": "Y"}})
    )
    assert sub["spec"]["nodes"] == 4 and sub["status"]["phase"] == "Y"


async def test_failed_json_patch_test_is_422(k8s: K8sEmulator) -> None:
    created = await _json(await k8s.post(CM, json={"metadata": {"name": "j", "finalizers": ["f"]}}))
    rv = created["metadata"]["resourceVersion"]
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    resp = await k8s.patch(f"{CM}/j", json=stale, headers={"Content-Type": "application/json-patch+json"})
    assert resp.status == 422
    fresh = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    resp = await k8s.patch(f"{CM}/j", json=fresh, headers={"Content-Type": "application/json-patch+json"})
    assert resp.status == 200
    assert (await _json(resp))["metadata"].get("finalizers") == []


async def test_namespaces_are_listed(k8s: K8sEmulator) -> None:
    resp = await k8s.get("/api/v1/namespaces")
    assert resp.status == 200
    assert [ns["metadata"]["name"] for ns in (await _json(resp))["items"]] == [NAMESPACE]


async def _read_events(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(5):
        while len(events) < count:
            line = await resp.content.readline()
            if line.strip():
                events.append(json.loads(line))
    return events


async def test_watch_resumes_after_resource_version_as_json(k8s: K8sEmulator) -> None:
    await k8s.post(CM, json={"metadata": {"name": "w1"}})
    listing = await _json(await k8s.get(CM))
    since = listing["metadata"]["resourceVersion"]
    await k8s.post(CM, json={"metadata": {"name": "w2"}})  # after the listing, before the watch
    async with k8s.get(CM, params={"watch": "true", "resourceVersion": since}) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        await k8s.delete(f"{CM}/w1")
        events = await _read_events(resp, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w2"),
        ("DELETED", "w1"),
    ]
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) > int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )


async def test_watch_without_version_lists_then_follows(k8s: K8sEmulator) -> None:
    await k8s.post(CM, json={"metadata": {"name": "x"}})
    async with k8s.get(CM, params={"watch": "true"}) as resp:
        await k8s.patch(f"{CM}/x", json={"data": {"a": "b"}})
        events = await _read_events(resp, 2)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]


async def test_watch_honours_timeout_seconds(k8s: K8sEmulator) -> None:
    async with asyncio.timeout(5), k8s.get(CM, params={"watch": "true", "timeoutSeconds": "1"}) as resp:
        assert await resp.read() == b""  # ends by itself, no events


async def test_wait_changed_wakes_on_writes(k8s: K8sEmulator) -> None:
    waiter = asyncio.create_task(k8s.wait_changed(timeout=5))
    await asyncio.sleep(0)
    await k8s.post(CM, json={"metadata": {"name": "n"}})
    async with asyncio.timeout(2):
        await waiter


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}}),
        ({"a": [1, 2]}, {"a": [2], "x": {"y": "z"}}),
        ({}, {"m": {"n": {"o": 1}}}),
    ],
)
def test_merge_diff_roundtrips(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert merge_patch(old, merge_diff(old, new)) == new
