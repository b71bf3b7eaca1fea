"""Wire encoding of Raft messages: msgpack arrays, never pickle.

Positional arrays instead of maps keep a heartbeat at a few dozen bytes; a
frame carries every message from one node to another produced in one loop
turn, for all partitions at once (coalescing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from kvcluster.raft import ConfState, Entry, EntryKind, Message, MessageType, SnapshotMeta

WIRE_VERSION = 1


def message_to_wire(m: Message) -> list[Any]:
    snap = None
    if m.snapshot is not None:
        s = m.snapshot
        snap = [s.index, s.term, sorted(s.conf.voters), sorted(s.conf.learners)]
    return [
        int(m.type),
        m.to,
        m.sender,
        m.term,
        m.log_term,
        m.index,
        [[e.term, e.index, int(e.kind), e.data] for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        m.context,
        snap,
        m.transfer,
    ]


def message_from_wire(f: list[Any]) -> Message:
    snap = None
    if f[11] is not None:
        s = f[11]
        snap = SnapshotMeta(int(s[0]), int(s[1]), ConfState.of(s[2], s[3]))
    return Message(
        type=MessageType(f[0]),
        to=int(f[1]),
        sender=int(f[2]),
        term=int(f[3]),
        log_term=int(f[4]),
        index=int(f[5]),
        entries=[Entry(int(e[0]), int(e[1]), EntryKind(e[2]), bytes(e[3])) for e in f[6]],
        commit=int(f[7]),
        reject=bool(f[8]),
        reject_hint=int(f[9]),
        context=bytes(f[10]),
        snapshot=snap,
        transfer=bool(f[12]),
    )


@dataclass(slots=True)
class Frame:
    """Everything one node sends another in one go."""

    sender: int
    messages: list[tuple[int, Message]] = field(default_factory=list)
    """(partition, message) pairs."""
    unknown: list[int] = field(default_factory=list)
    """Partitions the sender received messages for but does not host: the
    leader answers with a snapshot when the sender is a member."""

    def encode(self) -> bytes:
        body = [WIRE_VERSION, self.sender, [[p, message_to_wire(m)] for p, m in self.messages], self.unknown]
        out: bytes = msgpack.packb(body, use_bin_type=True)
        return out

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if body[0] != WIRE_VERSION:
            raise ValueError(f"unsupported wire version {body[0]}")
        return cls(
            sender=int(body[1]),
            messages=[(int(p), message_from_wire(f)) for p, f in body[2]],
            unknown=[int(p) for p in body[3]],
        )


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
