"""Local clusters of real node processes (``kvcluster local``, tests, fault injection)."""

from .cluster import CLUSTER_FILE, ClusterError, LocalCluster, LocalNode

__all__ = ["CLUSTER_FILE", "ClusterError", "LocalCluster", "LocalNode"]
