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

    async def call(self, node: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        async with self.stream(
            node, path, body, timeout=aiohttp.ClientTimeout(total=timeout, connect=1.0)
        ) as resp:
            return resp.status, await resp.read()

    @contextlib.asynccontextmanager
    async def stream(
        self, node: int, path: str, body: bytes, timeout: aiohttp.ClientTimeout
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed call whose answer is read as it arrives (``call`` reads it whole).

        A partition dump for a backup passes a timeout with no total and a
        ``sock_read`` bound: it takes as long as the data does, but a peer that
        goes silent is given up on. Failures while the answer is read raise
        :class:`PeerUnavailable` too.
        """
        url = self.urls.get(node)
        if url is None:
            raise PeerUnavailable(f"no address known for node {node}", maybe_delivered=False)
        headers = self.auth.headers(path)
        headers["Content-Type"] = "application/msgpack"
        try:
            async with self._get_session().post(
                url + path, data=body, headers=headers, timeout=timeout
            ) as resp:
                yield resp
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PeerUnavailable(f"node {node}: {exc or type(exc).__name__}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
