"""``lincheck HISTORY.jsonl``: replay a saved history through the checker.

Kept as a plain function returning an exit code so the ``kvcluster`` click
CLI can wrap it and tests can call it without a subprocess.

Exit codes: 0 linearizable, 1 violation, 2 unusable input (bad arguments or
history file), 3 unknown (the time budget ran out before a verdict).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvcluster.lincheck.checker import Result, Verdict, check
from kvcluster.lincheck.history import HistoryError, load_history
from kvcluster.lincheck.render import show_bytes

EXIT_CODES = {Verdict.OK: 0, Verdict.VIOLATION: 1, Verdict.UNKNOWN: 3}
EXIT_BAD_INPUT = 2
_STYLES = {Verdict.OK: "green", Verdict.VIOLATION: "bold red", Verdict.UNKNOWN: "yellow"}
_MAX_ROWS = 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvcluster lincheck", description="Check a JSON-lines history for linearizability."
    )
    parser.add_argument("history", type=Path, help="JSON-lines history file")
    parser.add_argument("--budget", type=float, default=60.0, help="time budget in seconds (default 60)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1: in process)")
    parser.add_argument("--no-shrink", action="store_true", help="do not minimise failing key histories")
    parser.add_argument(
        "--ignore-conflicts",
        action="store_true",
        help="treat a failed compare-and-set only as 'did not happen', ignoring the version it reported",
    )
    return parser


def report(result: Result, console: Console) -> None:
    """Summary, a table of the keys that are not ok, and an explanation per violation."""
    console.print(Text(result.summary(), style=_STYLES[result.verdict]))
    troubled = [key_result for key_result in result.keys.values() if key_result.verdict != Verdict.OK]
    if troubled:
        table = Table("key", "verdict", "operations", "seconds", "reason")
        for key_result in troubled[:_MAX_ROWS]:
            table.add_row(
                Text(show_bytes(key_result.key)),
                Text(key_result.verdict, style=_STYLES[key_result.verdict]),
                str(key_result.operations),
                f"{key_result.elapsed_s:.2f}",
                Text(key_result.reason),
            )
        console.print(table)
        if len(troubled) > _MAX_ROWS:
            console.print(f"… and {len(troubled) - _MAX_ROWS} more keys")
    for key_result in result.violations:
        console.print()
        console.print(Text(key_result.explain()), soft_wrap=True)  # wrapping would break the timelines


def main(argv: Sequence[str] | None = None) -> int:
    console = Console(highlight=False)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and on bad arguments
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        ops = load_history(args.history)
        result = check(
            ops,
            args.budget,
            workers=args.workers,
            shrink=not args.no_shrink,
            use_conflicts=not args.ignore_conflicts,
        )
    except (OSError, HistoryError) as exc:
        console.print(Text(f"cannot check {args.history}: {exc}", style="red"))
        return EXIT_BAD_INPUT
    report(result, console)
    return EXIT_CODES[result.verdict]


if __name__ == "__main__":
    raise SystemExit(main())
