"""TLS for the node's listener and its connections to peers, with certificates re-read on change.

The client API and the peer endpoints share one listener, so one server
context serves both. Mutual TLS for peers is layered on top: the listener
asks for (but does not require) a client certificate, the handshake fails
if one is offered that does not chain to the peer CA, and the node refuses
``/internal/`` requests that came without one. Plain clients never need a
certificate.

Rotation: cert-manager and Kubernetes Secret mounts replace the files in
place. :class:`TlsReloader` notices a changed file and loads the new chain
into the *same* ``SSLContext`` objects, which the listening socket and the
client sessions keep using: connections made afterwards present the new
certificate, established ones keep the old until they reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsSettings:
    cert: Path | None = None
    """This node's serving certificate chain (PEM): HTTPS for clients and peers."""
    key: Path | None = None
    ca: Path | None = None
    """CA bundle that other nodes' serving certificates chain to (default: the system store)."""
    peer_cert: Path | None = None
    """Certificate this node presents to peers (default: the serving one)."""
    peer_key: Path | None = None
    peer_ca: Path | None = None
    """With it, peers must present a certificate chaining to this CA (mutual TLS)."""

    @property
    def serving(self) -> bool:
        return self.cert is not None

    @property
    def mutual(self) -> bool:
        return self.peer_ca is not None

    def validate(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if (self.peer_cert is None) != (self.peer_key is None):
            raise ValueError("--peer-tls-cert and --peer-tls-key go together")
        if self.peer_ca is not None and not self.serving:
            raise ValueError("mutual TLS for peers (--peer-tls-ca) needs --tls-cert/--tls-key")
        for path in (self.cert, self.key, self.ca, self.peer_cert, self.peer_key, self.peer_ca):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")

    def files(self) -> list[Path]:
        paths = (self.cert, self.key, self.ca, self.peer_cert, self.peer_key, self.peer_ca)
        return [p for p in paths if p is not None]


def _fingerprint(paths: list[Path]) -> tuple[tuple[int, int, int], ...]:
    marks = []
    for p in paths:
        try:
            st = os.stat(p)  # follows the ..data symlinks a Secret mount swaps
        except OSError:
            marks.append((0, 0, 0))
        else:
            marks.append((st.st_mtime_ns, st.st_ino, st.st_size))
    return tuple(marks)


class TlsContexts:
    """The listener's context and the one used to dial peers, built from :class:`TlsSettings`."""

    def __init__(self, settings: TlsSettings) -> None:
        settings.validate()
        self.settings = settings
        self.server: ssl.SSLContext | None = None
        self.peer_client: ssl.SSLContext | None = None
        if settings.serving:
            self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            if settings.mutual:
                self.server.verify_mode = ssl.CERT_OPTIONAL
            self.peer_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        elif settings.ca is not None:
            # Not serving TLS itself, but dialling peers that do.
            self.peer_client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.load()

    def load(self) -> None:
        """(Re-)read every file into the existing contexts; raises if a file is unusable."""
        s = self.settings
        cert, key = (s.peer_cert, s.peer_key) if s.peer_cert else (s.cert, s.key)
        # A failed load_cert_chain can leave a context with the new certificate and the old
        # key, so every pair is tried on a scratch context before the live ones are touched.
        for pair in {(s.cert, s.key), (cert, key)}:
            if pair[0] is not None:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pair[0], pair[1])
        if self.server is not None and s.cert is not None:
            self.server.load_cert_chain(s.cert, s.key)
            if s.peer_ca is not None:
                self.server.load_verify_locations(cafile=s.peer_ca)
        if self.peer_client is not None:
            ca = s.ca or s.peer_ca
            if ca is not None:
                self.peer_client.load_verify_locations(cafile=ca)
            if s.mutual and cert is not None:
                self.peer_client.load_cert_chain(cert, key)

    def peer_ssl(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` takes for peer calls: our context, or its default."""
        return self.peer_client if self.peer_client is not None else True


def has_peer_certificate(transport: asyncio.BaseTransport | None) -> bool:
    """Whether the connection's client presented a certificate the handshake verified."""
    if transport is None:
        return False
    return bool(transport.get_extra_info("peercert"))


class TlsReloader:
    """Polls the certificate files and reloads the contexts when they change."""

    def __init__(self, contexts: TlsContexts, interval_s: float = 2.0) -> None:
        self.contexts = contexts
        self.interval_s = interval_s
        self.reloads = 0
        self._seen = _fingerprint(contexts.settings.files())
        self._task: asyncio.Task[None] | None = None

    def check(self) -> bool:
        """Reload if any file changed since the last look; True when a reload happened."""
        marks = _fingerprint(self.contexts.settings.files())
        if marks == self._seen:
            return False
        try:
            self.contexts.load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            # Half-written files during a swap: keep the old certificate, look again next round.
            log.warning("TLS files changed but could not be loaded yet: %s", exc)
            return False
        self._seen = marks
        self.reloads += 1
        log.info("TLS certificates reloaded (%d)", self.reloads)
        return True

    def start(self) -> None:
        if self.contexts.settings.files() and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
