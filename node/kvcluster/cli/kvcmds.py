"""``kvcluster put|get|delete|scan|status``: talk to a running cluster through any node.

Every command takes ``--endpoint/-e`` (repeatable, or comma-separated, or
``KVCLUSTER_ENDPOINT``), tries the endpoints in turn, and exits with a code a
script can branch on (see ``EXIT_CODES``). Errors are printed to stderr in
the API's JSON error shape, so scripts can parse them too.

Keys and values given as arguments are taken as the raw bytes the shell
passed (``os.fsencode``), so ``kvcluster put $'\\xff' x`` stores the key
``b"\\xff"``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvcluster.client import (
    BadRequest,
    Consistency,
    Item,
    KVError,
    NotFound,
    OutcomeUnknown,
    SyncClient,
    TooLarge,
    Unavailable,
    VersionConflict,
    encode_item,
)

ENDPOINT_ENV = "KVCLUSTER_ENDPOINT"
DEFAULT_ENDPOINT = "http://127.0.0.1:7001"

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_UNAVAILABLE = 4
EXIT_ERROR = 5

EXIT_CODES = """\b
Exit codes:
  0  success
  1  key not found
  2  usage error, or the request was refused as malformed/too large
  3  version conflict (--if-version did not match)
  4  unavailable or timed out (a write's outcome may be unknown)
  5  any other error (unauthorized, server error)
"""

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(exc: KVError) -> int:
    """The documented exit code of a client error."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, BadRequest | TooLarge):
        return EXIT_USAGE
    if isinstance(exc, VersionConflict):
        return EXIT_CONFLICT
    if isinstance(exc, Unavailable | OutcomeUnknown):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def split_endpoints(values: tuple[str, ...] | list[str]) -> list[str]:
    """``-e a -e b,c`` and ``KVCLUSTER_ENDPOINT="a,b c"`` all give [a, b, c]."""
    out = [part.strip() for value in values for part in value.replace(" ", ",").split(",")]
    return [e for e in out if e] or [DEFAULT_ENDPOINT]


def read_token(token: str | None, token_file: str | None) -> str | None:
    if token_file:
        return Path(token_file).read_text().strip() or None
    return token or None


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach the cluster, as the shared options gave it.

    Commands take this one object instead of each option, so an option added
    to ``client_options`` reaches every command without touching any of them.
    """

    endpoints: tuple[str, ...]
    token: str | None
    timeout: float
    cacert: str | None

    def client(self) -> SyncClient:
        return SyncClient(list(self.endpoints), self.token, timeout=self.timeout, cacert=self.cacert)


def client_options(func: F) -> F:
    """The connection options every command shares, handed to it as ``conn: Connection``."""
    options = [
        click.option(
            "--endpoint",
            "-e",
            "endpoints",
            multiple=True,
            envvar=ENDPOINT_ENV,
            default=[DEFAULT_ENDPOINT],
            show_default=True,
            show_envvar=True,
            help="Node URL; repeat or separate with commas to give fallbacks.",
        ),
        click.option("--token", envvar="KVCLUSTER_TOKEN", default=None, help="Bearer token (prefer a file)."),
        click.option(
            "--token-file",
            envvar="KVCLUSTER_TOKEN_FILE",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="File holding the bearer token.",
        ),
        click.option(
            "--cacert",
            envvar="KVCLUSTER_CACERT",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="CA bundle to verify HTTPS endpoints with (default: the system store).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=15.0,
            show_default=True,
            help="Overall deadline in seconds, retries included.",
        ),
    ]

    @functools.wraps(func)
    def command(
        *args: Any,
        endpoints: tuple[str, ...],
        token: str | None,
        token_file: str | None,
        cacert: str | None,
        timeout: float,
        **kwargs: Any,
    ) -> Any:
        conn = Connection(tuple(split_endpoints(endpoints)), read_token(token, token_file), timeout, cacert)
        return func(*args, conn=conn, **kwargs)

    wrapped: Callable[..., Any] = command
    for option in reversed(options):
        wrapped = option(wrapped)
    return cast(F, wrapped)


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn client errors into the JSON error on stderr and the documented exit code."""
    try:
        yield
    except KVError as exc:
        click.echo(exc.to_json(), err=True)
        raise click.exceptions.Exit(exit_code_for(exc)) from None
    except ValueError as exc:  # e.g. an invalid endpoint or parameter caught client-side
        click.echo(json.dumps({"error": {"code": "bad_request", "message": str(exc)}}), err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None


def arg_bytes(value: str) -> bytes:
    """Command-line text back to the bytes the shell passed (undoes surrogateescape)."""
    return os.fsencode(value)


def show_bytes(data: bytes, limit: int | None = None) -> str:
    """Bytes for a table cell: text when it is, escapes otherwise; long values are cut."""
    text = data.decode("utf-8", "backslashreplace")
    if not text.isprintable():
        text = repr(text)[1:-1]
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def wide_console() -> Console:
    """A console for tables: piped output is not cut to 80 columns (rich's default off a terminal)."""
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=max(console.width, 160))
    return console


# ---- put / get / delete ------------------------------------------------------------------------------


@click.command("put", epilog=EXIT_CODES)
@click.argument("key")
@click.argument("value", required=False)
@click.option(
    "--file",
    "-f",
    "value_file",
    type=click.File("rb"),
    default=None,
    help="Read the value from this file ('-' for stdin).",
)
@click.option(
    "--if-version",
    type=click.IntRange(min=0),
    default=None,
    help="Compare-and-set: write only if the current version is N (0: only if absent).",
)
@client_options
def put_command(
    key: str,
    value: str | None,
    value_file: BinaryIO | None,
    if_version: int | None,
    conn: Connection,
) -> None:
    """Store VALUE under KEY and print the new version.

    The value comes from the VALUE argument, from --file, or from stdin when
    VALUE is '-'.
    """
    if value is not None and value_file is not None:
        raise click.UsageError("give either VALUE or --file, not both")
    if value == "-":
        with click.open_file("-", "rb") as stdin:
            data = stdin.read()
    elif value is not None:
        data = arg_bytes(value)
    elif value_file is not None:
        data = value_file.read()
    else:
        raise click.UsageError("give VALUE, --file PATH, or '-' to read the value from stdin")
    with reporting_errors(), conn.client() as kv:
        version = kv.put(arg_bytes(key), data, if_version=if_version)
    click.echo(version)


@click.command("get", epilog=EXIT_CODES)
@click.argument("key")
@click.option(
    "--consistency",
    type=click.Choice(["linearizable", "stale"]),
    default="linearizable",
    show_default=True,
    help="'stale' reads any replica: faster, may miss the latest writes.",
)
@click.option("--show-version", is_flag=True, help="Print the key's version to stderr.")
@client_options
def get_command(
    key: str,
    consistency: str,
    show_version: bool,
    conn: Connection,
) -> None:
    """Write the raw value of KEY to stdout (exit code 1 if it does not exist)."""
    with reporting_errors(), conn.client() as kv:
        item = kv.get(arg_bytes(key), "stale" if consistency == "stale" else "linearizable")
        if item is None:
            raise NotFound("key not found")
    if show_version:
        click.echo(f"version {item.version}", err=True)
    click.echo(item.value, nl=False)  # bytes go to the binary stdout unchanged


@click.command("delete", epilog=EXIT_CODES)
@click.argument("key")
@click.option(
    "--if-version",
    type=click.IntRange(min=0),
    default=None,
    help="Delete only if the current version is N.",
)
@client_options
def delete_command(
    key: str,
    if_version: int | None,
    conn: Connection,
) -> None:
    """Delete KEY and print the version of the deletion (exit code 1 if it does not exist)."""
    with reporting_errors(), conn.client() as kv:
        version = kv.delete(arg_bytes(key), if_version=if_version)
    click.echo(version)


# ---- scan --------------------------------------------------------------------------------------------


@click.command("scan", epilog=EXIT_CODES)
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--start", default="", help="Start at this key (inclusive).")
@click.option("--cursor", default=None, help="Continue a listing: the cursor an earlier page printed.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Page size.")
@click.option("--all", "all_pages", is_flag=True, help="Follow the cursor through every page.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option(
    "--consistency",
    type=click.Choice(["linearizable", "stale"]),
    default="linearizable",
    show_default=True,
)
@client_options
def scan_command(
    prefix: str,
    start: str,
    cursor: str | None,
    limit: int,
    all_pages: bool,
    as_json: bool,
    consistency: str,
    conn: Connection,
) -> None:
    """List keys in byte order with their versions and values.

    Without --all one page is printed, and the cursor of the next page (if
    any) goes to stderr. JSON lines use the API's item shape: key and value
    are UTF-8 text, or both base64 when "encoding" is "base64".
    """
    mode: Consistency = "stale" if consistency == "stale" else "linearizable"
    rows: list[Item] = []
    next_cursor: str | None = None
    with reporting_errors(), conn.client() as kv:
        page = kv.scan(arg_bytes(prefix), arg_bytes(start), limit, mode, cursor=cursor)
        while True:
            if as_json:
                for item in page.items:
                    click.echo(json.dumps(encode_item(item)))
            else:
                rows.extend(page.items)
            next_cursor = page.next
            if not all_pages or next_cursor is None:
                break
            page = kv.scan(arg_bytes(prefix), limit=limit, consistency=mode, cursor=next_cursor)
    if not as_json:
        table = Table(title=None, expand=False)
        table.add_column("key", overflow="fold")
        table.add_column("version", justify="right")
        table.add_column("value", overflow="fold")
        for item in rows:
            table.add_row(Text(show_bytes(item.key)), str(item.version), Text(show_bytes(item.value, 80)))
        wide_console().print(table)
    if next_cursor is not None:
        click.echo(f"more keys follow: --cursor {next_cursor} (or --all)", err=True)


# ---- status ------------------------------------------------------------------------------------------


def status_tables(view: dict[str, Any]) -> tuple[Table, Table]:
    """Nodes and partitions of ``GET /v1/cluster`` as two tables."""
    nodes = Table(title="nodes", expand=False)
    for col in ("id", "url", "reachable", "replicas", "error"):
        nodes.add_column(col)
    for n in view.get("nodes", []):
        nodes.add_row(
            str(n.get("id")),
            Text(str(n.get("url", ""))),
            Text("yes", style="green") if n.get("reachable") else Text("no", style="red"),
            "-" if n.get("replicas") is None else str(n["replicas"]),
            Text(str(n.get("error") or "")),
        )
    parts = Table(title="partitions", expand=False)
    for col in ("id", "range", "epoch", "voters", "leader", "term", "commit", "applied"):
        parts.add_column(col, no_wrap=col == "range")
    for p in view.get("partitions", []):
        rng = p.get("range", {})
        voters = ",".join(map(str, p.get("voters", [])))
        if p.get("learners"):
            voters += " +" + ",".join(map(str, p["learners"]))
        leader = p.get("leader")
        parts.add_row(
            str(p.get("id")),
            f"{rng.get('start')}..{rng.get('end')}",
            str(p.get("epoch", "-")),
            voters,
            Text(str(leader)) if leader is not None else Text("none", style="red"),
            str(p.get("term", "-")),
            "-" if p.get("commit") is None else str(p["commit"]),
            " ".join(f"{n}:{a}" for n, a in (p.get("applied") or {}).items()),
        )
    return nodes, parts


@click.command("status", epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print GET /v1/cluster as JSON.")
@client_options
def status_command(
    as_json: bool,
    conn: Connection,
) -> None:
    """Nodes and partitions: range, voters, leader, term, commit index, applied index per replica."""
    with reporting_errors(), conn.client() as kv:
        view = kv.cluster()
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    console = wide_console()
    for table in status_tables(view):
        console.print(table)
    if any(p.get("leader") is None for p in view.get("partitions", [])):
        sys.stderr.write("warning: some partitions have no leader\n")


KV_COMMANDS = [put_command, get_command, delete_command, scan_command, status_command]
"""What ``kvcluster.cli.main`` registers."""
