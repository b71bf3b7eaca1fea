"""The lease registry in the meta document, and the Expire command's codec."""

from __future__ import annotations

from kvcluster.storage import Expire
from kvcluster.storage import commands as codec
from kvcluster.storage.leasestate import EXPIRING, leases_of
from kvcluster.storage.metastate import apply_meta


def test_lease_life_cycle_in_the_meta_document() -> None:
    doc, answer = apply_meta(None, {"op": "lease_grant", "ttl": 5})
    assert answer["id"] == 1 and answer["ttl"] == 5.0
    doc, answer = apply_meta(doc, {"op": "lease_grant", "ttl": 7})
    assert answer["id"] == 2  # ids are never reused
    doc, answer = apply_meta(doc, {"op": "lease_bind", "id": 1, "key": b"k".hex(), "version": 9})
    assert answer["ok"]
    doc, answer = apply_meta(doc, {"op": "lease_keepalive", "id": 1})
    assert answer["ok"] and leases_of(doc)["1"]["renewals"] == 1
    doc, answer = apply_meta(doc, {"op": "lease_expire", "id": 1})
    assert answer["keys"] == {b"k".hex(): 9} and leases_of(doc)["1"]["state"] == EXPIRING
    # Once expiring, nothing can bind to it or bring it back.
    for op in ("lease_keepalive", "lease_bind"):
        doc, answer = apply_meta(doc, {"op": op, "id": 1, "key": b"x".hex(), "version": 1})
        assert answer == {"ok": False, "error": "no_lease", "job": None}
    doc, answer = apply_meta(doc, {"op": "lease_remove", "id": 1})
    assert answer["ok"] and set(leases_of(doc)) == {"2"}
    doc, answer = apply_meta(doc, {"op": "lease_keepalive", "id": 1})
    assert not answer["ok"]
    assert doc["map"] is not None  # the partition map is untouched by lease commands


def test_expire_round_trips_as_its_own_command_kind() -> None:
    cmd = Expire(b"key", 4)
    assert codec.decode(codec.encode(cmd)) == cmd
    assert codec.decode(codec.encode(codec.Delete(b"key", 4))) != cmd
