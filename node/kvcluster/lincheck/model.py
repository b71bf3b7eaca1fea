"""The sequential specification of one key: a versioned register with compare-and-set.

The search asks one question millions of times -- "can this operation take
effect now, and what is the key's state afterwards?" -- so states are plain
tuples and operations are small slotted objects.

State ``(value, version, floor)``:

* ``value`` is ``None`` when the key is absent (then ``version`` is 0);
* ``version`` is ``None`` while it is *unknown*: a write whose outcome was
  ``info`` never told us its version. The first operation that needs it
  (a read, a compare-and-set that expected it, a conflict that reported it)
  *pins* it, provided that is consistent with what else we know;
* ``floor`` is the highest version the key has had so far. The store assigns
  versions from a revision counter that only grows, so every write must get a
  version above the floor; deletes do not lower it. This catches a version
  going backwards, which a value-only register would miss.

Versions are treated as dense: an unknown version is only required to lie
above the floor at its write (not to leave room for a whole integer before the
next write). That is slightly permissive, never wrong in the other direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kvcluster.lincheck.intervals import Operation

State = tuple[bytes | None, int | None, int]
INITIAL: State = (None, 0, 0)

READ, WRITE, CAS, DELETE, CAS_DELETE, CONFLICT = range(6)
KIND_NAMES = ("read", "write", "cas", "delete", "cas_delete", "conflict")
NO_DUTY, PIN, SEE_ABSENT = range(3)


@dataclass(frozen=True, slots=True)
class Step:
    """An operation as the search sees it.

    ``version``: new version (write, cas), version read (read), current
    version (conflict). ``ret`` is ``None`` for an operation that may or may not
    have taken effect (``optional``). ``duty`` says what must follow it for
    applying it to be worth trying (see ``wgl``): ``PIN`` for a write nobody
    observed, ``SEE_ABSENT`` for an optional delete.
    """

    kind: int
    value: bytes | None
    version: int | None
    expected: int | None
    call: int
    ret: int | None
    source: Operation
    duty: int = 0

    @property
    def optional(self) -> bool:
        return self.ret is None


class Register:
    """Transition function of the key, given the versions known to belong to definite writes.

    ``known`` maps a version to the value its write stored. Those writes take
    effect in every linearization, so an unknown version can never be pinned
    to one of them (versions are never reused). The floor would reject it
    later anyway; refusing at the pin just prunes sooner.
    """

    __slots__ = ("_known",)

    def __init__(self, known: Mapping[int, bytes]) -> None:
        self._known = known

    def step(self, state: State, op: Step) -> State | None:
        """The state after ``op`` takes effect in ``state``, or ``None`` if it cannot."""
        kind = op.kind
        if kind == READ:
            if op.value is None:
                return state if state[0] is None and not op.version else None
            if state[0] != op.value:
                return None
            if op.version is None or op.version == state[1]:
                return state
            return self._pin(state, op.version) if state[1] is None else None
        if kind == WRITE:
            return self._put(state, op.value, op.version)
        if kind == DELETE:
            return (None, 0, state[2])
        assert op.expected is not None
        if kind == CONFLICT:
            assert op.version is not None
            if op.version == op.expected:
                return None
            return self._require(state, op.version)
        matched = self._require(state, op.expected)
        if matched is None:
            return None
        if kind == CAS:
            return self._put(matched, op.value, op.version)
        return (None, 0, matched[2])

    def _require(self, state: State, version: int) -> State | None:
        """``state`` if its version is ``version`` (pinning an unknown one), else ``None``."""
        if state[1] == version:
            return state
        if state[1] is None and version:
            return self._pin(state, version)
        return None

    def _pin(self, state: State, version: int) -> State | None:
        value, _, floor = state
        if version > floor and self._known.get(version, value) == value:
            return (value, version, version)
        return None

    @staticmethod
    def _put(state: State, value: bytes | None, version: int | None) -> State | None:
        floor = state[2]
        if version is None:
            return (value, None, floor)
        if version > floor:
            return (value, version, version)
        return None
