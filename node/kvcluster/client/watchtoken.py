"""Where a watch stands: a resume token, one revision per stretch of the hash space.

Revisions are per partition, so "the watch has seen everything up to
revision R" only means something within one partition's range. A watch over
a prefix spans every partition, and partitions split and merge under it; so
its position is a list of segments tiling the hash range it watches, each
with the revision up to which every change inside it has been delivered.
That stays exact across reshaping: a split's halves both continue from the
parent's revision, a merge from the larger of its two (see
``storage/history.py``), so a segment's revision keeps meaning "nothing at or
below it is left to send" whichever partition serves it next.

The token is that list, coalesced (neighbours at the same revision become
one), as URL-safe text: ``1.`` + base64url(msgpack of ``[start, last, revision]``
triples), ``last`` being the segment's last hash (inclusive, so that 2**64 never
has to be encoded).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import msgpack

from kvcluster.keyspace import HASH_SPACE, key_hash

PREFIX = "1."
NOW = -1
"""A segment's revision before its first read: start from whatever is current."""


@dataclass(slots=True)
class Segment:
    start: int
    end: int
    revision: int


class TokenError(ValueError):
    pass


def watched_range(key: bytes | None) -> tuple[int, int]:
    """The hash range a watch's tokens tile: one point for a key, the whole space for a prefix."""
    if key is None:
        return 0, HASH_SPACE
    h = key_hash(key)
    return h, h + 1


def encode(segments: list[Segment]) -> str:
    triples: list[list[int]] = []
    for seg in segments:
        if triples and triples[-1][2] == seg.revision and triples[-1][1] + 1 == seg.start:
            triples[-1][1] = seg.end - 1
        else:
            triples.append([seg.start, seg.end - 1, seg.revision])
    packed: bytes = msgpack.packb(triples)
    return PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def decode(token: str, start: int, end: int) -> list[Segment]:
    """The segments of ``token``, which must tile exactly [start, end), the range the watch covers."""
    if not token.startswith(PREFIX):
        raise TokenError("not a watch token")
    body = token[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        triples = msgpack.unpackb(raw)
    except (binascii.Error, ValueError, msgpack.UnpackException):
        raise TokenError("not a watch token") from None
    if not isinstance(triples, list) or not triples:
        raise TokenError("not a watch token")
    out: list[Segment] = []
    pos = start
    for t in triples:
        if (
            not isinstance(t, list)
            or len(t) != 3
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in t)
        ):
            raise TokenError("not a watch token")
        first, last, revision = t
        if first != pos or last < first or last >= HASH_SPACE or revision < 0:
            raise TokenError("the token does not belong to this watch (its ranges do not match)")
        out.append(Segment(first, last + 1, revision))
        pos = last + 1
    if pos != end:
        raise TokenError("the token does not belong to this watch (its ranges do not match)")
    return out
