"""The watch checker's rules on hand-written records: a clean run passes, each breach is named once."""

from __future__ import annotations

import itertools

from kvcluster.lincheck import History, Op
from kvcluster.lincheck.leases import LeaseEvent
from kvcluster.lincheck.watch import WatchRecord, WatchReport, awaited, check_watch, delivered

K, L = b"key-000", b"lease-0-1"


def register_history() -> list[Op]:
    """p1: write a@3 ok, cas b@5 ok, delete ok (rev 6); p2: a write that failed, one of unknown
    outcome, and a delete of unknown outcome (on another process, since info retires it)."""
    clock = itertools.count(1)
    h = History(clock=lambda: next(clock))
    p1, p2, p3 = h.fresh_process(), h.fresh_process(), h.fresh_process()
    h.invoke(p1, "write", K, value="a").ok(version=3)
    h.invoke(p1, "cas", K, value="b", expected_version=3).ok(version=5)
    h.invoke(p1, "delete", K).ok(version=6)
    h.invoke(p2, "write", K, value="failed").fail(error="unavailable")
    h.invoke(p2, "write", K, value="unknown").info(error="timeout")
    h.invoke(p3, "delete", K).info(error="timeout")
    h.invoke(p1, "read", K).ok(value=None, version=0)
    return h.ops


def lease_events() -> list[LeaseEvent]:
    """One episode: grant, put (ok), reads while alive, then reads after it expired."""
    key, value = L.decode(), "lease-0-1@1"
    return [
        LeaseEvent(1, "grant", 0.0, 0.1, "ok", lease=9, ttl=2.0),
        LeaseEvent(1, "put", 0.2, 0.3, "ok", lease=9, key=key, value=value),
        LeaseEvent(1, "read", 0.4, 0.5, "ok", lease=9, key=key, value=value),
        LeaseEvent(1, "read", 2.6, 2.7, "ok", lease=9, key=key, value=value),  # before the expiry was seen
        LeaseEvent(1, "read", 3.1, 3.2, "ok", lease=9, key=key, value=None),
    ]


def clean_records() -> list[WatchRecord]:
    return [
        WatchRecord("put", K, b"a", 3, 1.0),
        WatchRecord("put", L, b"lease-0-1@1", 4, 1.1),
        WatchRecord("put", K, b"b", 5, 1.2),
        WatchRecord("delete", K, None, 6, 1.3),
        WatchRecord("put", K, b"unknown", 8, 1.4),  # the unknown write did take effect
        WatchRecord("delete", K, None, 9, 1.5),  # and so did the unknown delete
        WatchRecord("expire", L, None, 7, 3.0),
    ]


def kinds(report: WatchReport) -> list[str]:
    return [v.split(":")[0] for v in report.violations]


def check(
    records: list[WatchRecord], complete: bool = True, stream_errors: tuple[str, ...] = ()
) -> WatchReport:
    return check_watch(
        records, register_history(), lease_events(), complete=complete, stream_errors=stream_errors
    )


def test_a_clean_record_passes() -> None:
    report = check(clean_records())
    assert report.ok, report.violations
    assert (report.events, report.puts, report.deletes, report.expires) == (7, 4, 2, 1)
    assert report.acknowledged == 4  # two register puts, one register delete, one lease put
    assert report.unknown_applied == 2
    assert report.lease_reads_checked == 1  # only the read invoked after the expire was received
    assert report.to_dict()["ok"] is True and report.to_dict()["violation_count"] == 0


def test_awaited_is_what_a_caught_up_watch_delivered() -> None:
    wanted = awaited(register_history(), lease_events())
    assert wanted == {(K, 3), (K, 5), (K, 6), (L, b"lease-0-1@1")}
    for record in clean_records():
        wanted.difference_update(delivered(record))
    assert not wanted


def test_a_missing_acknowledged_put_and_delete_are_reported() -> None:
    records = [r for r in clean_records() if r.revision not in (5, 6)]
    assert kinds(check(records)) == ["missing", "missing"]
    assert check(records, complete=False).ok  # a record cut short cannot tell what is missing


def test_a_missing_acknowledged_lease_put_is_reported() -> None:
    records = [r for r in clean_records() if r.key != L]
    assert kinds(check(records)) == ["missing"]


def test_an_event_delivered_twice_is_reported() -> None:
    records = clean_records()
    records.insert(3, WatchRecord("put", K, b"b", 5, 1.25))
    report = check(records)
    # Also delivered out of order and applied twice, by the same token: each rule names it once.
    assert sorted(kinds(report)) == ["duplicate", "out-of-order", "repeated-revision"], report.violations


def test_a_key_going_back_in_revisions_is_reported() -> None:
    records = clean_records()
    records[2], records[3] = records[3], records[2]  # the delete at 6 before the put at 5
    assert "out-of-order" in kinds(check(records))


def test_an_event_for_a_failed_write_is_reported() -> None:
    records = [*clean_records(), WatchRecord("put", K, b"failed", 10, 1.6)]
    assert kinds(check(records)) == ["failed-write"]


def test_a_value_nobody_wrote_is_reported() -> None:
    records = [*clean_records(), WatchRecord("put", K, b"phantom", 10, 1.6)]
    assert kinds(check(records)) == ["unwritten"]


def test_a_put_at_another_revision_than_acknowledged_is_reported() -> None:
    records = clean_records()
    records[0] = WatchRecord("put", K, b"a", 2, 1.0)
    assert kinds(check(records)) == ["wrong-revision"]


def test_a_delete_nobody_asked_for_is_reported() -> None:
    records = [*clean_records(), WatchRecord("delete", K, None, 11, 1.7)]  # one unknown delete only
    assert kinds(check(records)) == ["unasked-delete"]


def test_an_expire_of_a_register_key_and_a_foreign_key_are_reported() -> None:
    records = [
        *clean_records(),
        WatchRecord("expire", K, None, 12, 1.8),
        WatchRecord("put", b"x", b"y", 1, 2.0),
    ]
    assert sorted(kinds(check(records))) == ["foreign-key", "unasked-delete"]


def test_a_read_after_the_expiry_was_received_that_returns_the_value_is_reported() -> None:
    events = [
        *lease_events(),
        LeaseEvent(1, "read", 3.3, 3.4, "ok", lease=9, key=L.decode(), value="lease-0-1@1"),
    ]
    report = check_watch(clean_records(), register_history(), events)
    assert kinds(report) == ["read-after-expire"], report.violations
    # A read that started before the watcher received the expiry may still see the value.
    early = [
        *lease_events(),
        LeaseEvent(1, "read", 2.9, 3.4, "ok", lease=9, key=L.decode(), value="lease-0-1@1"),
    ]
    assert check_watch(clean_records(), register_history(), early).ok


def test_a_put_after_the_removal_excuses_later_reads() -> None:
    # A put whose answer was lost, applied after the expiry: later reads may see it.
    key, value = L.decode(), "lease-0-1@1"
    events = [
        LeaseEvent(1, "grant", 0.0, 0.1, "ok", lease=9, ttl=2.0),
        LeaseEvent(1, "put", 0.2, 9.0, "info", lease=9, key=key, value=value),
        LeaseEvent(1, "read", 5.0, 5.1, "ok", lease=9, key=key, value=value),
    ]
    records = [
        WatchRecord("put", L, value.encode(), 4, 1.0),
        WatchRecord("expire", L, None, 5, 3.0),
        WatchRecord("put", L, value.encode(), 6, 4.0),
    ]
    report = check_watch(records, [], events)
    assert kinds(report) == ["duplicate"]  # the same value applied twice is wrong in itself...
    assert report.lease_reads_checked == 0  # ...but the read after the second put is not judged


def test_a_failed_lease_put_that_was_undone_is_allowed() -> None:
    key, value = L.decode(), "lease-0-1@1"
    events = [
        LeaseEvent(1, "grant", 0.0, 0.1, "ok", lease=9, ttl=2.0),
        LeaseEvent(1, "put", 0.2, 0.5, "fail", lease=9, key=key, value=value),  # 404: the lease was gone
    ]
    undone = [WatchRecord("put", L, value.encode(), 4, 0.4), WatchRecord("delete", L, None, 5, 0.45)]
    assert check_watch(undone, [], events).ok
    assert kinds(check_watch(undone[:1], [], events)) == ["failed-write"]


def test_compacted_and_a_stream_that_ended_are_failures() -> None:
    records = [*clean_records(), WatchRecord("compacted", b"", None, 40, 5.0)]
    report = check(records, stream_errors=("the watch of 'key-' ended: BadRequest: from: bad token",))
    assert sorted(kinds(report)) == ["compacted", "stream"]
    assert report.errors and report.to_dict()["violation_count"] == 2


def test_records_round_trip_through_json() -> None:
    for record in [*clean_records(), WatchRecord("put", b"\xff\x00", b"\x01", 3, 1.5)]:
        assert WatchRecord.from_json(record.to_json()) == record
