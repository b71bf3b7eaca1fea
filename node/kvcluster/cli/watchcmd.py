"""``kvcluster watch``: print a key's or a prefix's changes as they happen (issue 10)."""

from __future__ import annotations

import json

import click
from rich.text import Text

from kvcluster.client.watch import encode_event

from .kvcmds import (
    EXIT_CODES,
    Connection,
    arg_bytes,
    client_options,
    reporting_errors,
    show_bytes,
    wide_console,
)


@click.command("watch", epilog=EXIT_CODES)
@click.argument("prefix", default="")
@click.option("--key", "exact", is_flag=True, help="Watch exactly this key, not every key with the prefix.")
@click.option(
    "--from",
    "start",
    default=None,
    help="Start after this revision, or resume from a token an earlier watch printed (default: now).",
)
@click.option("--count", type=click.IntRange(1), default=None, help="Exit after this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (the API's event shape).")
@client_options
def watch_command(
    prefix: str, exact: bool, start: str | None, count: int | None, as_json: bool, conn: Connection
) -> None:
    """Print every change of keys starting with PREFIX (every key if empty) as it is applied.

    The watch survives node failures (it reconnects to the next endpoint and
    resumes where it stood, without losing or repeating a change). On exit
    the token to resume from goes to stderr. A "compacted" line means changes
    were dropped from the history before they could be sent: re-read the keys.
    """
    watched = arg_bytes(prefix)
    if exact and not watched:
        raise click.UsageError("--key needs a KEY")
    begin: int | str | None = int(start) if start is not None and start.isdigit() else start
    seen = 0
    console = wide_console()
    with reporting_errors(), conn.client() as kv:
        watch = kv.watch(key=watched, start=begin) if exact else kv.watch(prefix=watched, start=begin)
        try:
            for event in watch:
                if as_json:
                    click.echo(json.dumps(encode_event(event)))
                elif event.type == "compacted":
                    console.print(
                        f"compacted: changes up to revision {event.revision} are gone; re-read the keys"
                    )
                else:
                    line = Text(f"{event.type:<7} ")
                    line.append(show_bytes(event.key))
                    line.append(f"  @{event.revision}")
                    if event.value is not None:
                        line.append("  " + show_bytes(event.value, 120))
                    console.print(line)
                seen += 1
                if count is not None and seen >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            if watch.token:
                click.echo(f"resume with: --from {watch.token}", err=True)
            watch.close()
