"""Node-to-node traffic: coalesced Raft frames over one link per peer, signed RPC calls."""

from .codec import Frame, pack, unpack
from .peers import RAFT_PATH, PeerLinks
from .rpc import PeerRPC, PeerUnavailable
from .signing import PeerAuth, PeerAuthError

__all__ = [
    "RAFT_PATH",
    "Frame",
    "PeerAuth",
    "PeerAuthError",
    "PeerLinks",
    "PeerRPC",
    "PeerUnavailable",
    "pack",
    "unpack",
]
