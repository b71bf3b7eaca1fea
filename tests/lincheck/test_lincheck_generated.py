"""Generated histories: linearizable by construction, mutated into violations, and
cross-checked against a brute-force reference on tiny ones."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from kvcluster.lincheck import Op, Operation, Verdict, check, pair
from kvcluster.lincheck.history import Func

from .builders import Builder, Status
from .oracle import linearizable
from .simulate import simulate

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def simulated(rng: random.Random, **kwargs: object) -> list[Op]:
    return simulate(
        rng,
        processes=rng.randint(1, 5),
        keys=rng.randint(1, 3),
        steps=rng.randint(0, 120),
        **kwargs,  # type: ignore[arg-type]
    )


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_histories_from_a_real_register_are_linearizable(rng: random.Random) -> None:
    ops = simulated(rng)
    result = check(ops, 30.0)
    assert result.verdict == Verdict.OK, result.explain()


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_without_fail_constraints_still_linearizable(rng: random.Random) -> None:
    ops = simulated(rng)
    assert check(ops, 30.0, use_conflicts=False).verdict == Verdict.OK


def completion_of(ops: list[Op], operation: Operation) -> int:
    """Position of the record completing ``operation`` (the next one of its process)."""
    return next(
        i
        for i in range(operation.index + 1, len(ops))
        if ops[i].process == operation.process and ops[i].type != "invoke"
    )


def _changes_state(operation: Operation) -> bool:
    return operation.status == "ok" and operation.f != "read"


def _stores(operation: Operation) -> bool:
    return operation.status == "ok" and operation.f in ("write", "cas")


@SETTINGS
@given(st.randoms(use_true_random=False), st.data())
def test_stale_read_mutation_is_caught(rng: random.Random, data: st.DataObject) -> None:
    """Make a read return a value overwritten before the read began.

    w0 stored X and returned before w1 (a definite change) was invoked, and w1
    returned before the read was invoked: w0 < w1 < read in every
    linearization, and X is unique, so the read cannot see X.
    """
    ops = simulated(rng, functions=("read", "read", "write", "write", "cas", "delete"))
    operations = pair(ops)
    candidates = [
        (read, w0)
        for read in operations
        if read.f == "read" and read.status == "ok"
        for w1 in operations
        if w1.key == read.key and _changes_state(w1) and w1.ret is not None and w1.ret < read.call
        for w0 in operations
        if w0.key == read.key and _stores(w0) and w0.ret is not None and w0.ret < w1.call
    ]
    if not candidates:
        ops, candidates = _with_stale_tail(ops)
    read, w0 = data.draw(st.sampled_from(candidates))
    note(f"read #{read.index} made to return the value of #{w0.index}")
    position = completion_of(ops, read)
    ops[position] = dataclasses.replace(ops[position], value=w0.value, version=w0.version)
    result = check(ops, 30.0)
    assert result.verdict == Verdict.VIOLATION
    assert result.keys[read.key].verdict == Verdict.VIOLATION


def _with_stale_tail(ops: list[Op]) -> tuple[list[Op], list[tuple[Operation, Operation]]]:
    """Append a fresh sequential write, write, read on a new key, so a candidate always exists."""
    end = max((op.time for op in ops), default=0) + 1
    tail = Builder()
    tail.add("write", call=end, ret=end + 1, key="tail", value="x", version=1)
    tail.add("write", call=end + 2, ret=end + 3, key="tail", value="y", version=2)
    tail.add("read", call=end + 4, ret=end + 5, key="tail", value="y", version=2)
    offset = max((op.process for op in ops), default=0)
    extra = [dataclasses.replace(op, process=op.process + offset) for op in tail.ops()]
    ops = ops + extra
    operations = [operation for operation in pair(ops) if operation.key == b"tail"]
    return ops, [(operations[2], operations[0])]


@SETTINGS
@given(st.randoms(use_true_random=False), st.data())
def test_read_of_absent_after_acknowledged_write_is_caught(rng: random.Random, data: st.DataObject) -> None:
    ops = simulated(rng, functions=("read", "read", "write", "cas"))  # no deletes: a key never disappears
    operations = pair(ops)
    candidates = [
        read
        for read in operations
        if read.f == "read"
        and read.status == "ok"
        and any(
            _stores(write) and write.key == read.key and write.ret is not None and write.ret < read.call
            for write in operations
        )
    ]
    if not candidates:
        return
    read = data.draw(st.sampled_from(candidates))
    position = completion_of(ops, read)
    ops[position] = dataclasses.replace(ops[position], value=None, version=0)
    assert check(ops, 30.0).keys[read.key].verdict == Verdict.VIOLATION


@SETTINGS
@given(st.randoms(use_true_random=False), st.data())
def test_second_cas_on_the_same_version_is_caught(rng: random.Random, data: st.DataObject) -> None:
    """Add a second successful CAS expecting a version some successful CAS already consumed.

    Both need the key at that version when they take effect; a version
    belongs to one write and the key never returns to it (absent, expected 0,
    is excluded: a delete can make a key absent again).
    """
    ops = simulated(rng, functions=("read", "write", "cas", "cas", "delete"))
    operations = pair(ops)
    candidates = [
        operation
        for operation in operations
        if operation.f == "cas" and operation.status == "ok" and operation.expected_version
    ]
    if not candidates:
        return
    cas = data.draw(st.sampled_from(candidates))
    end = max(op.time for op in ops)
    call = data.draw(st.integers(0, end))
    ret = data.draw(st.integers(call, end + 1))
    process = max(op.process for op in ops) + 1
    common = {
        "process": process,
        "f": "cas",
        "key": cas.key,
        "value": b"duplicate",
        "expected_version": cas.expected_version,
    }
    ops += [
        Op(type="invoke", time=call, **common),  # type: ignore[arg-type]
        Op(type="ok", time=ret, version=10**9, **common),  # type: ignore[arg-type]
    ]
    assert check(ops, 30.0).keys[cas.key].verdict == Verdict.VIOLATION


FUNCS: list[Func] = ["read", "read", "write", "write", "cas", "cas", "delete", "cas_delete"]
STATUSES: list[Status] = ["ok", "ok", "ok", "fail", "info"]


@st.composite
def tiny_histories(draw: st.DrawFn) -> list[Op]:
    """A few operations on one key with arbitrary outcomes: most are not linearizable."""
    builder = Builder()
    pool = [] if draw(st.booleans()) else ["a", "b"]  # unique values, or repeats
    for n in range(draw(st.integers(1, 5))):
        f = draw(st.sampled_from(FUNCS))
        status = draw(st.sampled_from(STATUSES))
        if status == "fail" and f in ("read", "write", "delete"):
            status = "ok"
        call = draw(st.integers(0, 8))
        ret = None if status == "info" and draw(st.booleans()) else call + draw(st.integers(0, 4))
        value = draw(st.sampled_from(pool)) if pool else f"v{n}"
        new_version = draw(st.sampled_from([None, 1, 2, 3])) if status == "ok" else None
        if f == "read":
            read = draw(st.sampled_from([None, "a", "v0", "v1", "v2"]))
            version = draw(st.sampled_from([None, 0, 1, 2, 3])) if read is not None else 0
            builder.add("read", call=call, ret=ret, status=status, value=read, version=version)
        elif f == "write":
            builder.add("write", call=call, ret=ret, status=status, value=value, version=new_version)
        elif f == "delete":
            builder.add("delete", call=call, ret=ret, status=status)
        elif status == "fail":
            builder.add(
                f,
                call=call,
                ret=ret,
                status="fail",
                value=value if f == "cas" else None,
                expected=draw(st.integers(0, 3)),
                version=draw(st.integers(0, 3)),
                error=draw(st.sampled_from(["version_conflict", "version_conflict", "unavailable"])),
            )
        else:
            builder.add(
                f,
                call=call,
                ret=ret,
                status=status,
                value=value if f == "cas" else None,
                expected=draw(st.integers(0, 3)),
                version=new_version if f == "cas" else None,
            )
    return builder.ops()


@settings(max_examples=1500, deadline=None)
@given(tiny_histories())
def test_agrees_with_brute_force(ops: list[Op]) -> None:
    expected = linearizable(pair(ops))
    result = check(ops, 30.0)
    note(result.explain())
    assert result.verdict == (Verdict.OK if expected else Verdict.VIOLATION)
    if not expected:
        [bad] = result.violations
        assert not linearizable(bad.minimal), "the minimal history must fail on its own"
