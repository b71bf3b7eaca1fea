"""Wing & Gong's linearizability search with Lowe's memoisation, as in Porcupine.

Call and return events sit in a doubly linked list sorted by time (calls
before returns on ties, so touching intervals count as concurrent). The search
walks the list: a call may be linearized now if the model accepts it; doing so
*lifts* its call and return out of the list. Meeting a return whose call was
not linearized means the current prefix cannot be extended, so the search
backtracks (*unlifts* the last linearized operation and tries the next
candidate). The list is empty -- or only open-ended info returns remain --
when every definite operation has been linearized.

Lowe's cache remembers each (set of linearized operations, state) reached; the
same configuration reached along another path has the same future, so it is
skipped. Operations with an unknown outcome make this weaker than it could
be: "applied, then overwritten" and "never applied" lead to the same state
but different sets. So the cache compares the definite part of the set
exactly and the optional part by inclusion: a configuration is skipped when
one with the same state, the same definite operations and a *subset* of its
optional operations was seen -- that one could do everything this one can, by
simply never applying the extra optional operations.

Three reductions that keep the verdict cut the branching on very concurrent
histories:

* a read or conflict that can take effect now *without changing the state*
  is linearized greedily: moving it to the front of any linearization from
  here keeps that linearization valid (it changes nothing, and everything
  that had to precede it already has), so if this choice fails the whole
  configuration fails and the other candidates need not be tried;
* operations with identical parameters and identical intervals are
  interchangeable, so only the first one still pending is tried;
* an optional operation is only applied when something can notice it. A
  write nobody observed (unknown version, value never read) changes nothing
  anyone sees unless the very next operation pins its version; an optional
  delete, unless the absence is observed before the next change of state.
  Otherwise it was overwritten unseen, the same as never having happened. So
  such a move puts a *duty* on the next one, and configurations are told
  apart by their duty too.

Lists are index arrays rather than node objects, and the set of linearized
operations is an int used as a bitset, because this loop is the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from kvcluster.lincheck.model import (
    CAS,
    CAS_DELETE,
    CONFLICT,
    INITIAL,
    NO_DUTY,
    PIN,
    READ,
    SEE_ABSENT,
    Register,
    State,
    Step,
)

_END = -1
_CHECK_EVERY = 0xFFF


@dataclass(frozen=True, slots=True)
class SearchResult:
    """``linearizable`` is ``None`` when the deadline passed first.

    ``deepest`` is the longest partial linearization met (indices into the
    steps, in linearization order) and ``stuck`` the step whose return it
    could not get past: together they show where the history went wrong.
    """

    linearizable: bool | None
    deepest: tuple[int, ...] = ()
    stuck: int | None = None
    configurations: int = 0


def search(steps: Sequence[Step], register: Register, deadline: float) -> SearchResult:
    n = len(steps)
    if n == 0:
        return SearchResult(True)
    events = sorted(
        [(step.call, 0, i) for i, step in enumerate(steps)]
        + [(step.ret, 1, i) for i, step in enumerate(steps) if step.ret is not None]
    )
    optional = [i for i, step in enumerate(steps) if step.ret is None]
    events += [(0, 1, i) for i in optional]  # open-ended returns go last

    size = len(events) + 1
    nxt = [*range(1, size), _END]
    prv = list(range(-1, size - 1))
    op_of = [0] * size
    is_call = [False] * size
    open_return = [False] * size
    call_node = [0] * n
    ret_node = [0] * n
    for node, (_, kind, i) in enumerate(events, 1):
        op_of[node] = i
        if kind == 0:
            is_call[node] = True
            call_node[i] = node
        else:
            ret_node[i] = node
            open_return[node] = steps[i].ret is None
    match = [0] * size
    for i in range(n):
        match[call_node[i]] = ret_node[i]
        match[ret_node[i]] = call_node[i]

    read_only = [step.kind in (READ, CONFLICT) for step in steps]
    duty_of = [step.duty for step in steps]
    # which moves discharge a duty: pins (on a state of unknown version only reads, conflicts and
    # conditional writes succeed, and they all pin) or observations of absence
    allowed = {
        NO_DUTY: [True] * n,
        PIN: [step.kind in (READ, CONFLICT, CAS, CAS_DELETE) for step in steps],
        SEE_ABSENT: [step.kind in (CAS, CAS_DELETE) for step in steps],
    }
    twin_of = [-1] * n  # an identical operation earlier in the list, to be linearized first
    first_twin: dict[tuple[object, ...], int] = {}
    for i, item in enumerate(steps):
        signature = (item.kind, item.value, item.version, item.expected, item.call, item.ret)
        twin_of[i] = first_twin.get(signature, -1)
        first_twin[signature] = i

    optional_mask = 0
    for i in optional:
        optional_mask |= 1 << i
    definite_mask = ((1 << n) - 1) & ~optional_mask
    exact: set[tuple[int, State, int]] = set()
    dominated: dict[tuple[int, State, int], list[int]] = {}

    def remember(candidate: int, after: State, duty: int) -> bool:
        """Record a configuration; ``False`` if it (or one that dominates it) was seen."""
        if not optional_mask:
            config = (candidate, after, duty)
            if config in exact:
                return False
            exact.add(config)
            return True
        key = (candidate & definite_mask, after, duty)
        subset = candidate & optional_mask
        seen = dominated.get(key)
        if seen is None:
            dominated[key] = [subset]
            return True
        if any(not earlier & ~subset for earlier in seen):
            return False
        # keep an antichain: the new subset dominates every superset of it
        seen[:] = [earlier for earlier in seen if subset & ~earlier]
        seen.append(subset)
        return True

    def lift(node: int) -> None:
        before, following = prv[node], nxt[node]
        nxt[before] = following
        prv[following] = before  # a call is always followed by at least its return
        partner = match[node]
        before, following = prv[partner], nxt[partner]
        nxt[before] = following
        if following != _END:
            prv[following] = before

    def unlift(node: int) -> None:
        partner = match[node]
        before, following = prv[partner], nxt[partner]
        nxt[before] = partner
        if following != _END:
            prv[following] = partner
        before, following = prv[node], nxt[node]
        nxt[before] = node
        prv[following] = node

    def blocked(i: int) -> bool:
        twin = twin_of[i]
        return twin >= 0 and not linearized >> twin & 1

    def configurations() -> int:
        return len(exact) + len(dominated)

    apply = register.step
    state: State = INITIAL
    linearized = 0
    duty = NO_DUTY
    # (call node, state before, taken greedily, duty before)
    stack: list[tuple[int, State, bool, int]] = []
    best: tuple[int, ...] = ()
    best_stuck: int | None = None
    iterations = 0
    entering = True
    node = nxt[0]
    while True:
        iterations += 1
        if iterations & _CHECK_EVERY == 0 and time.monotonic() > deadline:
            return SearchResult(None, best, best_stuck, configurations())
        dead_end = False
        if entering:
            # a new configuration: first take every read-only operation that fits as is
            entering = False
            scan = nxt[0]
            while scan != _END and is_call[scan]:
                i = op_of[scan]
                if read_only[i] and not blocked(i) and apply(state, steps[i]) is state:
                    candidate = linearized | (1 << i)
                    after_duty = NO_DUTY if duty == SEE_ABSENT else duty
                    if not remember(candidate, state, after_duty):
                        dead_end = True  # known to fail, so this configuration fails too
                        break
                    stack.append((scan, state, True, duty))
                    duty = after_duty
                    linearized = candidate
                    lift(scan)
                    scan = nxt[0]
                    continue
                scan = nxt[scan]
            node = nxt[0]
        if not dead_end:
            if node == _END or open_return[node]:
                return SearchResult(True, tuple(op_of[entry[0]] for entry in stack), None, configurations())
            if is_call[node]:
                i = op_of[node]
                after = None if blocked(i) or not allowed[duty][i] else apply(state, steps[i])
                if after is not None:
                    candidate = linearized | (1 << i)
                    if remember(candidate, after, duty_of[i]):
                        stack.append((node, state, False, duty))
                        duty = duty_of[i]
                        state = after
                        linearized = candidate
                        lift(node)
                        entering = True
                        continue
                node = nxt[node]
                continue
            # a definite return whose call is not linearized: this prefix cannot be extended
            if len(stack) > len(best) or best_stuck is None:
                best = tuple(op_of[entry[0]] for entry in stack)
                best_stuck = op_of[node]
        while True:
            if not stack:
                return SearchResult(False, best, best_stuck, configurations())
            node, state, greedy, duty = stack.pop()
            linearized &= ~(1 << op_of[node])
            unlift(node)
            if not greedy:
                break
        node = nxt[node]
