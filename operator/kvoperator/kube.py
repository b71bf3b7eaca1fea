"""A small asyncio Kubernetes client for the objects the operator owns.

kopf talks to the API for its own needs but offers no public client for
creating and patching other objects; the official client is synchronous.
This one reuses kopf's :class:`kopf.ConnectionInfo` (whatever the login
handler produced — in-cluster service account in production, a local
emulator in tests), so there is one notion of "where the API is".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import kopf

Body = dict[str, Any]
PatchType = Literal["merge", "json", "strategic"]

_CONTENT_TYPES: dict[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class KubeError(Exception):
    """A non-success answer from the API server, with its Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a resource lives in the API: ``/api/v1`` or ``/apis/<group>/<version>``."""

    api_version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [base]
        if namespace is not None:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name is not None:
            parts.append(name)
        if subresource is not None:
            parts.append(subresource)
        return "/".join(parts)


STATEFULSETS = Kind("apps/v1", "statefulsets")
SERVICES = Kind("v1", "services")
CONFIGMAPS = Kind("v1", "configmaps")
SECRETS = Kind("v1", "secrets")
PODS = Kind("v1", "pods")
PVCS = Kind("v1", "persistentvolumeclaims")
PDBS = Kind("policy/v1", "poddisruptionbudgets")
EVENTS = Kind("v1", "events")
KVCLUSTERS = Kind("kvcluster.io/v1alpha1", "kvclusters")
CRONJOBS = Kind("batch/v1", "cronjobs")
JOBS = Kind("batch/v1", "jobs")

KIND_BY_NAME: dict[str, Kind] = {
    "StatefulSet": STATEFULSETS,
    "Service": SERVICES,
    "ConfigMap": CONFIGMAPS,
    "Secret": SECRETS,
    "PodDisruptionBudget": PDBS,
    "Pod": PODS,
    "PersistentVolumeClaim": PVCS,
}


class KubeClient:
    """JSON over HTTP with the credentials of the current kopf login.

    The connection info is looked up on every request, so a re-login by kopf
    (expired token) is picked up without restarting anything.
    """

    def __init__(self, connection: Callable[[], kopf.ConnectionInfo | None], *, timeout: float = 30) -> None:
        self._connection = connection
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._session_for: kopf.ConnectionInfo | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> tuple[aiohttp.ClientSession, str]:
        info = self._connection()
        if info is None:
            raise KubeError(0, "NotLoggedIn", "no Kubernetes credentials yet")
        async with self._lock:
            if self._session is None or self._session_for != info or self._session.closed:
                if self._session is not None:
                    await self._session.close()
                ssl: Any = info.as_ssl_context() if info.server.startswith("https") else None
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=ssl) if ssl is not None else aiohttp.TCPConnector(),
                    headers=info.as_http_headers(),
                    timeout=self._timeout,
                )
                self._session_for = info
            return self._session, info.server.rstrip("/")

    async def close(self) -> None:
        async with self._lock:
            if self._session is not None:
                await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content_type: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Body:
        session, server = await self._client()
        headers = {"Content-Type": content_type} if content_type else {}
        async with session.request(method, server + path, json=json, headers=headers, params=params) as resp:
            try:
                data = await resp.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                data = None
            if resp.status >= 400:
                body = data if isinstance(data, dict) else {}
                raise KubeError(
                    resp.status, str(body.get("reason") or resp.reason), str(body.get("message") or "")
                )
            return data if isinstance(data, dict) else {}

    async def get(self, path: str) -> Body | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, *, label_selector: str | None = None) -> list[Body]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = await self.request("GET", path, params=params)
        return list(data.get("items") or [])

    async def create(self, path: str, body: Mapping[str, Any]) -> Body:
        return await self.request("POST", path, json=body)

    async def patch(self, path: str, patch: Any, *, patch_type: PatchType = "merge") -> Body | None:
        """Patch an object; None when it does not exist (any more)."""
        try:
            return await self.request("PATCH", path, json=patch, content_type=_CONTENT_TYPES[patch_type])
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, path: str) -> bool:
        try:
            await self.request("DELETE", path)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True
