"""Plain-text pictures of small histories, for people reading a failed run.

The timeline places events by rank, not by clock value: linearizability only
cares which events came before which, and ranks keep a 20 ms gap and a 20 s
gap equally readable.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvcluster.lincheck.intervals import Operation

_MAX_TEXT = 24


def show_bytes(data: bytes | None) -> str:
    if data is None:
        return "absent"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    else:
        if text.isprintable():
            shown = repr(text)
            return shown if len(shown) <= _MAX_TEXT else shown[: _MAX_TEXT - 2] + "…" + shown[0]
    hexed = data.hex()
    return "0x" + (hexed if len(hexed) <= _MAX_TEXT - 2 else hexed[: _MAX_TEXT - 3] + "…")


def _version(version: int | None) -> str:
    return "" if version is None else f" v{version}"


def describe(operation: Operation) -> str:
    """``write 'a' -> ok v3``, ``read -> 'a' v3``, ``cas v3 'b' -> conflict (at v4)``…"""
    f = operation.f
    if f == "read":
        call = "read"
    elif f == "write":
        call = f"write {show_bytes(operation.value)}"
    elif f == "cas":
        call = f"cas v{operation.expected_version} {show_bytes(operation.value)}"
    elif f == "cas_delete":
        call = f"cas_delete v{operation.expected_version}"
    else:
        call = "delete"
    if operation.status == "info":
        outcome = "? (info)"
    elif operation.status == "fail":
        if operation.error == "version_conflict":
            outcome = f"conflict (at{_version(operation.version)})"
        else:
            outcome = f"fail ({operation.error})"
    elif f == "read":
        outcome = show_bytes(operation.value) + (
            "" if operation.value is None else _version(operation.version)
        )
    elif f in ("write", "cas"):
        outcome = "ok" + _version(operation.version)
    else:
        outcome = "ok"
    return f"{call} -> {outcome}"


def label(operation: Operation) -> str:
    return f"#{operation.index} p{operation.process} {describe(operation)}"


def timeline(operations: Sequence[Operation], *, width: int = 48, limit: int = 60) -> str:
    """One line per operation with a bar over its interval (``>`` runs off the end: info)."""
    ops = sorted(operations, key=lambda operation: (operation.call, operation.index))
    shown, hidden = ops[:limit], len(ops) - limit
    times = sorted({t for operation in shown for t in (operation.call, operation.ret) if t is not None})
    last = max(len(times) - 1, 1)
    column = {t: rank * (width - 1) // last for rank, t in enumerate(times)}
    labels = [label(operation) for operation in shown]
    pad = max((len(text) for text in labels), default=0)
    lines = []
    for text, operation in zip(labels, shown, strict=True):
        start = column[operation.call]
        if operation.ret is None:
            bar = " " * start + "[" + "-" * (width - start - 1) + ">"
        elif column[operation.ret] == start:
            bar = " " * start + "|"
        else:
            end = column[operation.ret]
            bar = " " * start + "[" + "-" * (end - start - 1) + "]"
        lines.append(f"  {text:<{pad}}  {bar}".rstrip())
    if hidden > 0:
        lines.append(f"  … {hidden} more operations")
    return "\n".join(lines)
