"""Watching a key or a prefix: an iterator of changes that resumes by itself (issue 10).

The server streams newline-delimited JSON: change events (``put``,
``delete``, ``expire``), ``progress`` lines carrying a resume token, and
``compacted`` when the history asked for is gone. A node may die or the
connection drop at any point; the iterator then reconnects to the next
endpoint with the last token it read. The server sends again every change
after that token, which includes the ones this iterator already yielded
since; those are skipped by revision (a key's changes come in increasing
revision order, so "already seen" is "revision not above the last one seen
for this key"). A key is forgotten once a token covers its last change: the
token's segment holding the key's hash stands at or past that revision. (Not
at every token: after a resume the first tokens may still stand at the old
position in partitions that have not answered yet.) So each change is
yielded exactly once, and the memory kept is the changes not yet covered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from kvcluster.keyspace import key_hash

from . import watchtoken
from .codec import Key, quote_bytes, to_bytes
from .errors import KVError, error_from_response

if TYPE_CHECKING:
    from .aio import AsyncClient

IDLE_TIMEOUT_S = 20.0
"""Reconnect when nothing at all arrived for this long: the server writes a line at least every 5 s."""
MAX_LINE = 64 << 20
CHANGES = ("put", "delete", "expire")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change, or a ``compacted`` notice (then ``key`` is empty and ``revision`` the history's floor).

    ``revision`` is the partition revision of the change; for a put it is the
    key's new version.
    """

    type: str
    key: bytes
    value: bytes | None
    revision: int


def decode_event(raw: dict[str, Any]) -> WatchEvent:
    try:
        kind = str(raw["type"])
        revision = int(raw["revision"])
        if kind == "compacted":
            return WatchEvent(kind, b"", None, revision)
        value = raw.get("value")
        if raw.get("encoding") == "base64":
            key = base64.b64decode(raw["key"], validate=True)
            data = base64.b64decode(value, validate=True) if value is not None else None
        else:
            key = str(raw["key"]).encode()
            data = str(value).encode() if value is not None else None
        return WatchEvent(kind, key, data, revision)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise KVError(f"malformed watch event {raw!r}: {exc}", code="bad_response") from None


class Watch:
    """``async for event in client.watch(prefix="app/")``: yields :class:`WatchEvent` until closed.

    ``token`` is where the stream stands (the last progress token read, or the
    ``start`` given). Resuming a later watch from it yields the changes after
    it, possibly including some this one already yielded.
    """

    def __init__(self, client: AsyncClient, key: Key | None, prefix: Key | None, start: int | str | None):
        if (key is None) == (prefix is None):
            raise ValueError("give exactly one of key= or prefix=")
        if isinstance(start, int) and (isinstance(start, bool) or start < 0):
            raise ValueError("start must be a revision >= 0 or a token")
        self.client = client
        watched = to_bytes(key) if key is not None else None
        self._range = watchtoken.watched_range(watched)
        """The hash range the watch covers, which its tokens tile."""
        if watched is not None:
            self.query = f"key={quote_bytes(watched)}"
        else:
            self.query = f"prefix={quote_bytes(to_bytes(prefix or b''))}"
        self.token: str | None = None if start is None else str(start)
        self.reconnects = 0
        self.positioned = asyncio.Event()
        """Set once the stream has sent its first token (while being iterated): every change
        applied from then on will be yielded."""
        self._seen: dict[bytes, int] = {}
        self._events = self._run()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()

    def _forget_covered(self) -> None:
        assert self.token is not None
        try:
            segments = watchtoken.decode(self.token, *self._range)
        except watchtoken.TokenError:
            return  # not one this client can read: keep remembering, which is always safe
        starts = [seg.start for seg in segments]
        for key, revision in list(self._seen.items()):
            seg = segments[bisect.bisect_right(starts, key_hash(key)) - 1]
            if seg.revision >= revision:
                del self._seen[key]

    def _url(self, endpoint: str) -> URL:
        query = self.query + (f"&from={quote_bytes(self.token.encode())}" if self.token else "")
        return URL(f"{endpoint}/v1/watch?{query}", encoded=True)

    async def _run(self) -> AsyncGenerator[WatchEvent, None]:
        client = self.client
        index = client._preferred
        step = 0
        while True:
            endpoint = client.endpoints[index % len(client.endpoints)]
            try:
                async with client._get_session().get(
                    self._url(endpoint),
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=client.connect_timeout, sock_read=IDLE_TIMEOUT_S
                    ),
                ) as resp:
                    if resp.status != 200:
                        error = error_from_response(resp.status, await resp.read(), endpoint=endpoint)
                        if resp.status < 500:
                            raise error  # a bad request or token: asking again will not help
                    else:
                        async for event in self._read(resp):
                            step = 0
                            yield event
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                pass  # the node died or the connection dropped: resume from the token elsewhere
            index += 1
            self.reconnects += 1
            if index % len(client.endpoints) == client._preferred % len(client.endpoints):
                await asyncio.sleep(client._backoff(step))
                step += 1

    async def _read(self, resp: aiohttp.ClientResponse) -> AsyncIterator[WatchEvent]:
        buffer = b""
        async for data in resp.content.iter_any():
            buffer += data
            if len(buffer) > MAX_LINE:
                raise ValueError("a watch line beyond any size the server writes")
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line:
                    continue
                raw = json.loads(line)
                kind = raw.get("type")
                if kind == "progress":
                    self.token = str(raw["token"])
                    self.positioned.set()
                    self._forget_covered()
                elif kind in CHANGES or kind == "compacted":
                    event = decode_event(raw)
                    if kind != "compacted":
                        if self._seen.get(event.key, -1) >= event.revision:
                            continue  # sent again after a reconnect: yielded already
                        self._seen[event.key] = event.revision
                    yield event


def encode_event(event: WatchEvent) -> dict[str, Any]:
    """The wire shape of an event (what ``kvcluster watch --json`` prints): the listings' base64 rule."""
    if event.type == "compacted":
        return {"type": event.type, "revision": event.revision}
    out: dict[str, Any] = {"type": event.type}
    try:
        out["key"] = event.key.decode("utf-8")
        if event.value is not None:
            out["value"] = event.value.decode("utf-8")
        out["encoding"] = "utf-8"
    except UnicodeDecodeError:
        out["key"] = base64.b64encode(event.key).decode()
        out.pop("value", None)
        if event.value is not None:
            out["value"] = base64.b64encode(event.value).decode()
        out["encoding"] = "base64"
    out["revision"] = event.revision
    return out
