"""One persistent connection per pair of nodes, carrying coalesced Raft frames.

The node with the lower id dials (a WebSocket on ``/internal/v1/raft``) and
both sides send over it, so each pair has exactly one connection no matter
how many partitions they share. Messages queued during a loop turn leave as
one frame per peer when the host calls ``flush``. A peer that is not
connected loses its messages (Raft retransmits) and the host is told, so
that the leader stops streaming to it optimistically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from ssl import SSLContext

import aiohttp
from aiohttp import web

from kvcluster.raft import Message

from .codec import Frame
from .signing import PeerAuth, PeerAuthError

log = logging.getLogger(__name__)

RAFT_PATH = "/internal/v1/raft"
MAX_QUEUED = 50_000
HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(eq=False)
class _Link:
    node: int
    ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse | None = None
    queue: list[tuple[int, Message]] = field(default_factory=list)
    unknown: set[int] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    dropped: int = 0


class PeerLinks:
    def __init__(
        self,
        node_id: int,
        auth: PeerAuth,
        on_frame: Callable[[Frame], None],
        on_unreachable: Callable[[int, list[tuple[int, Message]]], None],
        ssl: SSLContext | bool = True,
    ) -> None:
        self.node_id = node_id
        self.auth = auth
        self.ssl = ssl
        self.on_frame = on_frame
        self.on_unreachable = on_unreachable
        self.urls: dict[int, str] = {}
        self._links: dict[int, _Link] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.frames_sent = 0
        self.frames_received = 0

    # ---- membership -------------------------------------------------------------------------

    def set_peers(self, urls: dict[int, str]) -> None:
        """Learn peer addresses; dial those this node is responsible for."""
        for node, url in urls.items():
            if node == self.node_id:
                continue
            self.urls[node] = url.rstrip("/")
            link = self._link(node)
            if node > self.node_id and not any(t.get_name() == "dial" for t in link.tasks):
                link.tasks.append(asyncio.get_running_loop().create_task(self._dial(link), name="dial"))

    def connected(self, node: int) -> bool:
        link = self._links.get(node)
        return link is not None and link.ws is not None and not link.ws.closed

    def _link(self, node: int) -> _Link:
        link = self._links.get(node)
        if link is None:
            link = self._links[node] = _Link(node)
            link.tasks.append(asyncio.get_running_loop().create_task(self._write_loop(link), name="write"))
        return link

    # ---- sending ------------------------------------------------------------------------------

    def send(self, partition: int, m: Message) -> None:
        link = self._link(m.to)
        if len(link.queue) >= MAX_QUEUED:
            link.dropped += 1
            return
        link.queue.append((partition, m))

    def send_unknown(self, node: int, partition: int) -> None:
        self._link(node).unknown.add(partition)

    def flush(self) -> None:
        for link in self._links.values():
            if link.queue or link.unknown:
                link.wake.set()

    async def _write_loop(self, link: _Link) -> None:
        while not self._closed:
            await link.wake.wait()
            link.wake.clear()
            if not link.queue and not link.unknown:
                continue
            messages, link.queue = link.queue, []
            unknown, link.unknown = sorted(link.unknown), set()
            ws = link.ws
            if ws is None or ws.closed:
                link.dropped += len(messages)
                self.on_unreachable(link.node, messages)
                continue
            try:
                await ws.send_bytes(Frame(self.node_id, messages, unknown).encode())
                self.frames_sent += 1
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                log.debug("send to node %d failed: %s", link.node, exc)
                link.dropped += len(messages)
                self.on_unreachable(link.node, messages)

    # ---- connections ----------------------------------------------------------------------------

    async def _dial(self, link: _Link) -> None:
        delay = 0.05
        while not self._closed:
            url = self.urls.get(link.node)
            if url is None:
                return
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=None, connect=2)
                    )
                # Bounded as a whole: the connect timeout does not cover the upgrade's answer.
                ws = await asyncio.wait_for(
                    self._session.ws_connect(
                        url + RAFT_PATH,
                        headers=self.auth.headers(RAFT_PATH),
                        heartbeat=2.0,
                        max_msg_size=0,
                        ssl=self.ssl,
                    ),
                    HANDSHAKE_TIMEOUT_S,
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.debug("dial node %d at %s failed: %s", link.node, url, exc or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            log.info("connected to node %d at %s", link.node, url)
            try:
                await self._serve(link, ws)
            except Exception:
                # This task is the only one that ever reconnects the link: it must not die.
                log.exception("connection to node %d failed", link.node)

    async def accept(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for the lower-id peer's connection."""
        try:
            sender = self.auth.verify(request.headers, RAFT_PATH)
        except PeerAuthError as exc:
            log.warning("rejected peer connection from %s: %s", request.remote, exc)
            raise web.HTTPUnauthorized(text=str(exc)) from None
        ws = web.WebSocketResponse(heartbeat=2.0, max_msg_size=0)
        await ws.prepare(request)
        link = self._link(sender)
        if link.ws is not None and not link.ws.closed:
            await link.ws.close()
        log.info("accepted connection from node %d", sender)
        await self._serve(link, ws)
        return ws

    async def _serve(self, link: _Link, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        link.ws = ws
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    try:
                        frame = Frame.decode(msg.data)
                    except Exception as exc:
                        log.warning("bad frame from node %d: %s", link.node, exc)
                        continue
                    if frame.sender != link.node:
                        log.warning("frame claims sender %d on node %d's link", frame.sender, link.node)
                        continue
                    self.frames_received += 1
                    try:
                        self.on_frame(frame)
                    except Exception:
                        log.exception("frame from node %d could not be handled", link.node)
                elif msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                    break
        finally:
            if link.ws is ws:
                link.ws = None
            if not self._closed:
                log.info("connection to node %d closed: %s", link.node, ws.exception() or ws.close_code)
            with contextlib.suppress(Exception):
                await ws.close()

    def stats(self) -> dict[int, dict[str, int | bool]]:
        return {
            n: {"connected": self.connected(n), "queued": len(link.queue), "dropped": link.dropped}
            for n, link in sorted(self._links.items())
        }

    async def close(self) -> None:
        self._closed = True
        for link in self._links.values():
            link.wake.set()
            if link.ws is not None:
                with contextlib.suppress(Exception):
                    await link.ws.close()
            for t in link.tasks:
                t.cancel()
        for link in self._links.values():
            for t in link.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._session is not None:
            await self._session.close()
