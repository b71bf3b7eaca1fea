"""Peer authentication with a shared cluster secret.

Every peer request carries its sender id, a timestamp, a nonce and an
HMAC-SHA256 over them and the path. The secret itself never crosses the
wire, a captured request cannot be replayed (the nonce is remembered for the
validity window) and a stranger on the pod network cannot join or write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping

WINDOW_S = 300.0
H_NODE = "X-KV-Node"
H_TIME = "X-KV-Time"
H_NONCE = "X-KV-Nonce"
H_SIG = "X-KV-Signature"


class PeerAuthError(Exception):
    pass


class PeerAuth:
    def __init__(self, node_id: int, secret: bytes | None, clock: Callable[[], float] = time.time) -> None:
        self.node_id = node_id
        self.secret = secret
        self.clock = clock
        self._seen: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.secret)

    def headers(self, path: str) -> dict[str, str]:
        ts = f"{self.clock():.3f}"
        nonce = secrets.token_hex(12)
        out = {H_NODE: str(self.node_id), H_TIME: ts, H_NONCE: nonce}
        if self.secret:
            out[H_SIG] = self._sign(str(self.node_id), ts, nonce, path)
        return out

    def verify(self, headers: Mapping[str, str], path: str) -> int:
        """The authenticated sender's node id; raises PeerAuthError otherwise."""
        try:
            sender = int(headers.get(H_NODE, ""))
        except ValueError:
            raise PeerAuthError("missing or invalid peer id") from None
        if not self.secret:
            return sender
        ts, nonce, sig = headers.get(H_TIME, ""), headers.get(H_NONCE, ""), headers.get(H_SIG, "")
        try:
            age = abs(self.clock() - float(ts))
        except ValueError:
            raise PeerAuthError("invalid timestamp") from None
        if age > WINDOW_S:
            raise PeerAuthError("request too old or clock skew too large")
        if not sig or not hmac.compare_digest(sig, self._sign(str(sender), ts, nonce, path)):
            raise PeerAuthError("bad signature")
        now = self.clock()
        if len(self._seen) > 10000:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
        if nonce in self._seen:
            raise PeerAuthError("replayed request")
        self._seen[nonce] = now + WINDOW_S
        return sender

    def _sign(self, sender: str, ts: str, nonce: str, path: str) -> str:
        assert self.secret is not None
        msg = f"{sender}|{ts}|{nonce}|{path}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()
