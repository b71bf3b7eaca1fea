"""Prometheus metrics of one node, in a registry of its own.

A registry per node (not the process-global one) so that tests can run
several nodes in one process without their counters mixing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "kvcluster_http_requests",
            "Client API requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "kvcluster_http_request_seconds",
            "Client API latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
        self.leader_changes = Counter(
            "kvcluster_raft_leader_changes", "Leadership changes observed", registry=r
        )
        self.replicas = Gauge("kvcluster_replicas", "Replicas hosted by this node", registry=r)
        self.leaders = Gauge("kvcluster_leaders", "Partitions this node leads", registry=r)
        self.partition_term = Gauge("kvcluster_partition_term", "Current term", ["partition"], registry=r)
        self.partition_commit = Gauge(
            "kvcluster_partition_commit_index", "Commit index", ["partition"], registry=r
        )
        self.partition_applied = Gauge(
            "kvcluster_partition_applied_index", "Applied index", ["partition"], registry=r
        )
        self.peers_connected = Gauge("kvcluster_peers_connected", "Peers with an open Raft link", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
