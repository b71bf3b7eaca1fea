"""Checking a whole history: per key, within a time budget, with a readable verdict.

Linearizability is local, so each key is checked on its own (Porcupine's and
Knossos's partitioning): the cost is the sum over keys of searches that are
each small, instead of one search over everything. Keys can go to worker
processes; the in-process path is the default and what tests use.

The budget is a promise to the caller: a pathological history yields
``unknown`` for the keys that did not finish, never a hang. In process, each
key first gets a fair share of what remains (time a quick key does not use
rolls over to the next ones), then keys still unknown share whatever is left.

Assumptions (from the store and the torture workload): every key is absent
when the history starts; every operation on a key is in the history; each
write stores a value unique for its key (reasoning by value is switched off
for values that repeat, so repeats cost speed, not correctness).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from kvcluster.lincheck.history import History, Op, load_history
from kvcluster.lincheck.intervals import Operation, by_key, pair, unpair
from kvcluster.lincheck.model import Register
from kvcluster.lincheck.prepare import prepare, relevant
from kvcluster.lincheck.render import label, show_bytes, timeline
from kvcluster.lincheck.shrink import shrink as shrink_history
from kvcluster.lincheck.wgl import search


class Verdict(StrEnum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Options:
    shrink: bool = True
    use_conflicts: bool = True


@dataclass(frozen=True)
class KeyResult:
    """The verdict for one key.

    On a violation, ``minimal`` is a small sub-history of the key that is
    non-linearizable by itself, ``linearized`` the longest prefix of it the
    search could linearize and ``stuck`` the operation that could not follow.
    """

    key: bytes
    verdict: Verdict
    operations: int
    elapsed_s: float
    reason: str = ""
    minimal: tuple[Operation, ...] = ()
    linearized: tuple[Operation, ...] = ()
    stuck: Operation | None = None
    configurations: int = 0

    def minimal_history(self) -> list[Op]:
        """The minimal failing sub-history as records, to save next to the run and replay."""
        return unpair(self.minimal)

    def explain(self) -> str:
        head = f"key {show_bytes(self.key)}: {self.verdict}"
        if self.reason:
            head += f" -- {self.reason}"
        if self.verdict != Verdict.VIOLATION:
            return head
        lines = [
            head,
            f"smallest failing sub-history found: {len(self.minimal)} of {self.operations} operations",
            timeline(self.minimal),
        ]
        if self.stuck is not None:
            prefix = ", ".join(f"#{operation.index}" for operation in self.linearized) or "nothing"
            lines.append(
                f"longest linearizable prefix: {prefix}; then {label(self.stuck)} cannot take effect"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    keys: Mapping[bytes, KeyResult] = field(default_factory=dict)
    operations: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict == Verdict.OK

    def with_verdict(self, verdict: Verdict) -> list[KeyResult]:
        return [result for result in self.keys.values() if result.verdict == verdict]

    @property
    def violations(self) -> list[KeyResult]:
        return self.with_verdict(Verdict.VIOLATION)

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.with_verdict(verdict))} {verdict}" for verdict in Verdict)
        return (
            f"{self.verdict}: {self.operations} operations on {len(self.keys)} keys ({counts})"
            f" in {self.elapsed_s:.2f}s"
        )

    def explain(self) -> str:
        parts = [self.summary()]
        parts += [result.explain() for result in self.keys.values() if result.verdict != Verdict.OK]
        return "\n\n".join(parts)


def overall(verdicts: Iterable[Verdict]) -> Verdict:
    seen = set(verdicts)
    if Verdict.VIOLATION in seen:
        return Verdict.VIOLATION
    return Verdict.UNKNOWN if Verdict.UNKNOWN in seen else Verdict.OK


def _verdict(operations: Sequence[Operation], deadline: float, options: Options) -> Verdict:
    prepared = prepare(operations, use_conflicts=options.use_conflicts)
    if prepared.witness:
        return Verdict.VIOLATION
    found = search(prepared.steps, Register(prepared.known), deadline).linearizable
    return Verdict.UNKNOWN if found is None else Verdict.OK if found else Verdict.VIOLATION


def check_key(
    key: bytes,
    operations: Sequence[Operation],
    deadline: float,
    options: Options = Options(),
) -> KeyResult:
    """Verdict for one key's operations, searching until ``deadline`` (``time.monotonic``)."""
    started = time.monotonic()
    prepared = prepare(operations, use_conflicts=options.use_conflicts)

    def finish(verdict: Verdict, reason: str = "", configurations: int = 0) -> KeyResult:
        return KeyResult(
            key=key,
            verdict=verdict,
            operations=len(operations),
            elapsed_s=time.monotonic() - started,
            reason=reason,
            configurations=configurations,
        )

    if prepared.witness:
        witness = prepared.witness
        return replace(finish(Verdict.VIOLATION, prepared.reason), minimal=witness, stuck=witness[-1])
    outcome = search(prepared.steps, Register(prepared.known), deadline)
    if outcome.linearizable is None:
        return finish(Verdict.UNKNOWN, "time budget exhausted", outcome.configurations)
    if outcome.linearizable:
        return finish(Verdict.OK, "", outcome.configurations)

    candidates = [
        operation for operation in operations if relevant(operation, use_conflicts=options.use_conflicts)
    ]
    minimal: Sequence[Operation] = candidates
    if options.shrink:
        start = None
        if outcome.stuck is not None:
            stuck_ret = prepared.steps[outcome.stuck].ret
            if stuck_ret is not None:
                start = [operation for operation in candidates if operation.call <= stuck_ret]
        minimal = shrink_history(
            candidates,
            lambda sub: _verdict(sub, deadline, options) == Verdict.VIOLATION,
            deadline,
            start=start,
        )
    # Explain the minimal history with its own search: small, so cheap, and it matches the picture.
    small = prepare(minimal, use_conflicts=options.use_conflicts)
    linearized: tuple[Operation, ...] = ()
    stuck: Operation | None = None
    reason = "no linearization exists"
    if small.witness:
        stuck, reason = small.witness[-1], small.reason
    else:
        explained = search(small.steps, Register(small.known), time.monotonic() + 1.0)
        linearized = tuple(small.steps[i].source for i in explained.deepest)
        if explained.stuck is not None:
            stuck = small.steps[explained.stuck].source
    return replace(
        finish(Verdict.VIOLATION, reason, outcome.configurations),
        minimal=tuple(sorted(minimal, key=lambda operation: operation.index)),
        linearized=linearized,
        stuck=stuck,
    )


def _check_key_task(key: bytes, operations: list[Operation], deadline: float, options: Options) -> KeyResult:
    return check_key(key, operations, deadline, options)


def check(
    history: History | Iterable[Op],
    time_budget_s: float = 60.0,
    *,
    workers: int = 1,
    shrink: bool = True,
    use_conflicts: bool = True,
) -> Result:
    """Check a recorded history for linearizability, key by key.

    ``workers > 1`` checks keys in that many worker processes (spawned, so it
    is safe from threaded or asyncio programs, but a script calling it needs
    the usual ``if __name__ == "__main__":`` guard); each key then runs until
    the overall deadline. Spawning and shipping the operations costs about a
    second, so it only pays when some keys are hard. ``shrink`` looks for a small failing sub-history of
    each violating key. ``use_conflicts=False`` treats a failed
    compare-and-set as merely "did not happen" instead of also trusting the
    version it reported.
    """
    started = time.monotonic()
    deadline = started + time_budget_s
    ops = history.ops if isinstance(history, History) else list(history)
    operations = pair(ops)
    keys = by_key(operations)
    options = Options(shrink=shrink, use_conflicts=use_conflicts)
    if workers > 1 and len(keys) > 1:
        results = _check_parallel(keys, deadline, options, workers)
    else:
        results = _check_in_process(keys, deadline, options)
    ordered = {key: results[key] for key in sorted(keys)}
    return Result(
        verdict=overall(result.verdict for result in ordered.values()),
        keys=ordered,
        operations=len(operations),
        elapsed_s=time.monotonic() - started,
    )


def _check_in_process(
    keys: Mapping[bytes, list[Operation]], deadline: float, options: Options
) -> dict[bytes, KeyResult]:
    results: dict[bytes, KeyResult] = {}
    for round_ in range(2):
        todo = [key for key in keys if key not in results or results[key].verdict == Verdict.UNKNOWN]
        if round_ and not todo:
            break
        for position, key in enumerate(todo):
            now = time.monotonic()
            share = max(deadline - now, 0.0) / (len(todo) - position)
            previous = results.get(key)
            result = check_key(key, keys[key], min(deadline, now + share), options)
            if previous is not None:
                result = replace(result, elapsed_s=result.elapsed_s + previous.elapsed_s)
            results[key] = result
    return results


def _check_parallel(
    keys: Mapping[bytes, list[Operation]], deadline: float, options: Options, workers: int
) -> dict[bytes, KeyResult]:
    # time.monotonic is system-wide on the platforms we run on, so an absolute deadline means
    # the same instant in the workers.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(keys)), mp_context=context) as pool:
        futures = {
            key: pool.submit(_check_key_task, key, ops, deadline, options) for key, ops in keys.items()
        }
        return {key: future.result() for key, future in futures.items()}


def check_file(
    path: str | Path,
    time_budget_s: float = 60.0,
    *,
    workers: int = 1,
    shrink: bool = True,
    use_conflicts: bool = True,
) -> Result:
    """Replay a saved JSON-lines history through the checker."""
    return check(
        load_history(path), time_budget_s, workers=workers, shrink=shrink, use_conflicts=use_conflicts
    )
