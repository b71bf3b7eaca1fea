"""Linearizability checking of key-value histories recorded by the torture runs.

Record with :class:`History` (``invoke`` then ``ok``/``fail``/``info`` on the
returned handle), save it with :func:`save_history`, judge it with
:func:`check`. See ``checker.py`` for the assumptions the verdicts rest on.
"""

from kvcluster.lincheck.checker import KeyResult, Result, Verdict, check, check_file, check_key
from kvcluster.lincheck.history import History, HistoryError, Op, Pending, load_history, save_history
from kvcluster.lincheck.intervals import Operation, by_key, pair, unpair

__all__ = [
    "History",
    "HistoryError",
    "KeyResult",
    "Op",
    "Operation",
    "Pending",
    "Result",
    "Verdict",
    "by_key",
    "check",
    "check_file",
    "check_key",
    "load_history",
    "pair",
    "save_history",
    "unpair",
]
