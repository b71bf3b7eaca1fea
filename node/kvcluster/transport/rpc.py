"""Signed request/response calls between nodes: request forwarding and snapshots.

Separate from the Raft link because a forwarded write or a snapshot can be
large and slow, and must not hold up heartbeats queued behind it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from ssl import SSLContext

import aiohttp

from .signing import PeerAuth


class PeerUnavailable(Exception):
    """The call did not reach the peer, or no answer came back in time.

    ``maybe_delivered`` is False only when the connection was never made: then
    the peer certainly did not act on the request and it is safe to retry a
    write elsewhere.
    """

    def __init__(self, message: str, maybe_delivered: bool = True) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class PeerRPC:
    def __init__(self, auth: PeerAuth, urls: Mapping[int, str], ssl: SSLContext | bool = True) -> None:
        self.auth = auth
        self.ssl = ssl
        self.urls = urls
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=64, ssl=self.ssl),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    def _target(self, node: int, path: str) -> tuple[str, dict[str, str]]:
        """The URL of ``path`` on ``node`` and the signed headers of a call to it."""
        url = self.urls.get(node)
        if url is None:
            raise PeerUnavailable(f"no address known for node {node}", maybe_delivered=False)
        headers = self.auth.headers(path)
        headers["Content-Type"] = "application/msgpack"
        return url + path, headers

    async def call(self, node: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        url, headers = self._target(node, path)
        try:
            async with self._get_session().post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=1.0),
            ) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnavailable(f"node {node}: {exc or type(exc).__name__}") from exc

    @contextlib.asynccontextmanager
    async def stream(
        self, node: int, path: str, body: bytes, idle_timeout: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A call whose answer is read as it arrives (a partition dump for a backup).

        No total deadline: a large partition takes as long as it takes; a peer
        that sends nothing for ``idle_timeout`` seconds is given up on.
        """
        url, headers = self._target(node, path)
        try:
            async with self._get_session().post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, connect=1.0, sock_read=idle_timeout),
            ) as resp:
                yield resp
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnavailable(f"node {node}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
