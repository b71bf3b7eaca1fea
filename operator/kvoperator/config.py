"""The ConfigMap that carries the node flags which must not restart pods when they change.

The StatefulSet's pod template reads these keys through environment
variables (``valueFrom.configMapKeyRef``), so editing them never changes the
template and never triggers a rolling restart. That matters for two values:

* ``cluster-state`` flips from ``new`` to ``existing`` once the cluster has
  bootstrapped; a pod created after that (a scale-up, or a replacement with an
  empty volume) must join rather than bootstrap a second, split-brain cluster.
* ``peers``, ``partitions`` and ``replicas`` describe the *initial* layout,
  which every node computes identically; they are fixed at creation, whereas
  the spec's values move with every reshape.
"""

from __future__ import annotations

from kvoperator.resources import Body, ClusterRef, object_meta, with_hash
from kvoperator.spec import Layout

KEY_CLUSTER_STATE = "cluster-state"
KEY_PEERS = "peers"
KEY_PARTITIONS = "partitions"
KEY_REPLICAS = "replicas"


def peers_flag(ref: ClusterRef, initial: Layout, *, tls: bool = False) -> str:
    """``--peers`` as the node expects it: ``1=url,2=url,...`` over the initial pods."""
    scheme = "https" if tls else "http"
    return ",".join(f"{i}={ref.peer_url(i, scheme)}" for i in initial.node_ids())


def build_configmap(ref: ClusterRef, initial: Layout, *, bootstrapped: bool, tls: bool = False) -> Body:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": object_meta(ref, ref.configmap, "config"),
            "data": {
                KEY_CLUSTER_STATE: "existing" if bootstrapped else "new",
                KEY_PEERS: peers_flag(ref, initial, tls=tls),
                KEY_PARTITIONS: str(initial.partitions),
                KEY_REPLICAS: str(initial.replicas),
            },
        }
    )
