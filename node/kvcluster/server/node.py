"""A storage node: store, Raft host, peer links, router and HTTP app, started and stopped together."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kvcluster.keyspace import META_PARTITION, NodeInfo, PartitionMap
from kvcluster.storage import AppliedState, Batch, NewReplica, Store
from kvcluster.storage.metastate import initial_state
from kvcluster.transport import (
    RAFT_PATH,
    PeerAuth,
    PeerAuthError,
    PeerLinks,
    PeerRPC,
    TlsContexts,
    TlsReloader,
    has_peer_certificate,
    pack,
    unpack,
)
from kvcluster.transport.codec import message_from_wire

from . import expect, openapi, statuspage
from .admin import AdminApi
from .api import KVApi
from .backupapi import BackupApi
from .clusterstatus import STATUS_PATH, collect_status
from .config import NodeConfig
from .errors import ApiError, Internal, MethodNotAllowed, NotFound, RoutingSignal, Unauthorized, Unavailable
from .host import SNAPSHOT_PATH, RaftHost
from .leaseapi import LeaseApi
from .leases import LeaseKeeper
from .mapsync import MAP_PATH, SYNC_ERRORS, MapSync
from .metrics import NodeMetrics
from .operations import Operation, execute_local
from .reshape import Reshaper
from .router import FORWARD_PATH, Router, peer_response
from .watch import WatchApi

log = logging.getLogger(__name__)

EXIT_STORAGE_FAILURE = 70
FRESH_MAP_TIMEOUT_S = 1.0
"""How long ``GET /v1/cluster`` waits for the meta group's map before answering from the cache."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.metrics = NodeMetrics()
        self.store = Store(cfg.data_dir, cfg.durability, cfg.watch_history)
        self.auth = PeerAuth(cfg.node_id, cfg.cluster_secret)
        self.tls = TlsContexts(cfg.tls)
        self.tls_reloader = TlsReloader(self.tls, cfg.tls_reload_s)
        peer_ssl = self.tls.peer_ssl()
        self.links = PeerLinks(cfg.node_id, self.auth, self._on_frame, self._on_unreachable, peer_ssl)
        self.rpc = PeerRPC(self.auth, self.links.urls, peer_ssl)
        self.host = RaftHost(cfg, self.store, self.links, self.rpc, self.metrics, on_fatal=self._on_fatal)
        self.metrics.watch(self.host, self.links)
        self.pmap = PartitionMap()
        self.router = Router(cfg, self.host, self.rpc, self.pmap, self.metrics)
        self.kv = KVApi(cfg, self.router)
        self.lease_keeper = LeaseKeeper(cfg, self.host, self.router)
        self.reshaper = Reshaper(cfg, self.host, self.router, self.local_status)
        self.admin = AdminApi(self.reshaper)
        self.mapsync = MapSync(cfg, self.host, self.router, self.links, self.rpc)
        self.watch = WatchApi(cfg, self.host, self.router, self.rpc, self.metrics)
        self.metrics.watch_streams.set_function(lambda: len(self.watch.streams))
        self.failed = asyncio.Event()
        self.started_at = time.time()
        self._runner: web.AppRunner | None = None

    # transport callbacks go through the host once it exists
    def _on_frame(self, frame: Any) -> None:
        self.host.on_frame(frame)

    def _on_unreachable(self, node: int, messages: Any) -> None:
        self.host.on_unreachable(node, messages)

    def _on_fatal(self, exc: BaseException) -> None:
        self.failed.set()

    # ---- start-up ---------------------------------------------------------------------------------

    def bootstrap_if_empty(self) -> None:
        """First start on an empty data directory: create the initial layout, or join empty."""
        stored = self.store.get_node_value("node_id")
        if stored is not None:
            if int(stored) != self.cfg.node_id:
                raise SystemExit(f"{self.cfg.data_dir} belongs to node {stored}, not node {self.cfg.node_id}")
            return
        peers = dict(self.cfg.peers) or {self.cfg.node_id: self.cfg.url}
        values = {"node_id": str(self.cfg.node_id), "created": str(time.time())}
        batch = Batch()
        if self.cfg.cluster_state == "new":
            if self.cfg.node_id not in peers:
                raise SystemExit(f"node {self.cfg.node_id} is not in the initial peer list {sorted(peers)}")
            pmap = PartitionMap.initial(peers, self.cfg.partitions, self.cfg.replicas)
            values["cluster_id"] = cluster_id(peers, self.cfg.partitions, self.cfg.replicas)
            batch.create = [
                NewReplica(AppliedState(d.id, d), term=0, snap_index=0, snap_term=0)
                for d in pmap
                if self.cfg.node_id in d.replicas
            ]
            if pmap.meta is not None and self.cfg.node_id in pmap.meta.replicas:
                meta = AppliedState(META_PARTITION, pmap.meta, meta=initial_state(pmap))
                batch.create.append(NewReplica(meta, term=0, snap_index=0, snap_term=0))
        else:
            pmap = PartitionMap(nodes={n: NodeInfo(n, url) for n, url in peers.items()})
        values["map"] = json.dumps(pmap.to_dict())
        batch.node_values = values
        self.store.write_sync(batch)
        log.info(
            "node %d bootstrapped (%s): %d replicas",
            self.cfg.node_id,
            self.cfg.cluster_state,
            len(batch.create),
        )

    async def start(self) -> None:
        self.bootstrap_if_empty()
        stored_map = self.store.get_node_value("map")
        if stored_map:
            for k, v in vars(PartitionMap.from_dict(json.loads(stored_map))).items():
                setattr(self.pmap, k, v)
        for n, url in self.cfg.peers.items():
            self.pmap.nodes.setdefault(n, NodeInfo(n, url))
        records = self.store.load()
        self.host.start(records)
        meta = self.host.replicas.get(META_PARTITION)
        if meta is not None and meta.state.meta:
            # This node's own copy of the meta group knows nodes added after its bootstrap.
            self.mapsync.absorb(PartitionMap.from_dict(meta.state.meta["map"]), authoritative=False)
        urls = {n.id: n.url for n in self.pmap.nodes.values()}
        urls[self.cfg.node_id] = self.cfg.url
        self.links.set_peers(urls)
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=3.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.cfg.listen_host,
            self.cfg.listen_port,
            reuse_address=True,
            ssl_context=self.tls.server,
        )
        await site.start()
        self.tls_reloader.start()
        self.mapsync.start()
        self.reshaper.start()
        self.lease_keeper.start()
        log.info(
            "node %d serving on %s:%d (%s)",
            self.cfg.node_id,
            self.cfg.listen_host,
            self.cfg.listen_port,
            self.cfg.url,
        )

    async def stop(self) -> None:
        """Graceful shutdown: hand leadership over, finish in-flight requests, close."""
        await self.watch.close()
        await self.tls_reloader.stop()
        await self.reshaper.stop()
        await self.lease_keeper.stop()
        await self.mapsync.stop()
        await self.host.hand_over_leadership(timeout=3.0)
        await self.links.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.host.stop()
        await self.rpc.close()
        self.store.close(timeout=5.0)  # bounded: the loop thread must not hang on a wedged disk

    # ---- the HTTP application ------------------------------------------------------------------------

    def app(self) -> web.Application:
        # Keys travel percent-encoded in the request line: up to 3 bytes per key byte.
        line = max(8190, 3 * self.cfg.max_key_bytes + 1024)
        app = web.Application(
            middlewares=[self._errors, self._authenticate],
            client_max_size=max(64 << 20, 4 * self.cfg.max_value_bytes),
            handler_args={"max_line_size": line},
        )
        app.add_routes(self.kv.routes())
        app.add_routes(self.admin.routes())
        app.add_routes(LeaseApi(self.router).routes())
        backups = BackupApi(self.cfg, self.host, self.router, self.rpc, self.reshaper)
        app.add_routes([*backups.routes(), *backups.internal_routes()])
        app.add_routes([*self.watch.routes(), *self.watch.internal_routes()])
        app.add_routes([*statuspage.routes(), *openapi.routes()])
        app.add_routes(
            [
                web.get("/v1/cluster", self.cluster),
                web.get("/healthz", self.healthz),
                web.get("/readyz", self.readyz),
                web.get("/metrics", self.metrics_handler),
                web.get(RAFT_PATH, self.links.accept),
                web.post(FORWARD_PATH, self.forwarded),
                web.post(SNAPSHOT_PATH, self.snapshot),
                web.post(STATUS_PATH, self.internal_status),
                web.post(MAP_PATH, self.internal_map),
            ]
        )
        expect.install(app)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        )
        started = time.perf_counter()
        try:
            response = await handler(request)
        except ApiError as exc:
            response = web.json_response(exc.body(), status=exc.status, headers=exc.headers())
        except web.HTTPException as exc:
            if exc.status == 404:
                err: ApiError = NotFound(f"no such endpoint: {request.method} {request.path}")
                err.code = "no_such_endpoint"  # distinct from a missing key
            elif exc.status == 405:
                err = MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
            elif exc.status == 401:
                err = Unauthorized(exc.text or "unauthorized")
            elif exc.status == 413:
                err = ApiError(exc.text or "request too large")
                err.status, err.code = 413, "too_large"
            else:
                err = ApiError(exc.text or exc.reason)
                err.status, err.code = exc.status, "bad_request" if exc.status < 500 else "internal"
            response = web.json_response(err.body(), status=err.status, headers=err.headers())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: answer in the documented shape, keep serving
            log.exception("unhandled error on %s %s", request.method, request.path)
            err = Internal(f"internal error: {type(exc).__name__}")
            response = web.json_response(err.body(), status=500)
        if route.startswith("/v1/"):
            self.metrics.observe_request(
                request.method, route, response.status, time.perf_counter() - started
            )
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if (
            path.startswith("/internal/")
            and self.cfg.tls.mutual
            and not has_peer_certificate(request.transport)
        ):
            raise Unauthorized("peer endpoints need a client certificate from the cluster CA")
        if path.startswith("/internal/") and path != RAFT_PATH:
            try:
                self.auth.verify(request.headers, path)
            except PeerAuthError as exc:
                raise Unauthorized(f"peer authentication failed: {exc}") from None
        elif path.startswith("/v1/admin"):
            token = self.cfg.admin_token or self.cfg.client_token
            _check_bearer(request, token)
        elif path.startswith("/v1/"):
            _check_bearer(request, self.cfg.client_token)
        return await handler(request)

    # ---- handlers ------------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        if self.host.fatal is not None:
            raise Unavailable(f"storage failure: {self.host.fatal!r}")
        return web.json_response({"status": "ok", "node": self.cfg.node_id})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.host.fatal is not None:
            raise Unavailable("storage failure")
        if not self.host.all_have_leaders():
            missing = sorted(p for p, r in self.host.replicas.items() if r.core.leader == 0)
            raise Unavailable(f"partitions without a known leader: {missing}")
        return web.json_response(
            {"status": "ready", "node": self.cfg.node_id, "replicas": len(self.host.replicas)}
        )

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    def local_status(self) -> dict[str, Any]:
        return {
            "node": self.cfg.node_id,
            "url": self.cfg.url,
            "replicas": self.host.status(),
            "peers": {str(n): s for n, s in self.links.stats().items()},
            "store": self.store.stats(),
            "fatal": repr(self.host.fatal) if self.host.fatal else None,
        }

    async def internal_status(self, request: web.Request) -> web.Response:
        return web.Response(body=pack(self.local_status()), content_type="application/msgpack")

    async def internal_map(self, request: web.Request) -> web.Response:
        return web.Response(body=pack(self.pmap.to_dict()), content_type="application/msgpack")

    async def cluster(self, request: web.Request) -> web.Response:
        """The cluster as every reachable node reports it; unreachable nodes are marked so.

        The partition list comes from the meta group as of this request: the
        cached map trails it by up to a sync interval, and a reader that has
        just seen a reshape job finish must see the partitions it made. While
        the meta group cannot answer, the cached map serves.
        """
        try:
            async with asyncio.timeout(FRESH_MAP_TIMEOUT_S):
                await self.mapsync.refresh()
        except (*SYNC_ERRORS, TimeoutError) as exc:
            log.debug("GET /v1/cluster from the cached map: %r", exc)
        nodes = sorted(self.pmap.nodes)
        collected = await collect_status(self.rpc, nodes, self.cfg.node_id, self.local_status)
        reports: dict[int, Any] = {**collected.errors, **collected.reports}
        replicas: dict[int, dict[int, Any]] = {}
        node_view = []
        for n in nodes:
            rep = reports[n]
            ok = isinstance(rep, dict)
            node_view.append(
                {
                    "id": n,
                    "url": self.pmap.nodes[n].url,
                    "reachable": ok,
                    "replicas": len(rep["replicas"]) if ok else None,
                    "error": None if ok else str(rep),
                }
            )
            if ok:
                for r in rep["replicas"]:
                    replicas.setdefault(r["partition"], {})[n] = r
        partitions = []
        for desc in self.pmap:
            views = replicas.get(desc.id, {})
            leader_view = next((v for v in views.values() if v["role"] == "leader"), None)
            newest = max(views.values(), key=lambda v: (v["descriptor"]["epoch"], v["term"]), default=None)
            d = newest["descriptor"] if newest else desc.to_dict()
            partitions.append(
                {
                    "id": desc.id,
                    "range": {"start": d["start"], "end": d["end"]},
                    "epoch": d["epoch"],
                    "voters": d["voters"],
                    "learners": d["learners"],
                    "leader": next((n for n, v in views.items() if v["role"] == "leader"), None),
                    "term": leader_view["term"]
                    if leader_view
                    else max((v["term"] for v in views.values()), default=0),
                    "commit": leader_view["commit"] if leader_view else None,
                    "applied": {str(n): v["applied"] for n, v in sorted(views.items())},
                }
            )
        return web.json_response({"node": self.cfg.node_id, "nodes": node_view, "partitions": partitions})

    async def forwarded(self, request: web.Request) -> web.Response:
        op = Operation.from_wire(unpack(await request.read()))
        return await peer_response(execute_local(self.host, op, self.cfg.request_timeout_s))

    async def snapshot(self, request: web.Request) -> web.Response:
        body = unpack(await request.read())
        m = message_from_wire(body["message"])
        try:
            self.host.receive_snapshot(int(body["partition"]), m, bytes(body["data"]))
        except RoutingSignal as exc:
            return web.json_response({"error": {"code": "refused", "message": str(exc)}}, status=409)
        return web.json_response({"ok": True})


def _check_bearer(request: web.Request, token: str | None) -> None:
    if not token:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("a valid bearer token is required")


def cluster_id(peers: dict[int, str], partitions: int, replicas: int) -> str:
    ident = json.dumps({"peers": sorted(peers), "partitions": partitions, "replicas": replicas})
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


async def serve(cfg: NodeConfig) -> int:
    """Run a node until SIGTERM/SIGINT (exit 0) or a storage failure (exit 70).

    A graceful stop gets ``cfg.shutdown_s``: an orchestrator kills a node that
    overstays its grace period, leaving nothing in the log about why. Past the
    deadline the node logs the stacks of what it was waiting on and exits 0.
    """
    node = Node(cfg)
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(node.failed.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    code = EXIT_STORAGE_FAILURE if node.failed.is_set() else 0
    if code:
        log.critical("exiting: storage failure")
        return code
    log.info("shutting down")
    stopping = asyncio.ensure_future(node.stop())
    done, _ = await asyncio.wait({stopping}, timeout=cfg.shutdown_s)
    if done:
        stopping.result()  # a failure to stop is raised, as before
        return 0
    # Given up. Every acknowledged write was synced before its answer left, so nothing durable
    # depends on the rest of the stop. The event loop's own teardown would cancel the same stuck
    # tasks and wait for them without a bound, so the process ends here, after the store closes.
    _report_stuck_shutdown(cfg.shutdown_s)
    node.store.close(timeout=2.0)
    logging.shutdown()
    os._exit(0)


GAVE_UP_STOP = "graceful stop not finished"
"""How the log says a stop overran ``--shutdown-timeout``; the torture harness looks for it."""


def _report_stuck_shutdown(after_s: float) -> None:
    """Log the stacks of every task and thread: what a stop that had to be given up waited on."""
    lines = [f"{GAVE_UP_STOP} after {after_s:g}s (--shutdown-timeout); exiting. Tasks, threads:"]
    for task in asyncio.all_tasks():
        stack = io.StringIO()
        task.print_stack(file=stack)
        lines.append(stack.getvalue())
    frames = sys._current_frames()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            lines.append(f"thread {thread.name}:\n" + "".join(traceback.format_stack(frame)))
    log.warning("\n".join(lines))
