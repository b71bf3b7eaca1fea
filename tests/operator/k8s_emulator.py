"""kmock 0.8's KubernetesEmulator, patched to behave like an API server for kopf.

Each gap below made kopf misbehave against the stock emulator (hangs of
``consistency_timeout``, lost or duplicated events, failed finalizer
removal); each fix is covered by ``test_k8s_emulator.py``:

1. Objects get no ``uid``, ``resourceVersion``, ``generation`` or
   ``creationTimestamp``; ``generateName`` is ignored (kopf's Events use it,
   so the second Event conflicts with the first). -> stamped on create;
   ``resourceVersion`` moves on every write, ``generation`` on spec changes.
2. Create answers 200; Kubernetes answers 201. -> 201.
3. Watches ignore ``resourceVersion`` (every reconnect replays all objects as
   ADDED), lose events written between the snapshot and the subscription,
   never end (``timeoutSeconds`` ignored, and a disconnected client leaves
   the handler hanging), and stream ``application/octet-stream``. -> events
   are kept per resource and replayed after the requested version; snapshot
   and subscription are taken atomically; ``timeoutSeconds`` and
   disconnects end the stream; ``application/json``.
4. ``GET /api/v1/namespaces`` fails: kmock's path parser reads the word
   ``namespaces`` as the start of ``namespaces/<ns>/...`` and crashes, and no
   built-in resources are declared. -> the parser learns the namespace
   collection (a module-level wrap, installed once), and the bundled
   built-in resource list is loaded; namespaces are objects.
5. A failed JSON-patch ``test`` op (kopf's optimistic lock for finalizers)
   answers 500; Kubernetes answers 422, which kopf treats as "retry later".
   -> 422 for every JSON-patch failure.
6. Patches ignore the status subresource: a main-resource patch can change
   ``status`` and a ``/status`` patch can change the spec. -> split as a real
   server does when the resource declares the ``status`` subresource.
7. Every request is routed by scanning all requests received so far, so
   requests get slower as a test goes on (20 ms each after a few seconds of
   operator traffic). -> only the request being routed is kept; tests here
   assert on objects, never on kmock's request log.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import jsonpatch
import jsonpointer
import kmock
from kmock._internal import aiobus, parsing, rendering

Event = dict[str, Any]
_WRITES = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns ``old`` into ``new``.

    kmock applies writes as merge patches; expressing every computed result
    as one keeps kmock's own bookkeeping (history, events) in charge.
    """
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        if key in old and isinstance(old[key], Mapping) and isinstance(value, Mapping):
            sub = merge_diff(old[key], value)
            if sub:
                patch[key] = sub
        elif key not in old or old[key] != value:
            patch[key] = value
    return patch


def merge_patch(base: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (``None`` deletes; lists are replaced)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(base) if isinstance(base, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_kmock_parse_path = parsing.parse_path


def parse_path(path: str) -> parsing.ParsedPath:
    """kmock's URL parser, plus the namespace collection it cannot parse (fix 4)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _kmock_parse_path(path)


def _with_data(request: rendering.Request, data: Any) -> rendering.Request:
    """Replace the parsed body in place: kmock routes requests by identity, so no copies."""
    object.__setattr__(request, "data", data)
    return request


def _essence(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("metadata", "status")}


def _event_rv(event: Mapping[str, Any]) -> int:
    try:
        return int(event["object"]["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


class _RecordingBus(aiobus.Bus[Any]):
    """A bus that remembers what went through it, so watches can resume."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[Event] = []

    async def put(self, *items: Any) -> None:
        self.history.extend(item for item in items if isinstance(item, dict))
        await super().put(*items)


class K8sEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """The stateful emulator with the fixes listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        parsing.parse_path = parse_path  # idempotent; rendering looks it up per request
        self._rv = 0
        self._write_lock = asyncio.Lock()
        self.changed = asyncio.Condition()
        self._buses = collections.defaultdict(_RecordingBus)
        self.resources.load_bundled()
        # Fix 3 (content type): same handler, higher priority, explicit header.
        (self.fallback**1)[kmock.action.WATCH] << {"Content-Type": "application/json"} << self._serve_watch

    # --- setup helpers --------------------------------------------------------

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_namespace(self, name: str) -> None:
        self.objects["v1/namespaces", None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": self.next_rv()},
            "status": {"phase": "Active"},
        }

    def add_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve a CustomResourceDefinition's resource (discovery only, no validation)."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular", names["kind"].lower()),
                namespaced=spec["scope"] == "Namespaced",
                shortnames=set(names.get("shortNames", ())),
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
                subresources=set(version.get("subresources") or ()),
            )

    async def wait_changed(self, timeout: float) -> None:
        """Return after the next write, or after ``timeout`` seconds, whichever is first."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except TimeoutError:
                pass

    # --- writes ------------------------------------------------------------

    async def _handle(self, request: rendering.Request) -> Any:
        # kmock routes a request by checking that each reaction's view "sees" it,
        # and a view finds a request by scanning every request ever received: the
        # cost grows with the test's length (fix 7). Routing needs only this one.
        del self._requests[:-1]
        if request.resource is None or request.action not in _WRITES:
            return await super()._handle(request)
        async with self._write_lock:  # one write at a time: each is computed from the latest state
            if request.action == kmock.action.CREATE:
                request = self._prepare_create(request)
            elif request.action == kmock.action.UPDATE:
                request = self._prepare_update(request)
            elif request.name is not None:
                self._prepare_delete(request)
            response = await super()._handle(request)
            if request.action == kmock.action.CREATE and response.status == 200:
                response.set_status(201)  # fix 2
        async with self.changed:
            self.changed.notify_all()
        return response

    def _now(self) -> str:
        return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _prepare_create(self, request: rendering.Request) -> rendering.Request:
        data = copy.deepcopy(request.data) if isinstance(request.data, dict) else {}
        meta = data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        if request.namespace:
            meta["namespace"] = request.namespace
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self.next_rv(),
            generation=1,
            creationTimestamp=self._now(),
        )
        return _with_data(request, data)

    def _stored(self, request: rendering.Request) -> kmock.Object:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return self.objects[key]

    def _prepare_update(self, request: rendering.Request) -> rendering.Request:
        obj = self._stored(request)
        old = copy.deepcopy(obj.raw)
        data = request.data
        if isinstance(data, list):
            try:
                new = jsonpatch.apply_patch(old, data, in_place=False)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc  # fix 5
        elif isinstance(data, dict):
            new = merge_patch(old, data)
        else:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="unsupported patch body")

        # Fix 6: the status subresource splits what each endpoint may change.
        subresources = (
            self.resources[request.resource].subresources if request.resource in self.resources else set()
        )
        if "status" in subresources:
            if request.subresource == "status":
                status = new.get("status")
                new = {k: v for k, v in old.items() if k != "status"}
                if status is not None:
                    new["status"] = status
            else:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
        new = copy.deepcopy(new)  # the patch results share untouched sub-dicts with ``old``
        meta = new.setdefault("metadata", {})
        for immutable in ("uid", "name", "namespace", "creationTimestamp", "deletionTimestamp", "generation"):
            if immutable in old.get("metadata", {}):
                meta[immutable] = old["metadata"][immutable]
        if request.subresource is None and _essence(new) != _essence(old):
            meta["generation"] = int(old.get("metadata", {}).get("generation", 0)) + 1
        meta["resourceVersion"] = old.get("metadata", {}).get("resourceVersion")
        if new != old:
            meta["resourceVersion"] = self.next_rv()
        return _with_data(request, merge_diff(old, new))

    def _prepare_delete(self, request: rendering.Request) -> None:
        obj = self._stored(request)
        # A new version for the deletion itself, so the DELETED (or MODIFIED,
        # with finalizers) event is newer than anything a watcher has seen.
        stamped = copy.deepcopy(obj.raw)
        stamped.setdefault("metadata", {})["resourceVersion"] = self.next_rv()
        obj.history[-1] = stamped

    # --- reads -------------------------------------------------------------

    def _matches(self, request: rendering.Request, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        if request.namespace is not None and meta.get("namespace") != request.namespace:
            return False
        if request.name is not None and meta.get("name") != request.name:
            return False
        selector = request.params.get("labelSelector")
        if selector:
            labels = meta.get("labels") or {}
            for term in selector.split(","):
                key, _, value = term.partition("=")
                if labels.get(key.strip()) != value.strip():
                    return False
        return True

    def _current(self, request: rendering.Request) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (resource, _ns, _name), obj in self.objects.items()
            if resource == request.resource and not obj.deleted and self._matches(request, obj.raw)
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._current(request)
            return {
                "kind": "List",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now: the stream may stay silent for long
        assert request.resource is not None
        bus = self._buses[request.resource]
        since = request.params.get("resourceVersion")
        async with self._lock:  # snapshot and subscription at the same instant
            mark = await bus.mark()
            if since and since != "0":
                backlog = [e for e in bus.history if _event_rv(e) > int(since)]
            else:
                backlog = [{"type": "ADDED", "object": obj} for obj in self._current(request)]
        loop = asyncio.get_running_loop()
        timeout = float(request.params.get("timeoutSeconds") or 3600)
        deadline = loop.time() + timeout
        try:
            for event in backlog:
                if self._matches(request, event["object"]):
                    yield event
            while (remaining := deadline - loop.time()) > 0:
                transport = request._raw_request.transport if request._raw_request is not None else None
                if transport is None or transport.is_closing():
                    break  # the client went away: do not hang until the next event
                try:
                    event = await asyncio.wait_for(bus.get(since=mark), min(remaining, 0.5))
                except TimeoutError:
                    continue
                if self._matches(request, event.get("object", {})):
                    yield event
        finally:
            await bus.unmark(mark)
