"""Prometheus metrics of one node, in a registry of its own.

A registry per node (not the process-global one) so that tests can run
several nodes in one process without their counters mixing.

Two kinds of metric live here. Events (requests, batches, leader changes)
are counters and histograms updated where they happen, at the cost of one
increment or observation. State (terms, indexes, lag, leadership, the
reshape job) is read from the node when Prometheus scrapes, by
:class:`NodeStateCollector`: nothing to keep in sync, no work per request,
and a partition merged away simply stops being reported instead of leaving
a stale series behind.

Naming follows the Prometheus conventions: a ``kvcluster_`` prefix, base
units as suffixes (``_seconds``, ``_entries`` for Raft log entries),
counters exposed with ``_total``, and only low-cardinality labels (an
operation, a status, a partition id, a node id). docs/deployment.md lists
them; tests/integration/test_metrics.py checks that list against a scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from kvcluster.keyspace import META_PARTITION

if TYPE_CHECKING:
    from kvcluster.transport.peers import PeerLinks

    from .host import RaftHost

# The `_created` gauge beside every counter and histogram doubles the series and nothing reads it
# (Prometheus' text format cannot use it). Process-wide, like the node a process runs.
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# The client API's routes (aiohttp's canonical form) by method, named as an operation:
# a closed set, so the `op` label stays small whatever paths clients send.
OPERATIONS: dict[tuple[str, str], str] = {
    ("PUT", "/v1/kv/{key}"): "put",
    ("GET", "/v1/kv/{key}"): "get",
    ("DELETE", "/v1/kv/{key}"): "delete",
    ("GET", "/v1/kv"): "list",
    ("GET", "/v1/routing"): "routing",
    ("GET", "/v1/cluster"): "cluster",
    ("GET", "/v1/watch"): "watch",
}
ADMIN_PREFIX = "/v1/admin"
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})
RESHAPE_STATES = ("idle", "running", "done", "failed")


def operation(method: str, route: str) -> str:
    """The `op` label of a request: put, get, delete, list, routing, cluster, watch, admin or other."""
    op = OPERATIONS.get((method, route))
    if op is not None:
        return op
    return "admin" if route.startswith(ADMIN_PREFIX) else "other"


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kvcluster_http_requests",
            "Client API requests by operation and HTTP status code",
            ["op", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "kvcluster_http_request_duration_seconds",
            "Client API latency by operation and status class (2xx, 4xx, 5xx)",
            ["op", "status_class"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # (method, route, status) -> the two labelled children: resolving labels once per
        # combination keeps a request's cost at one increment and one observation.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.forwarded = Counter(
            "kvcluster_forwarded_requests", "Operations forwarded to another node", ["op"], registry=r
        )
        self.batch_seconds = Histogram(
            "kvcluster_storage_batch_seconds",
            "Time to commit one group-commit batch (including fsync)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_entries = Histogram(
            "kvcluster_storage_batch_entries",
            "Log entries persisted per batch",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.applied_entries = Counter("kvcluster_raft_applied_entries", "Entries applied", registry=r)
        self.proposals = Counter(
            "kvcluster_raft_proposals", "Commands proposed by this node's leaders", registry=r
        )
        self.snapshots_sent = Counter(
            "kvcluster_raft_snapshots_sent", "Snapshots sent to followers", ["result"], registry=r
        )
        self.snapshots_installed = Counter(
            "kvcluster_raft_snapshots_installed", "Snapshots installed", registry=r
        )
        self.watch_cut_off = Counter(
            "kvcluster_watch_cut_off", "Watchers cut off for leaving their stream unread", registry=r
        )
        self.leader_changes = Counter(
            "kvcluster_raft_leader_changes", "Leadership changes observed", registry=r
        )
        # Set by the host after every turn of its loop.
        self.replicas = Gauge("kvcluster_replicas", "Replicas hosted by this node", registry=r)
        self.leaders = Gauge("kvcluster_leaders", "Partitions this node leads", registry=r)
        self.watch_streams = Gauge("kvcluster_watch_streams", "Watch streams this node serves", registry=r)
        self.start_time = Gauge(
            "kvcluster_node_start_time_seconds",
            "When this node process started, in seconds since the epoch (changes reveal restarts)",
            registry=r,
        )
        self.start_time.set(time.time())

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one client API request and record its latency."""
        key = (method if method in _METHODS else "OTHER", route, status)
        children = self._request_children.get(key)
        if children is None:
            op = operation(key[0], route)
            children = (
                self.requests.labels(op, str(status)),
                self.request_seconds.labels(op, f"{status // 100}xx"),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, host: RaftHost, links: PeerLinks) -> None:
        """Report the state of this node's replicas, links and reshape job at every scrape."""
        self.registry.register(NodeStateCollector(host, links))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class NodeStateCollector:
    """Gauges computed from the node's state when Prometheus scrapes (a custom collector)."""

    def __init__(self, host: RaftHost, links: PeerLinks) -> None:
        self.host = host
        self.links = links

    def collect(self) -> Iterator[Metric]:
        host = self.host
        term = _by_partition("kvcluster_partition_term", "Current Raft term")
        commit = _by_partition("kvcluster_partition_commit_index", "Raft commit index")
        applied = _by_partition("kvcluster_partition_applied_index", "Index applied to the state machine")
        apply_lag = _by_partition(
            "kvcluster_partition_apply_lag_entries",
            "Committed entries not yet applied on this replica (commit index minus applied index)",
        )
        is_leader = _by_partition(
            "kvcluster_partition_is_leader", "1 when this node leads the partition, else 0"
        )
        follower_lag = GaugeMetricFamily(
            "kvcluster_raft_follower_lag_entries",
            "Entries a follower's log is behind the leader's last index, as the leader sees it "
            "(reported by the leader only)",
            labels=["partition", "follower"],
        )
        leaderless = 0
        for pid, r in sorted(host.replicas.items()):
            if r.removed:
                continue
            st = r.core.status()
            label = [str(pid)]
            leaderless += st.leader == 0
            term.add_metric(label, st.term)
            commit.add_metric(label, st.commit)
            applied.add_metric(label, r.state.applied_index)
            apply_lag.add_metric(label, max(0, st.commit - r.state.applied_index))
            is_leader.add_metric(label, 1 if r.is_leader else 0)
            if r.is_leader:
                for node, (match, _next, _state) in sorted(st.progress.items()):
                    if node != host.node_id:
                        follower_lag.add_metric([str(pid), str(node)], max(0, st.last_index - match))
        yield GaugeMetricFamily(
            "kvcluster_partitions_without_leader",
            "Replicas on this node that know no leader for their partition",
            value=leaderless,
        )
        yield from (term, commit, applied, apply_lag, is_leader, follower_lag)
        yield GaugeMetricFamily(
            "kvcluster_peers_connected",
            "Peers with an open Raft link",
            value=sum(1 for s in self.links.stats().values() if s["connected"]),
        )
        yield GaugeMetricFamily(
            "kvcluster_storage_failed",
            "1 once a storage or state-machine error has stopped this node (fail-stop), else 0",
            value=1 if host.fatal is not None else 0,
        )
        yield from self._reshape()

    def _reshape(self) -> Iterator[Metric]:
        """The reshape job as the meta leader holds it: one reporter, so sums and maxima agree."""
        meta = self.host.replicas.get(META_PARTITION)
        if meta is None or not meta.is_leader:
            return
        job = (meta.state.meta or {}).get("job") or {}
        current = str(job.get("state", "idle"))
        state = GaugeMetricFamily(
            "kvcluster_reshape_job_state",
            "1 for the state of the latest reshape job (idle, running, done, failed), reported by the "
            "meta leader",
            labels=["state"],
        )
        for name in RESHAPE_STATES if current in RESHAPE_STATES else (*RESHAPE_STATES, current):
            state.add_metric([name], 1 if name == current else 0)
        yield state
        yield GaugeMetricFamily(
            "kvcluster_reshape_steps_completed",
            "Steps the latest reshape job has completed",
            value=int(job.get("steps_done") or 0),
        )
        planned = job.get("steps_total")
        if planned is not None:
            yield GaugeMetricFamily(
                "kvcluster_reshape_steps_planned",
                "Steps of the latest reshape job: completed plus still planned (re-planned after each step)",
                value=int(planned),
            )


def _by_partition(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["partition"])
