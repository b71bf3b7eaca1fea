"""A node's data directory on a disk we can fill up or break.

Each volume is a small ext4 file system on a loop device whose image lives
in ``/dev/shm`` (so fsync is cheap and nothing touches the real disk),
mounted on the node's data directory before the node starts. Two faults:

* **full**: a filler file takes every free block (ext4 made with ``-m 0``,
  so root, which the node runs as, has no reserved blocks to fall back on).
  SQLite's next allocation fails with ``SQLITE_FULL``; the node must stop
  (exit 70), having acknowledged nothing it did not persist. Deleting the
  filler gives the space back.
* **unwritable**: the ext4 ``shutdown`` ioctl (``EXT4_IOC_SHUTDOWN`` with
  ``NOLOGFLUSH``, what xfstests' ``godown`` does): from then on every
  read, write and fsync fails with ``EIO`` and the journal is not flushed -- a
  disk that died, or a file system the kernel forced read-only after an
  error. Unmounting and mounting again (journal replay) brings it back with
  exactly what had been made durable.

Why not ``mount -o remount,ro``? The kernel refuses it (``EBUSY``) while any
file on the file system is open for writing, and SQLite keeps its database
and WAL open for writing for the node's whole life, so a plain read-only
remount can never be applied under a running node. :meth:`Volume.remount_ro`
still tries, and reports the refusal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SHM = Path("/dev/shm")
PREFIX = "kvt"
EXT4_IOC_SHUTDOWN = 0x8004587D
"""``_IOR('X', 125, __u32)``: shut the file system down."""
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
FILLER = "zz-torture-filler"
_IMAGE = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-n\d+\.img$")


class DiskError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why loop-mounted volumes cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return "disk faults need root (loop mounts)"
    missing = [t for t in ("mount", "umount", "mkfs.ext4", "losetup") if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not SHM.is_dir():
        return "/dev/shm is missing"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control (loop devices unavailable)"
    return None


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise DiskError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _is_mount_point(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mounts", encoding="utf-8") as fp:
        return any(line.split()[1] == target for line in fp if len(line.split()) > 1)


@dataclass
class Volume:
    """One node's data directory as a loop-mounted ext4 image."""

    image: Path
    mount_point: Path
    size_mb: int = 128
    created: bool = False

    @classmethod
    def for_node(cls, token: str, node_id: int, mount_point: Path, size_mb: int = 128) -> Volume:
        return cls(SHM / f"{PREFIX}-{os.getpid()}-{token}-n{node_id}.img", mount_point, size_mb)

    @property
    def filler(self) -> Path:
        return self.mount_point / FILLER

    def create(self) -> None:
        """Make the file system and mount it (the mount point must be empty or absent)."""
        self.mount_point.mkdir(parents=True, exist_ok=True)
        with self.image.open("wb") as fp:
            fp.truncate(self.size_mb << 20)
        self.created = True
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0",
              str(self.image)])  # fmt: skip
        self.mount()

    def mount(self) -> None:
        if not self.mounted():
            _run(["mount", "-o", "loop", str(self.image), str(self.mount_point)])

    def mounted(self) -> bool:
        return _is_mount_point(self.mount_point)

    def unmount(self, timeout: float = 10.0) -> None:
        """Unmount (the loop device goes with it: ``mount -o loop`` sets autoclear)."""
        deadline = time.monotonic() + timeout
        while self.mounted():
            proc = _run(["umount", str(self.mount_point)], check=False)
            if proc.returncode == 0:
                continue
            if time.monotonic() > deadline:
                _run(["umount", "-l", str(self.mount_point)], check=False)
                break
            time.sleep(0.1)

    def destroy(self) -> None:
        self.unmount()
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()

    # ---- faults -------------------------------------------------------------------------------------

    def fill(self) -> int:
        """Take every free block with a filler file; returns the bytes it took."""
        written = 0
        chunk = b"\0" * (1 << 20)
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 4096, 512):
                while True:
                    try:
                        n = os.write(fd, chunk[:size])
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    written += n
                    if n < size:
                        break
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        """Give the filler's space back."""
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def shutdown(self) -> None:
        """Every later I/O on the file system fails with EIO; unsynced journal content is dropped."""
        fd = os.open(self.mount_point, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
        finally:
            os.close(fd)

    def remount_ro(self) -> str | None:
        """Try a read-only remount; returns the kernel's refusal (None if it was applied)."""
        proc = _run(["mount", "-o", "remount,ro", str(self.mount_point)], check=False)
        return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")

    def remount_rw(self) -> None:
        _run(["mount", "-o", "remount,rw", str(self.mount_point)])

    def repair(self) -> None:
        """After :meth:`shutdown`: unmount and mount again, which replays the journal."""
        self.unmount()
        self.mount()

    def usage(self) -> tuple[int, int]:
        """(used, total) bytes."""
        st = os.statvfs(self.mount_point)
        return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


def clean_stale() -> list[Path]:
    """Unmount and delete volumes left by runs whose process is gone."""
    stale: list[Path] = []
    if not SHM.is_dir():
        return stale
    for image in SHM.glob(f"{PREFIX}-*.img"):
        match = _IMAGE.match(image.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        stale.append(image)
    if not stale:
        return stale
    losetup = _run(["losetup", "-a"], check=False).stdout
    devices = {
        line.split(":", 1)[0]: line for line in losetup.splitlines() if any(str(i) in line for i in stale)
    }
    with open("/proc/self/mounts", encoding="utf-8") as fp:
        mounts = [line.split() for line in fp]
    for fields in mounts:
        if len(fields) > 1 and fields[0] in devices:
            _run(["umount", "-l", fields[1]], check=False)
    for image in stale:
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
    return stale
