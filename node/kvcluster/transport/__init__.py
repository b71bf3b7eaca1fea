"""Node-to-node traffic: coalesced Raft frames over one link per peer, signed RPC calls."""

from .codec import Frame, pack, unpack
from .peers import RAFT_PATH, PeerLinks
from .rpc import PeerRPC, PeerUnavailable
from .signing import PeerAuth, PeerAuthError
from .tls import TlsContexts, TlsReloader, TlsSettings, has_peer_certificate

__all__ = [
    "RAFT_PATH",
    "Frame",
    "PeerAuth",
    "PeerAuthError",
    "PeerLinks",
    "PeerRPC",
    "PeerUnavailable",
    "TlsContexts",
    "TlsReloader",
    "TlsSettings",
    "has_peer_certificate",
    "pack",
    "unpack",
]
