"""Fault injection runs: concurrent clients, a nemesis, and a linearizability + durability verdict.

    from kvcluster.torture import Config, run
    summary = run(Config(out=Path("out"), nemeses=("crash", "pause"), duration=30, seed=7))
    assert summary.exit_code == 0, summary.to_dict()

``workload`` records the clients' operations in a :class:`kvcluster.lincheck.History`,
``nemesis`` injects and checks faults, ``durability`` decides whether
acknowledged writes survived a full restart, ``runner`` ties them together and
``report`` prints the outcome. The ``kvcluster torture`` command wraps
:func:`run`.
"""

from .config import Config, parse_nemeses
from .durability import DurabilityReport, Lost, Observed, check_durability
from .nemesis import NEMESES, FaultRecord, Timing
from .report import EXIT_ERROR, EXIT_FAIL, EXIT_OK, EXIT_UNKNOWN, Summary, render
from .runner import replay, run
from .workload import WORKLOADS, ClientSettings, Mix

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_UNKNOWN",
    "NEMESES",
    "WORKLOADS",
    "ClientSettings",
    "Config",
    "DurabilityReport",
    "FaultRecord",
    "Lost",
    "Mix",
    "Observed",
    "Summary",
    "Timing",
    "check_durability",
    "parse_nemeses",
    "render",
    "replay",
    "run",
]
