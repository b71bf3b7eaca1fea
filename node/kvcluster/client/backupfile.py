"""The backup file (issue 12): one tar stream holding a consistent snapshot of every partition.

Why a tar: it can be written front to back while partitions are still being
read (a member is written once it is complete, nothing is seeked back to),
any machine can list or unpack it (``tar tvf backup.kvbackup``), and the
standard library reads it as a stream. The members, in this order:

``kvbackup/header.json``
    format, backup id, creation time, the partition map the backup started from.
``kvbackup/p<id>/<seq>.msgpack``
    a chunk of a partition's rows, ``[[key, value, version], ...]``, at most
    :data:`CHUNK_ROWS` rows or about :data:`CHUNK_BYTES`: the writer never
    holds more than one chunk.
``kvbackup/p<id>.json``
    the partition's section end: the descriptor (range, epoch) and the
    ReadIndex-confirmed applied index and term the rows were read at, the
    hash range the section covers, and its row count.
``kvbackup/manifest.json``
    last: the size and SHA-256 of every member before it, and the totals.

A file without a manifest is truncated; a member whose digest differs is
corrupt; the sections must tile the hash space exactly. A backup that fails
half-way ends with ``kvbackup/error.json`` instead of a manifest, so a reader
can never mistake a partial file for a whole one. :func:`read_backup` checks
all of it while it reads, so ``kvcluster restore`` reads the file once to
verify it and loads nothing from a file that fails.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar

import msgpack

from kvcluster.keyspace import HASH_SPACE, key_hash

FORMAT = 1
SUFFIX = ".kvbackup"
PREFIX = "kvbackup/"
CHUNK_ROWS = 1000
CHUNK_BYTES = 1 << 20
_MEMBER_LIMIT = 64 << 20
"""No member of a valid backup is anywhere near this; a larger size field is corruption."""

Row = tuple[bytes, bytes, int]
R = TypeVar("R", Row, tuple[bytes, bytes])


class BackupError(Exception):
    """The file cannot be restored from; ``message`` says why in words a user can act on."""


class BackupCorrupt(BackupError):
    """Truncated, damaged or not a kvcluster backup at all."""


class BackupFailed(BackupError):
    """The backup run itself failed and said so at the end of the file."""


class BackupIncomplete(BackupError):
    """The stream broke off before the end (the serving node died, the connection dropped)."""


def _member(name: str, data: bytes, mtime: float) -> bytes:
    info = tarfile.TarInfo(PREFIX + name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + b"\0" * (-len(data) % 512)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()


@dataclass(slots=True)
class BackupWriter:
    """Turns a backup's parts into the bytes of the file, in order, keeping the manifest."""

    backup_id: str
    created: float
    files: list[dict[str, Any]] = field(default_factory=list)
    keys: int = 0
    ephemeral: int = 0
    """Lease-bound rows left out (they would outlive their lease in the restored cluster)."""
    sections: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    _chunks: dict[int, int] = field(default_factory=dict)

    def _add(self, name: str, data: bytes) -> bytes:
        self.files.append(
            {"name": PREFIX + name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
        out = _member(name, data, self.created)
        self.size += len(out)
        return out

    def header(self, pmap: dict[str, Any], **extra: Any) -> bytes:
        body = {"format": FORMAT, "id": self.backup_id, "created": self.created, "map": pmap, **extra}
        return self._add("header.json", _json(body))

    def chunk(self, partition: int, rows: list[Row]) -> bytes:
        seq = self._chunks.get(partition, 0)
        self._chunks[partition] = seq + 1
        self.keys += len(rows)
        data: bytes = msgpack.packb([list(r) for r in rows], use_bin_type=True)
        return self._add(f"p{partition}/{seq:06d}.msgpack", data)

    def section(self, section: dict[str, Any]) -> bytes:
        self.sections.append(section)
        return self._add(f"p{section['partition']}.json", _json(section))

    def manifest(self) -> bytes:
        body = {
            "format": FORMAT,
            "id": self.backup_id,
            "keys": self.keys,
            "ephemeral_keys_left_out": self.ephemeral,
            "partitions": len(self.sections),
            "files": self.files,
        }
        return _member("manifest.json", _json(body), self.created) + b"\0" * 1024

    def error(self, code: str, message: str) -> bytes:
        body = {"id": self.backup_id, "error": code, "message": message}
        return _member("error.json", _json(body), self.created) + b"\0" * 1024


class Batcher(Generic[R]):
    """Gathers rows into batches of at most CHUNK_ROWS rows or about CHUNK_BYTES bytes.

    One rule for every batch of rows in a backup's life: the chunks the
    leader streams and the file holds, and the batches a restore loads.
    """

    def __init__(self) -> None:
        self._rows: list[R] = []
        self._size = 0

    def add(self, row: R) -> list[R] | None:
        """Take a row (key first, value second); a full batch comes back when this one completes it."""
        self._rows.append(row)
        self._size += len(row[0]) + len(row[1])
        if len(self._rows) >= CHUNK_ROWS or self._size >= CHUNK_BYTES:
            return self.take()
        return None

    def take(self) -> list[R]:
        """The rows gathered so far (possibly none), and start a new batch."""
        rows, self._rows, self._size = self._rows, [], 0
        return rows


@dataclass(frozen=True, slots=True)
class RowsEvent:
    partition: int
    rows: list[Row]


@dataclass(slots=True)
class BackupSummary:
    backup_id: str = ""
    created: float = 0.0
    header: dict[str, Any] = field(default_factory=dict)
    keys: int = 0
    partitions: list[dict[str, Any]] = field(default_factory=list)


def read_backup(fileobj: IO[bytes], summary: BackupSummary | None = None) -> Iterator[RowsEvent]:
    """Yield the rows of a backup while checking it; raises BackupCorrupt/BackupFailed at the fault.

    Rows are yielded as they are read, before the manifest (which comes last)
    has confirmed their digests, so a caller that must not act on a bad file
    reads it through once first (``verify``).
    """
    summary = summary if summary is not None else BackupSummary()
    seen: list[dict[str, Any]] = []
    pos = 0  # the hash position the sections have covered up to
    section_rows = 0
    lowest, highest = HASH_SPACE, -1  # the key hashes of the current section's rows
    current: int | None = None
    header: dict[str, Any] | None = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for info in tar:
                name = info.name
                if not name.startswith(PREFIX) or not info.isfile() or info.size > _MEMBER_LIMIT:
                    raise BackupCorrupt(f"unexpected member {name!r}: not a kvcluster backup")
                handle = tar.extractfile(info)
                data = handle.read() if handle is not None else b""
                if len(data) != info.size:
                    raise BackupCorrupt(f"the file is truncated inside {name}")
                short = name[len(PREFIX) :]
                if short == "error.json":
                    failure = _load_json(data, name)
                    raise BackupFailed(
                        f"the backup run failed and this file is incomplete: {failure.get('message')}"
                    )
                if short == "manifest.json":
                    _check_manifest(_load_json(data, name), seen, summary, pos)
                    return
                seen.append({"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
                if header is None:
                    if short != "header.json":
                        raise BackupCorrupt("not a kvcluster backup: it does not start with a header")
                    header = _load_json(data, name)
                    if header.get("format") != FORMAT:
                        raise BackupCorrupt(f"unsupported backup format {header.get('format')!r}")
                    summary.backup_id = str(header.get("id", ""))
                    summary.created = float(header.get("created", 0.0))
                    summary.header = header
                    continue
                if short.endswith(".msgpack"):
                    partition = _partition_of(short.split("/", 1)[0], name)
                    if current not in (None, partition):
                        raise BackupCorrupt(f"{name}: partition {current} has no section end")
                    current = partition
                    rows = _load_rows(data, name)
                    section_rows += len(rows)
                    for k, _, _ in rows:
                        h = key_hash(k)
                        lowest, highest = min(lowest, h), max(highest, h)
                    summary.keys += len(rows)
                    yield RowsEvent(partition, rows)
                elif short.endswith(".json"):
                    section = _load_json(data, name)
                    partition = _partition_of(short[: -len(".json")], name)
                    if current not in (None, partition) or section.get("partition") != partition:
                        raise BackupCorrupt(f"{name}: section end of the wrong partition")
                    if section.get("from") != pos or not pos < int(section.get("to", 0)) <= HASH_SPACE:
                        raise BackupCorrupt(f"{name}: the sections do not cover the key space in order")
                    if section.get("rows") != section_rows:
                        raise BackupCorrupt(
                            f"{name}: {section_rows} rows found, the section says {section.get('rows')}"
                        )
                    if section_rows and not (pos <= lowest and highest < int(section["to"])):
                        raise BackupCorrupt(f"{name} is corrupt: rows outside the section's hash range")
                    pos = int(section["to"])
                    lowest, highest = HASH_SPACE, -1
                    summary.partitions.append(section)
                    current, section_rows = None, 0
                else:
                    raise BackupCorrupt(f"unexpected member {name!r}")
    except tarfile.TarError as exc:
        raise BackupCorrupt(f"the file is damaged or truncated ({exc})") from None
    except EOFError:
        raise BackupCorrupt("the file is truncated") from None
    raise BackupCorrupt("the file is truncated: it ends before the manifest")


def verify(fileobj: IO[bytes]) -> BackupSummary:
    """Read the whole file and check everything; nothing is kept in memory but one chunk."""
    summary = BackupSummary()
    for _ in read_backup(fileobj, summary):
        pass
    return summary


def _check_manifest(
    manifest: dict[str, Any], seen: list[dict[str, Any]], summary: BackupSummary, pos: int
) -> None:
    files = manifest.get("files")
    if not isinstance(files, list) or len(files) != len(seen):
        raise BackupCorrupt("the manifest does not list the members of the file")
    for want, got in zip(files, seen, strict=True):
        if want != got:
            raise BackupCorrupt(f"{got['name']} is corrupt: its size or SHA-256 differs from the manifest")
    if manifest.get("id") != summary.backup_id or manifest.get("keys") != summary.keys:
        raise BackupCorrupt("the manifest does not match the header or the row count")
    if pos != HASH_SPACE:
        raise BackupCorrupt("the sections do not cover the whole key space")


def _load_json(data: bytes, name: str) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except ValueError:
        raise BackupCorrupt(f"{name} is corrupt (not JSON)") from None
    if not isinstance(body, dict):
        raise BackupCorrupt(f"{name} is corrupt (not a JSON object)")
    return body


def _load_rows(data: bytes, name: str) -> list[Row]:
    try:
        raw = msgpack.unpackb(data, raw=False)
        rows = [(bytes(k), bytes(v), int(ver)) for k, v, ver in raw]
    except (ValueError, TypeError, msgpack.UnpackException):
        raise BackupCorrupt(f"{name} is corrupt (bad rows)") from None
    return rows


def _partition_of(text: str, name: str) -> int:
    if not text.startswith("p") or not text[1:].isdigit():
        raise BackupCorrupt(f"unexpected member {name!r}")
    return int(text[1:])


def rows_within(rows: list[Row], start: int, end: int) -> list[Row]:
    """The rows whose key hash lies in [start, end): trims a section that overlaps one before it."""
    return [r for r in rows if start <= key_hash(r[0]) < end]
