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
from .backupfile import CHUNK_BYTES, CHUNK_ROWS, BackupIncomplete, BackupSummary, read_backup, verify

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
    on_rows: Callable[[int], None] | None = None,
    *,
    parallel: int = LOAD_PARALLEL,
) -> BackupSummary:
    """Load every row of a backup into the cluster, after checking the whole file first.

    The file is read twice: once to verify it end to end (a truncated or
    damaged file is refused before a single row is sent), once to load it.
    Rows go in batches of about a chunk; ``parallel`` batches are in flight.
    """
    with path.open("rb") as f:
        summary = verify(f)
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
        batch: list[tuple[bytes, bytes]] = []
        size = 0
        with path.open("rb") as f:
            for event in read_backup(f):
                for key, value, _ in event.rows:
                    batch.append((key, value))
                    size += len(key) + len(value)
                    if len(batch) >= CHUNK_ROWS or size >= CHUNK_BYTES:
                        await flush(batch)
                        batch, size = [], 0
        if batch:
            await flush(batch)
        for task in asyncio.as_completed(list(pending)):
            await task
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return summary
