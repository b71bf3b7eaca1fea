"""The blocking client: an AsyncClient running on a private event loop in a background thread.

Running the async client on its own loop (rather than ``asyncio.run`` per
call) keeps one connection pool for the client's lifetime, and works the
same whether the caller is plain synchronous code or is itself inside a
running event loop (a notebook, a sync helper called from async code), where
``asyncio.run`` would refuse to start.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from .aio import DEFAULT_RETRIES, DEFAULT_TIMEOUT, AsyncClient, Consistency
from .codec import Item, Key, Page
from .watch import Watch, WatchEvent

T = TypeVar("T")


class SyncClient:
    """Blocking counterpart of :class:`AsyncClient`, with the same methods and errors.

    Use it as a context manager or call :meth:`close`, which stops the
    background thread. Safe to share between threads: calls are serialised
    onto the client's loop, where they run concurrently.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        **options: Any,
    ) -> None:
        self._client = AsyncClient(endpoints, token, timeout, retries, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kvcluster-client", daemon=True)
        self._thread.start()
        self._closed = False
        self._lock = threading.Lock()

    @property
    def endpoints(self) -> list[str]:
        return list(self._client.endpoints)

    @property
    def preferred_endpoint(self) -> str:
        return self._client.preferred_endpoint

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("SyncClient called from its own loop thread would deadlock")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: do not leave the call running
            raise

    def put(self, key: Key, value: Key, if_version: int | None = None, lease: int | None = None) -> int:
        """See :meth:`AsyncClient.put`."""
        return self._run(self._client.put(key, value, if_version, lease))

    def lease_grant(self, ttl: float) -> int:
        """See :meth:`AsyncClient.lease_grant`."""
        return self._run(self._client.lease_grant(ttl))

    def lease_keepalive(self, lease: int) -> float:
        """See :meth:`AsyncClient.lease_keepalive`."""
        return self._run(self._client.lease_keepalive(lease))

    def lease_revoke(self, lease: int) -> int:
        """See :meth:`AsyncClient.lease_revoke`."""
        return self._run(self._client.lease_revoke(lease))

    def get(self, key: Key, consistency: Consistency = "linearizable") -> Item | None:
        """See :meth:`AsyncClient.get`."""
        return self._run(self._client.get(key, consistency))

    def delete(self, key: Key, if_version: int | None = None) -> int:
        """See :meth:`AsyncClient.delete`."""
        return self._run(self._client.delete(key, if_version))

    def scan(
        self,
        prefix: Key = b"",
        start: Key = b"",
        limit: int = 100,
        consistency: Consistency = "linearizable",
        cursor: str | None = None,
    ) -> Page:
        """See :meth:`AsyncClient.scan`."""
        return self._run(self._client.scan(prefix, start, limit, consistency, cursor))

    def scan_all(
        self,
        prefix: Key = b"",
        start: Key = b"",
        page_size: int = 100,
        consistency: Consistency = "linearizable",
    ) -> Iterator[Page]:
        """See :meth:`AsyncClient.scan_all`; fetches each page when the iteration reaches it."""
        page = self.scan(prefix, start, page_size, consistency)
        yield page
        while page.next is not None:
            page = self.scan(prefix, limit=page_size, consistency=consistency, cursor=page.next)
            yield page

    def watch(
        self, *, key: Key | None = None, prefix: Key | None = None, start: int | str | None = None
    ) -> SyncWatch:
        """See :meth:`AsyncClient.watch`; iterating blocks until the next change. ``close()`` to stop."""
        return SyncWatch(self, self._client.watch(key=key, prefix=prefix, start=start))

    def cluster(self) -> dict[str, Any]:
        """See :meth:`AsyncClient.cluster`."""
        return self._run(self._client.cluster())

    def metrics(self, endpoint: str | None = None) -> str:
        """See :meth:`AsyncClient.metrics`."""
        return self._run(self._client.metrics(endpoint))

    def ready(self, endpoint: str | None = None) -> bool:
        """See :meth:`AsyncClient.ready`."""
        return self._run(self._client.ready(endpoint))

    def admin_map(self) -> dict[str, Any]:
        """See :meth:`AsyncClient.admin_map`."""
        return self._run(self._client.admin_map())

    def admin_node(self, node_id: int) -> dict[str, Any] | None:
        """See :meth:`AsyncClient.admin_node`."""
        return self._run(self._client.admin_node(node_id))

    def reshape(self, nodes: list[int], partitions: int, replicas: int) -> dict[str, Any]:
        """See :meth:`AsyncClient.reshape`."""
        return self._run(self._client.reshape(nodes, partitions, replicas))

    def reshape_status(self) -> dict[str, Any]:
        """See :meth:`AsyncClient.reshape_status`."""
        return self._run(self._client.reshape_status())

    def drain(self, node_id: int) -> dict[str, Any]:
        """See :meth:`AsyncClient.drain`."""
        return self._run(self._client.drain(node_id))

    def forget_node(self, node_id: int) -> dict[str, Any]:
        """See :meth:`AsyncClient.forget_node`."""
        return self._run(self._client.forget_node(node_id))

    def close(self) -> None:
        """Close the pool and stop the background loop; idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self._run(self._client.close())
            finally:
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SyncWatch:
    """The blocking face of :class:`~kvcluster.client.watch.Watch`; ``token`` is where it stands."""

    def __init__(self, client: SyncClient, watch: Watch) -> None:
        self._client = client
        self._watch = watch
        self._closed = False

    @property
    def token(self) -> str | None:
        return self._watch.token

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        if self._closed:
            raise StopIteration
        try:
            return self._client._run(anext(self._watch))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        if not self._closed and not self._client._closed:
            self._closed = True
            self._client._run(self._watch.aclose())

    def __enter__(self) -> SyncWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
