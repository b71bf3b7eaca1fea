"""The lease checker's rules on hand-written records: a correct run passes, each breach is named."""

from __future__ import annotations

from kvcluster.lincheck.leases import LeaseEvent, check_leases

TTL = 2.0


def episode(*events: tuple[str, float, float, str, str | None], ep: int = 1) -> list[LeaseEvent]:
    """(op, invoked, completed, outcome, value) rows of one lease, key ``k`` and value ``v``."""
    out = [LeaseEvent(ep, "grant", 0.0, 0.1, "ok", lease=7, ttl=TTL)]
    for op, inv, comp, outcome, value in events:
        out.append(LeaseEvent(ep, op, inv, comp, outcome, lease=7, key="k", value=value))  # type: ignore[arg-type]
    return out


PUT = ("put", 0.2, 0.3, "ok", "v")


def test_a_correct_expiry_and_a_correct_revoke_pass() -> None:
    expiring = episode(
        PUT,
        ("read", 0.4, 0.5, "ok", "v"),
        ("keepalive", 1.0, 1.1, "ok", None),
        ("read", 2.5, 2.6, "ok", "v"),  # alive until >= 1.0 + 2.0
        ("read", 3.2, 3.3, "ok", "v"),  # past the bound but not yet expired: late is allowed
        ("read", 3.5, 3.6, "ok", None),
        ("read", 3.7, 3.8, "ok", None),
    )
    revoked = episode(
        PUT,
        ("revoke", 0.5, 0.7, "ok", None),
        ("read", 0.8, 0.9, "ok", None),
        ep=2,
    )
    report = check_leases([*expiring, *revoked])
    assert report.ok, report.violations
    assert (report.episodes, report.expired, report.revoked, report.checked_reads) == (2, 1, 1, 6)


def test_early_expiry_is_reported() -> None:
    report = check_leases(episode(PUT, ("keepalive", 1.0, 1.1, "ok", None), ("read", 2.4, 2.5, "ok", None)))
    assert len(report.violations) == 1 and report.violations[0].startswith("early-expiry"), report.violations


def test_an_unacknowledged_keepalive_does_not_extend_the_guarantee() -> None:
    # The keep-alive's answer was lost: the lease is only sure to live until 0.0 + ttl.
    report = check_leases(episode(PUT, ("keepalive", 1.0, 3.0, "info", None), ("read", 2.4, 2.5, "ok", None)))
    assert report.ok, report.violations


def test_a_read_racing_a_revoke_may_find_the_key_gone() -> None:
    report = check_leases(episode(PUT, ("revoke", 0.5, 0.9, "ok", None), ("read", 0.6, 0.8, "ok", None)))
    assert report.ok, report.violations


def test_read_after_revoke_is_reported() -> None:
    report = check_leases(episode(PUT, ("revoke", 0.5, 0.7, "ok", None), ("read", 0.8, 0.9, "ok", "v")))
    assert [v.split(":")[0] for v in report.violations] == ["read-after-revoke"], report.violations


def test_an_unacknowledged_put_is_not_judged() -> None:
    # The put's answer was lost: it may still be in flight when the revoke returns.
    report = check_leases(
        episode(
            ("put", 0.2, 5.0, "info", "v"), ("revoke", 5.1, 5.2, "ok", None), ("read", 5.3, 5.4, "ok", "v")
        )
    )
    assert report.ok and report.checked_reads == 0


def test_a_key_that_comes_back_is_reported() -> None:
    report = check_leases(episode(PUT, ("read", 2.5, 2.6, "ok", None), ("read", 2.7, 2.8, "ok", "v")))
    assert [v.split(":")[0] for v in report.violations] == ["resurrection"], report.violations


def test_late_expiry_is_reported_but_not_failed() -> None:
    report = check_leases(episode(PUT, ("read", 20.0, 20.1, "ok", "v")), late_after=10.0)
    assert report.ok and len(report.late) == 1


def test_records_round_trip_through_json() -> None:
    for event in episode(PUT, ("read", 0.4, 0.5, "ok", None)):
        assert LeaseEvent.from_json(event.to_json()) == event
