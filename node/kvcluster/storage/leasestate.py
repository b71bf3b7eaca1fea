"""The lease registry (issue 10), a part of the meta group's document.

Leases live in the meta group because the keys of one lease may sit in any
partition: one registry gives one place that decides an expiry, and the meta
group already is the cluster's replicated directory. The document holds
``{"next": id, "items": {id: lease}}``; a lease is ``{"ttl", "renewals",
"state", "keys"}`` with ``keys`` mapping a hex key to the version it was
bound at.

Time never enters here: every replica applies the same commands to the same
document. Only the meta leader measures time (``server/leases.py``); it sees
``renewals`` change when a keep-alive is applied and restarts the lease's
countdown, and it decides an expiry by proposing ``lease_expire``, after
which the lease is ``expiring``: no key can be bound to it any more and no
keep-alive can bring it back, so the deletes that follow are final.
"""

from __future__ import annotations

from typing import Any

LEASE_OPS = frozenset(
    {"lease_grant", "lease_keepalive", "lease_bind", "lease_expire", "lease_revoke", "lease_remove"}
)
LIVE = "live"
EXPIRING = "expiring"


def leases_of(doc: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The leases of a meta document, by id (as a string: the document is JSON)."""
    if not doc:
        return {}
    items: dict[str, dict[str, Any]] = (doc.get("leases") or {}).get("items", {})
    return items


def apply_lease(doc: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Apply one lease command to ``doc`` (a private copy) in place; returns the answer."""
    registry: dict[str, Any] = doc.setdefault("leases", {"next": 1, "items": {}})
    items: dict[str, dict[str, Any]] = registry["items"]
    op = body["op"]
    if op == "lease_grant":
        lease_id = int(registry["next"])
        registry["next"] = lease_id + 1
        items[str(lease_id)] = {"ttl": float(body["ttl"]), "renewals": 0, "state": LIVE, "keys": {}}
        return {"ok": True, "id": lease_id, "ttl": float(body["ttl"])}
    lease = items.get(str(body.get("id")))
    if lease is None:
        return {"ok": False, "error": "no_lease"}
    if op == "lease_remove":
        del items[str(body["id"])]
        return {"ok": True}
    if op in ("lease_expire", "lease_revoke"):
        lease["state"] = EXPIRING
        lease["reason"] = "revoked" if op == "lease_revoke" else "expired"
        return {"ok": True, "keys": dict(lease["keys"]), "ttl": lease["ttl"]}
    if lease["state"] != LIVE:
        return {"ok": False, "error": "no_lease"}  # decided to expire: as good as gone
    if op == "lease_keepalive":
        lease["renewals"] = int(lease["renewals"]) + 1
        return {"ok": True, "ttl": lease["ttl"]}
    # lease_bind: remember the version so that the expiry deletes only this write
    lease["keys"][str(body["key"])] = int(body["version"])
    return {"ok": True}
