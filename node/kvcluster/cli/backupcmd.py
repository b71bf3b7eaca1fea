"""``kvcluster backup`` and ``kvcluster restore`` (issue 12).

``backup`` streams ``POST /v1/admin/backup`` into a scratch file, checks the
file end to end (a node that failed half-way ends the stream with an error
member, a dropped connection leaves it without a manifest: both are caught
here and the run is retried from the start), then publishes it and prunes
old ones. ``restore`` checks the whole file before it loads a single row, and
refuses a cluster that already holds keys unless ``--force``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kvcluster.client import AsyncClient
from kvcluster.client.backup import load_backup, write_backup
from kvcluster.client.backupfile import BackupError, BackupSummary, verify

from .backupplaces import SCRATCH_PREFIX, SCRATCH_SUFFIX, Place, backup_name
from .kvcmds import EXIT_CONFLICT, EXIT_USAGE, Connection, client_options, reporting_errors

BACKUP_EXIT_CODES = """\b
Exit codes:
  0  success
  2  usage error, or the backup file is corrupt, truncated or from a failed run
  3  restore: the cluster already holds keys (give --force to load into it anyway)
  4  the cluster was unavailable
  5  any other error
"""


def _async_client(conn: Connection) -> AsyncClient:
    return AsyncClient(list(conn.endpoints), conn.token, timeout=conn.timeout, cacert=conn.cacert)


def _fail(code: str, message: str, exit_code: int) -> click.exceptions.Exit:
    click.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    return click.exceptions.Exit(exit_code)


@contextlib.contextmanager
def _reporting() -> Iterator[None]:
    try:
        with reporting_errors():
            yield
    except BackupError as exc:
        raise _fail("bad_backup", str(exc), EXIT_USAGE) from None
    except FileNotFoundError as exc:  # (a ValueError is reported by reporting_errors)
        raise _fail("bad_request", str(exc), EXIT_USAGE) from None


def _progress(quiet: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
    )


@click.command("backup", epilog=BACKUP_EXIT_CODES)
@click.argument("dest")
@click.option(
    "--keep", type=click.IntRange(min=0), default=0, help="Keep the N newest backups at DEST/ (0: all)."
)
@click.option(
    "--summary-file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the run's JSON summary here (the operator uses /dev/termination-log).",
)
@click.option(
    "--attempts", type=click.IntRange(min=1), default=3, show_default=True, help="Runs before giving up."
)
@click.option("--s3-endpoint", envvar="AWS_ENDPOINT_URL", default=None, help="S3-compatible endpoint URL.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@client_options
def backup_command(
    dest: str,
    keep: int,
    summary_file: str | None,
    attempts: int,
    s3_endpoint: str | None,
    quiet: bool,
    conn: Connection,
) -> None:
    """Take a consistent backup of every partition into DEST.

    DEST is a file, a directory ending in '/' (each backup gets a new
    time-stamped name there, and --keep prunes old ones), or an S3 place
    s3://BUCKET/KEY or s3://BUCKET/PREFIX/. The file is checked before it is
    published, so DEST never holds a partial backup. Prints a JSON summary.
    """
    with _reporting():
        place = Place.parse(dest, s3_endpoint)
        started = time.time()
        name = backup_name(started)
        scratch = place.scratch_dir()
        summary = None
        last_error: BackupError | None = None
        for _ in range(attempts):
            with tempfile.NamedTemporaryFile(
                dir=scratch, prefix=SCRATCH_PREFIX, suffix=SCRATCH_SUFFIX, delete=False
            ) as f:
                local = Path(f.name)
                try:
                    with _progress(quiet) as progress:
                        task = progress.add_task("backing up (bytes)", total=None)
                        size = asyncio.run(
                            _write(conn, f, lambda n: progress.advance(task, n))  # noqa: B023
                        )
                    f.close()
                    with local.open("rb") as check:
                        summary = verify(check)
                    break
                except BackupError as exc:
                    last_error = exc
                    click.echo(f"backup run failed, starting over: {exc}", err=True)
                    local.unlink(missing_ok=True)
                except BaseException:
                    local.unlink(missing_ok=True)
                    raise
        if summary is None:
            assert last_error is not None
            raise last_error
        where = place.publish(local, name)
        pruned = place.prune(keep)
        result: dict[str, Any] = {
            "file": where,
            "size": size,
            "keys": summary.keys,
            "partitions": len(summary.partitions),
            "id": summary.backup_id,
            "started": _iso(started),
            "finished": _iso(time.time()),
            "pruned": pruned,
        }
        text = json.dumps(result)
        click.echo(text)
        if summary_file:
            Path(summary_file).write_text(text + "\n")


async def _write(conn: Connection, f: Any, on_bytes: Any) -> int:
    async with _async_client(conn) as client:
        return await write_backup(client, f, on_bytes)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@click.command("restore", epilog=BACKUP_EXIT_CODES)
@click.argument("source")
@click.option(
    "--force", is_flag=True, help="Load even if the cluster already holds keys (same keys are overwritten)."
)
@click.option("--s3-endpoint", envvar="AWS_ENDPOINT_URL", default=None, help="S3-compatible endpoint URL.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@client_options
def restore_command(source: str, force: bool, s3_endpoint: str | None, quiet: bool, conn: Connection) -> None:
    """Seed a running (new) cluster with every key of the backup at SOURCE.

    SOURCE is a backup file, a directory ending in '/' (its newest backup),
    or s3://BUCKET/KEY (s3://BUCKET/PREFIX/: the newest there). The whole
    file is checked before anything is loaded: a corrupt or truncated file is
    refused and the cluster is left as it was. The cluster may have any
    number of nodes and partitions; reshape it afterwards as you like.
    Restored keys get new versions (the new cluster's revisions).
    """
    with _reporting(), tempfile.TemporaryDirectory(prefix="kvcluster-restore-") as scratch:
        place = Place.parse(source, s3_endpoint)
        local, name = place.fetch(Path(scratch))
        started = time.time()
        with local.open("rb") as f:
            checked = verify(f)  # before asking the cluster anything: a bad file needs no cluster
        result = asyncio.run(_restore(conn, local, checked, force, quiet))
        if result is None:
            raise _fail(
                "not_empty",
                "the cluster already holds keys; restore seeds a new cluster (give --force to load anyway)",
                EXIT_CONFLICT,
            )
        click.echo(
            json.dumps(
                {
                    "file": name,
                    "id": result.backup_id,
                    "keys": result.keys,
                    "partitions": len(result.partitions),
                    "seconds": round(time.time() - started, 3),
                }
            )
        )


async def _restore(
    conn: Connection, local: Path, checked: BackupSummary, force: bool, quiet: bool
) -> BackupSummary | None:
    async with _async_client(conn) as client:
        if not force:
            page = await client.scan(limit=1)
            if page.items:
                return None
        with _progress(quiet) as progress:
            task = progress.add_task("restoring (keys)", total=checked.keys)
            return await load_backup(client, local, checked, lambda n: progress.advance(task, n))


BACKUP_COMMANDS = [backup_command, restore_command]
"""What ``kvcluster.cli.main`` registers."""
