"""Wire encoding of Raft frames and peer request signing."""

from __future__ import annotations

import pytest

from kvcluster.raft import ConfState, Entry, EntryKind, Message, MessageType, SnapshotMeta
from kvcluster.transport import Frame, PeerAuth, PeerAuthError
from kvcluster.transport.signing import H_SIG


def test_frame_round_trip_keeps_every_field() -> None:
    msgs = [
        (
            1,
            Message(
                MessageType.APPEND,
                2,
                1,
                7,
                log_term=6,
                index=41,
                commit=40,
                entries=[
                    Entry(7, 42, EntryKind.NORMAL, b"\x00\xff"),
                    Entry(7, 43, EntryKind.CONF_CHANGE, b"cc"),
                ],
            ),
        ),
        (2, Message(MessageType.APPEND_RESPONSE, 2, 1, 7, index=3, reject=True, reject_hint=2, log_term=5)),
        (3, Message(MessageType.SNAPSHOT, 2, 1, 9, snapshot=SnapshotMeta(100, 8, ConfState.of([1, 2], [3])))),
        (4, Message(MessageType.VOTE, 2, 1, 10, index=5, log_term=4, transfer=True)),
        (5, Message(MessageType.HEARTBEAT, 2, 1, 10, commit=4, context=b"ctx")),
    ]
    frame = Frame(1, msgs, unknown=[9, 11])
    back = Frame.decode(frame.encode())
    assert back == frame


def test_frame_rejects_other_versions() -> None:
    import msgpack

    with pytest.raises(ValueError):
        Frame.decode(msgpack.packb([99, 1, [], []]))


def test_signed_requests_verify_once() -> None:
    now = [1000.0]
    alice = PeerAuth(1, b"secret", clock=lambda: now[0])
    bob = PeerAuth(2, b"secret", clock=lambda: now[0])
    headers = alice.headers("/internal/v1/op")
    assert bob.verify(headers, "/internal/v1/op") == 1
    with pytest.raises(PeerAuthError, match="replayed"):
        bob.verify(headers, "/internal/v1/op")
    other = alice.headers("/internal/v1/op")
    with pytest.raises(PeerAuthError):
        bob.verify(other, "/internal/v1/snapshot")  # signature covers the path
    stranger = PeerAuth(3, b"guess", clock=lambda: now[0])
    with pytest.raises(PeerAuthError, match="bad signature"):
        bob.verify(stranger.headers("/x"), "/x")
    late = alice.headers("/x")
    now[0] += 1000
    with pytest.raises(PeerAuthError, match="too old"):
        bob.verify(late, "/x")
    unsigned = {k: v for k, v in alice.headers("/x").items() if k != H_SIG}
    with pytest.raises(PeerAuthError):
        bob.verify(unsigned, "/x")
