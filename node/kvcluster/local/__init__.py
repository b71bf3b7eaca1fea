"""Local clusters of real node processes (``kvcluster local``, tests, fault injection)."""

from .cluster import CLUSTER_FILE, ClusterError, LocalCluster, LocalNode
from .netns import NetnsError, Network, unavailable_reason

__all__ = [
    "CLUSTER_FILE",
    "ClusterError",
    "LocalCluster",
    "LocalNode",
    "NetnsError",
    "Network",
    "unavailable_reason",
]
