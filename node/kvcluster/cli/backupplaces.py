"""Where ``kvcluster backup`` puts a file and where ``kvcluster restore`` takes one from.

A place is a local path or ``s3://bucket/key`` (any S3-compatible store:
boto3 reads ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... from the
environment, which is how the operator's CronJob passes them). A place that
ends in ``/`` (or a directory that exists) is a *collection*: each backup gets
a new name, ``kvcluster-<UTC time>.kvbackup``, so names sort by age, and
``--keep N`` prunes the oldest; for a restore, a collection means its newest
backup. A backup is always written to a local file first and checked there
before it is published (renamed into place, or uploaded), so a place never
holds a partial backup under a final name.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvcluster.client.backupfile import SUFFIX

NAME_PREFIX = "kvcluster-"
SCRATCH_PREFIX = ".kvbackup-"
SCRATCH_SUFFIX = ".partial"
STALE_SCRATCH_S = 86400.0


def backup_name(when: float) -> str:
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{NAME_PREFIX}{stamp}{SUFFIX}"


def _is_backup_name(name: str) -> bool:
    return name.startswith(NAME_PREFIX) and name.endswith(SUFFIX)


@dataclass(frozen=True, slots=True)
class Place:
    url: str
    bucket: str = ""
    key: str = ""
    """s3: the object key or the prefix (ending in ``/`` or empty)."""
    path: Path | None = None
    endpoint: str | None = None
    """s3: the endpoint URL (``--s3-endpoint`` / ``AWS_ENDPOINT_URL``); None: AWS itself."""

    @property
    def is_s3(self) -> bool:
        return self.path is None

    @property
    def is_collection(self) -> bool:
        if self.path is not None:
            return self.url.endswith("/") or self.path.is_dir()
        return self.key == "" or self.key.endswith("/")

    @classmethod
    def parse(cls, url: str, s3_endpoint: str | None = None) -> Place:
        if url.startswith("s3://"):
            bucket, _, key = url[len("s3://") :].partition("/")
            if not bucket:
                raise ValueError(f"{url!r}: an S3 place is s3://BUCKET/KEY or s3://BUCKET/PREFIX/")
            return cls(url, bucket=bucket, key=key, endpoint=s3_endpoint or None)
        return cls(url, path=Path(url))

    # ---- S3 ---------------------------------------------------------------------------------------

    def _s3(self) -> Any:
        import boto3  # only backups to S3 pay for importing it

        return boto3.client("s3", endpoint_url=self.endpoint)

    def _s3_names(self, client: Any) -> list[str]:
        names: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key):
            names.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(
            n for n in names if _is_backup_name(n[len(self.key) :]) and "/" not in n[len(self.key) :]
        )

    # ---- publishing a checked local file ------------------------------------------------------------

    def publish(self, local: Path, name: str) -> str:
        """Put the checked file ``local`` at this place (as ``name`` in a collection); returns where."""
        if self.path is not None:
            target = self.path / name if self.is_collection else self.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if local.parent == target.parent:
                os.replace(local, target)  # atomic: the name never shows a partial file
            else:
                partial = target.with_name(target.name + ".partial")
                shutil.copyfile(local, partial)
                os.replace(partial, target)
            return str(target)
        key = self.key + name if self.is_collection else self.key
        self._s3().upload_file(str(local), self.bucket, key)
        return f"s3://{self.bucket}/{key}"

    def prune(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest backups of a collection; returns what went."""
        if keep <= 0 or not self.is_collection:
            return []
        if self.path is not None:
            names = sorted(p.name for p in self.path.iterdir() if _is_backup_name(p.name))
            gone = names[: max(0, len(names) - keep)]
            for n in gone:
                (self.path / n).unlink(missing_ok=True)
            return [str(self.path / n) for n in gone]
        client = self._s3()
        keys = self._s3_names(client)
        gone = keys[: max(0, len(keys) - keep)]
        for k in gone:
            client.delete_object(Bucket=self.bucket, Key=k)
        return [f"s3://{self.bucket}/{k}" for k in gone]

    def scratch_dir(self) -> Path:
        """Where to write the file before publishing: beside a local target (a rename, no copy).

        Scratch files a killed run left behind (a pod evicted mid-backup) are
        removed once they are a day old: no run takes that long, and a
        younger one may belong to a run still going.
        """
        folder = Path(tempfile.gettempdir())
        if self.path is not None:
            folder = self.path if self.is_collection else self.path.parent
            folder.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_SCRATCH_S
        for stale in folder.glob(SCRATCH_PREFIX + "*" + SCRATCH_SUFFIX):
            with contextlib.suppress(OSError):
                if stale.stat().st_mtime < cutoff:
                    stale.unlink()
        return folder

    # ---- fetching for a restore ---------------------------------------------------------------------

    def fetch(self, scratch: Path) -> tuple[Path, str]:
        """A local file holding the backup to restore (the newest, for a collection); and its name."""
        if self.path is not None:
            if not self.is_collection:
                if not self.path.is_file():
                    raise FileNotFoundError(f"{self.path}: no such backup file")
                return self.path, str(self.path)
            names = sorted(p.name for p in self.path.iterdir() if _is_backup_name(p.name))
            if not names:
                raise FileNotFoundError(f"{self.path}: holds no {NAME_PREFIX}*{SUFFIX} backups")
            return self.path / names[-1], str(self.path / names[-1])
        client = self._s3()
        key = self.key
        if self.is_collection:
            keys = self._s3_names(client)
            if not keys:
                raise FileNotFoundError(f"{self.url}: holds no {NAME_PREFIX}*{SUFFIX} backups")
            key = keys[-1]
        local = scratch / "restore.kvbackup"
        try:
            client.download_file(self.bucket, key, str(local))
        except Exception as exc:  # botocore's errors: the message says what S3 said
            raise FileNotFoundError(f"s3://{self.bucket}/{key}: {exc}") from exc
        return local, f"s3://{self.bucket}/{key}"
