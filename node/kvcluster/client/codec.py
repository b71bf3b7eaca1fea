"""Keys in URLs and items in listings: how arbitrary bytes cross the HTTP API.

Keys are raw bytes. In a URL every byte outside ``A-Z a-z 0-9 - _ ~`` is
percent-encoded, so ``/`` inside a key travels as ``%2F`` (the server treats
``/`` and ``%2F`` alike) and ``.`` as ``%2E``: an unescaped ``..`` path
segment would be collapsed by URL normalisation (yarl, proxies) before the
server ever saw it. Listing items carry ``"encoding": "utf-8"`` or
``"base64"`` (then both key and value are base64).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from .errors import KVError

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")
_ESCAPE = [chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256)]
_CURSOR_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~%=")

Key = bytes | bytearray | memoryview | str
"""What callers may pass as a key (or value): ``str`` is encoded as UTF-8."""


def to_bytes(data: Key) -> bytes:
    """Normalise a key or value to bytes (``str`` as UTF-8)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes or str, got {type(data).__name__}")


def quote_bytes(data: bytes) -> str:
    """Percent-encode every byte except the RFC 3986 unreserved ones other than ``.`` (see above)."""
    return "".join([_ESCAPE[b] for b in data])


def quote_cursor(cursor: str) -> str:
    """A server cursor is opaque but URL-safe already; refuse anything that could inject parameters."""
    if not set(cursor) <= _CURSOR_SAFE:
        raise ValueError(f"not a cursor the server would produce: {cursor!r}")
    return cursor


@dataclass(frozen=True, slots=True)
class Item:
    """One key with its value and version (the partition revision of its last write)."""

    key: bytes
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next`` is the opaque cursor of the following page, None at the end."""

    items: list[Item]
    next: str | None

    def __len__(self) -> int:
        return len(self.items)


def decode_item(raw: dict[str, Any]) -> Item:
    """Decode a listing entry per its ``encoding`` so any byte string round-trips."""
    encoding = raw.get("encoding", "utf-8")
    try:
        if encoding == "base64":
            key = base64.b64decode(raw["key"], validate=True)
            value = base64.b64decode(raw.get("value", ""), validate=True)
        elif encoding == "utf-8":
            key = str(raw["key"]).encode("utf-8")
            value = str(raw.get("value", "")).encode("utf-8")
        else:
            raise KVError(f"unknown item encoding {encoding!r}", code="bad_response")
        return Item(key, value, int(raw["version"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise KVError(f"malformed listing item {raw!r}: {exc}", code="bad_response") from None


def decode_page(body: dict[str, Any]) -> Page:
    items = body.get("items")
    if not isinstance(items, list):
        raise KVError("malformed listing: no items", code="bad_response")
    nxt = body.get("next")
    return Page([decode_item(x) for x in items], str(nxt) if nxt else None)


def encode_item(item: Item) -> dict[str, Any]:
    """The listing wire shape of an item (what ``kvcluster scan --json`` prints)."""
    try:
        return {
            "key": item.key.decode("utf-8"),
            "value": item.value.decode("utf-8"),
            "version": item.version,
            "encoding": "utf-8",
        }
    except UnicodeDecodeError:
        return {
            "key": base64.b64encode(item.key).decode("ascii"),
            "value": base64.b64encode(item.value).decode("ascii"),
            "version": item.version,
            "encoding": "base64",
        }
