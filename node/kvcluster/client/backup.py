"""Taking a backup to a file and seeding a cluster from one, on top of :class:`AsyncClient`.

The CLI (``kvcluster backup|restore``) adds destinations (a directory with
retention, S3) and a progress bar; these two functions are the part a
program embedding the client would reuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import aiohttp

from .aio import AsyncClient
from .backupfile import BackupIncomplete, BackupSummary, Batcher, read_backup

LOAD_PARALLEL = 4
"""Batches in flight during a restore: enough to keep every partition's leader busy on a small cluster."""


async def write_backup(
    client: AsyncClient, out: BinaryIO, on_bytes: Callable[[int], None] | None = None
) -> int:
    """Stream a backup into ``out``; returns its size. The caller verifies the file afterwards.

    A stream that breaks off after it started raises :class:`BackupIncomplete`: the
    run is worth starting again (on another node), unlike a refusal before it began.
    """
    size = 0
    async with client.backup_stream() as stream:
        try:
            async for data in stream:
                out.write(data)
                size += len(data)
                if on_bytes is not None:
                    on_bytes(len(data))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackupIncomplete(f"the backup stream broke off after {size} bytes ({exc!r})") from exc
    out.flush()
    return size


async def load_backup(
    client: AsyncClient,
    path: Path,
    checked: BackupSummary,
    on_rows: Callable[[int], None] | None = None,
    *,
    parallel: int = LOAD_PARALLEL,
) -> BackupSummary:
    """Load every row of a backup that :func:`verify` has passed (``checked`` is what it said).

    Verifying is the caller's first step, before it asks the cluster anything:
    a truncated or damaged file is refused before a single row is sent. The
    load reads the file once more (and would still stop at a fault). Rows go
    in batches of about a chunk; ``parallel`` batches are in flight.
    """
    pending: set[asyncio.Task[int]] = set()

    async def send(rows: list[tuple[bytes, bytes]]) -> int:
        loaded = await client.restore_rows(rows)
        if on_rows is not None:
            on_rows(len(rows))
        return loaded

    async def flush(rows: list[tuple[bytes, bytes]]) -> None:
        while len(pending) >= parallel:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pending.discard(task)
                task.result()  # a failed batch fails the restore, now
        pending.add(asyncio.ensure_future(send(rows)))

    try:
        batcher: Batcher[tuple[bytes, bytes]] = Batcher()
        with path.open("rb") as f:
            for event in read_backup(f):
                for key, value, _ in event.rows:
                    if (full := batcher.add((key, value))) is not None:
                        await flush(full)
        if rest := batcher.take():
            await flush(rest)
        await asyncio.gather(*pending)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return checked
