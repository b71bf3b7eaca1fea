"""Client of the nodes' admin API, as the operator uses it.

Every node answers every admin call (it forwards to the meta group's leader),
so the operator talks to the client Service and never picks a node. The base
URL is a template so that tests can point at local ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from ssl import SSLContext
from typing import Any

import aiohttp

DEFAULT_URL_TEMPLATE = "http://{name}.{namespace}.svc:7000"


class AdminError(Exception):
    """The admin API answered with an error (``{"error": {"code", "message"}}``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AdminUnavailable(Exception):
    """No answer at all: connection refused, timeout, or a 5xx while the nodes elect."""


class AdminClient:
    """One cluster's admin API. The session is shared; only URL and token are per cluster."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 10,
        ssl: SSLContext | bool = True,
    ):
        self._session = session
        self._ssl = ssl
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def base_url(self) -> str:
        return self._base

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, Any]:
        try:
            async with self._session.request(
                method,
                self._base + path,
                json=body,
                headers=self._headers,
                timeout=self._timeout,
                ssl=self._ssl,
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = None
                if resp.status >= 500:
                    raise AdminUnavailable(f"{method} {path}: HTTP {resp.status}")
                if resp.status >= 400:
                    err = (data or {}).get("error") if isinstance(data, dict) else None
                    err = err if isinstance(err, dict) else {}
                    raise AdminError(resp.status, str(err.get("code", "error")), str(err.get("message", "")))
                return resp.status, data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AdminUnavailable(f"{method} {path}: {exc!r}") from exc

    async def _get_dict(self, path: str) -> dict[str, Any]:
        _, data = await self._call("GET", path)
        if not isinstance(data, dict):
            raise AdminUnavailable(f"GET {path}: not a JSON object")
        return data

    async def ready(self) -> bool:
        try:
            status, _ = await self._call("GET", "/readyz")
        except (AdminError, AdminUnavailable):
            return False
        return status == 200

    async def cluster(self) -> dict[str, Any]:
        """``GET /v1/cluster``: nodes and partitions with leader and term."""
        return await self._get_dict("/v1/cluster")

    async def partition_map(self) -> dict[str, Any]:
        return await self._get_dict("/v1/admin/map")

    async def node(self, node_id: int) -> dict[str, Any] | None:
        """``GET /v1/admin/nodes/{id}``; None when the cluster does not know the node."""
        try:
            return await self._get_dict(f"/v1/admin/nodes/{node_id}")
        except AdminError as exc:
            if exc.status == 404:
                return None
            raise

    async def start_reshape(self, nodes: list[int], partitions: int, replicas: int) -> str:
        """``POST /v1/admin/reshape``; the job id. AdminError(400) when the layout is impossible."""
        body = {"nodes": sorted(nodes), "partitions": partitions, "replicas": replicas}
        _, data = await self._call("POST", "/v1/admin/reshape", body)
        return str((data or {}).get("job", ""))

    async def reshape_status(self) -> dict[str, Any]:
        """``GET /v1/admin/reshape``: state idle|running|done|failed, target, progress."""
        return await self._get_dict("/v1/admin/reshape")

    async def drain(self, node_id: int) -> str:
        """``POST /v1/admin/nodes/{id}/drain``: move the node's replicas and leaderships away."""
        _, data = await self._call("POST", f"/v1/admin/nodes/{node_id}/drain")
        return str((data or {}).get("job", ""))

    async def transfer_leader(self, partition: int, node_id: int) -> None:
        """``POST /v1/admin/partitions/{id}/leader``: hand the partition's leadership to ``node_id``."""
        await self._call("POST", f"/v1/admin/partitions/{partition}/leader", {"node": node_id})

    async def forget(self, node_id: int) -> None:
        """``POST /v1/admin/nodes/{id}/forget``: drop a node that holds nothing from the member list.

        AdminError(409) while it still holds a replica.
        """
        await self._call("POST", f"/v1/admin/nodes/{node_id}/forget")
