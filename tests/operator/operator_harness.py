"""Run the real operator (kopf and all handlers) in a thread against the emulator.

A thread with its own event loop, because kopf treats every task of its loop
as its own: when it stops it cancels them, and it waits for stragglers.
Sharing the test's loop would have it wait on (and cancel) the emulator's
request handlers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from kvoperator.controller import Operator, OperatorConfig


class OperatorThread:
    def __init__(
        self,
        server: str,
        config: OperatorConfig,
        *,
        namespace: str,
        identity: str = "test-operator",
        peering: str | None = None,
        priority: int = 0,
    ) -> None:
        self.server = server
        self.config = config
        self.namespace = namespace
        self.identity = identity
        self.peering = peering
        self.priority = priority
        self.operator = Operator(config, login=self._login)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"kopf-{identity}", daemon=True)
        self.error: BaseException | None = None

    def _login(self, **_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self.server, default_namespace=self.namespace)

    def settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.watching.server_timeout = 30
        settings.watching.reconnect_backoff = 0.05
        settings.networking.request_timeout = 10
        settings.persistence.consistency_timeout = 3
        settings.queueing.idle_timeout = 2
        settings.queueing.exit_timeout = 2
        settings.peering.lifetime = 10
        settings.execution.max_workers = 4
        settings.posting.level = logging.DEBUG
        return settings

    def _run(self) -> None:
        registry = kopf.OperatorRegistry()
        self.operator.register(registry)
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=self.settings(),
                    namespaces=[self.namespace],
                    standalone=self.peering is None,
                    peering_name=self.peering,
                    priority=self.priority,
                    identity=self.identity,  # a plain NewType(str); distinct per peer
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                )
            )
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    async def start(self, timeout: float = 10) -> OperatorThread:
        self._thread.start()
        ready = await asyncio.to_thread(self._ready.wait, timeout)
        assert ready, "the operator did not start"
        return self

    async def stop(self, timeout: float = 15) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, timeout)
        assert not self._thread.is_alive(), "the operator did not stop"
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
            raise self.error

    async def __aenter__(self) -> OperatorThread:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
