"""The backup file format: what a reader accepts, and every way it refuses a bad file."""

from __future__ import annotations

import io
import tarfile

import pytest

from kvcluster.client.backupfile import (
    CHUNK_ROWS,
    BackupCorrupt,
    BackupFailed,
    BackupWriter,
    Batcher,
    read_backup,
    verify,
)
from kvcluster.keyspace import HASH_SPACE, KeyRange, key_hash

HALF = HASH_SPACE // 2


def rows_in(rng: KeyRange, count: int) -> list[tuple[bytes, bytes, int]]:
    out = []
    i = 0
    while len(out) < count:
        k = f"key{i}".encode()
        if rng.contains(key_hash(k)):
            out.append((k, b"value-%d" % i, i + 1))
        i += 1
    return out


def build(
    sections: list[tuple[int, int, int, list[tuple[bytes, bytes, int]]]], *, end: str = "manifest"
) -> bytes:
    w = BackupWriter("b1", 1_700_000_000.0)
    out = w.header({"partitions": []})
    for pid, start, stop, rows in sections:
        batcher: Batcher[tuple[bytes, bytes, int]] = Batcher()
        chunks = [full for r in rows if (full := batcher.add(r)) is not None]
        for chunk in [*chunks, batcher.take()]:
            if chunk:
                out += w.chunk(pid, chunk)
        out += w.section({"partition": pid, "from": start, "to": stop, "rows": len(rows)})
    if end == "manifest":
        out += w.manifest()
    elif end == "error":
        out += w.error("unavailable", "partition 2: no leader")
    return out


LEFT = rows_in(KeyRange(0, HALF), 1500)
RIGHT = rows_in(KeyRange(HALF, HASH_SPACE), 10)
GOOD = [(1, 0, HALF, LEFT), (2, HALF, HASH_SPACE, RIGHT)]


def test_round_trip_in_chunks() -> None:
    data = build(GOOD)
    events = list(read_backup(io.BytesIO(data)))
    assert [len(e.rows) for e in events] == [CHUNK_ROWS, 500, 10]
    assert [r for e in events for r in e.rows] == LEFT + RIGHT
    summary = verify(io.BytesIO(data))
    assert summary.keys == 1510 and len(summary.partitions) == 2 and summary.backup_id == "b1"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # standard tar
        assert tar.getnames()[-1] == "kvbackup/manifest.json"


def test_every_truncation_is_refused() -> None:
    data = build(GOOD)
    for cut in range(0, len(data) - 1024, 997):  # 1024: the end-of-archive blocks alone
        with pytest.raises(BackupCorrupt):
            verify(io.BytesIO(data[:cut]))


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ([(1, 0, HALF, LEFT)], "cover the whole key space"),
        ([(1, 0, HALF, LEFT), (2, HALF + 1, HASH_SPACE, RIGHT)], "in order"),
        ([(2, HALF, HASH_SPACE, RIGHT), (1, 0, HALF, LEFT)], "in order"),
        ([(1, 0, HALF, RIGHT), (2, HALF, HASH_SPACE, LEFT)], "outside the section"),
    ],
)
def test_sections_must_tile_the_key_space(sections: list, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(BackupCorrupt, match=words):
        verify(io.BytesIO(build(sections)))


def test_a_failed_run_and_a_damaged_byte_are_refused() -> None:
    with pytest.raises(BackupFailed, match="no leader"):
        verify(io.BytesIO(build(GOOD, end="error")))
    data = bytearray(build(GOOD))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        member = tar.getmember("kvbackup/p2/000000.msgpack")
    data[member.offset_data + 5] ^= 0x01
    with pytest.raises(BackupCorrupt, match="corrupt"):
        verify(io.BytesIO(bytes(data)))
    with pytest.raises(BackupCorrupt):
        verify(io.BytesIO(b"plain text, not a tar"))
