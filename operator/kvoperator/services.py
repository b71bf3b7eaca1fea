"""The client Service and the headless Service.

Two Services because they answer different questions: clients want any
*ready* node (any node serves any key), peers want one *specific* node by a
stable name, ready or not — during bootstrap no node is ready until a quorum
of its peers can reach it, so the headless Service publishes not-ready
addresses or the cluster could never form.
"""

from __future__ import annotations

from kvoperator.resources import (
    NODE_PORT,
    PORT_NAME,
    Body,
    ClusterRef,
    object_meta,
    selector_labels,
    with_hash,
)

_PORTS = [{"name": PORT_NAME, "port": NODE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}]


def build_client_service(ref: ClusterRef) -> Body:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(ref, ref.client_service, "client"),
            "spec": {
                "type": "ClusterIP",
                "selector": selector_labels(ref),
                "ports": [dict(p) for p in _PORTS],
            },
        }
    )


def build_headless_service(ref: ClusterRef) -> Body:
    return with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": object_meta(ref, ref.headless_service, "peers"),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": selector_labels(ref),
                "ports": [dict(p) for p in _PORTS],
            },
        }
    )
