"""Backup and restore (issue 12) with real node processes, real files and a real S3-compatible server.

The properties: a backup taken from one cluster and restored into a cluster
of another shape reads back every key; a corrupt, truncated or failed file is
refused before a single row is loaded; a backup taken while partitions split
still holds every key; retention prunes old backups, locally and in S3.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from kvcluster.client import AsyncClient, SyncClient
from kvcluster.client.backup import write_backup
from kvcluster.client.backupfile import BackupError, BackupIncomplete, verify
from kvcluster.local import LocalCluster
from tests.s3server import KEYS, moto_server, s3_client

from .conftest import ClusterFactory

CLI = [sys.executable, "-m", "kvcluster"]


def kv(
    cluster: LocalCluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args[:1], "-e", ",".join(cluster.urls()), "--quiet", *args[1:]],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
        check=False,
    )


def sample_data(count: int, seed: int = 7) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    data = {f"app/{i:05d}".encode(): rng.randbytes(rng.randint(0, 200)) for i in range(count)}
    data[b"\x00\xffbinary key"] = b""
    data[b"big"] = rng.randbytes(300_000)
    return data


def write_all(cluster: LocalCluster, data: dict[bytes, bytes]) -> None:
    async def go() -> None:
        async with AsyncClient(cluster.urls()) as client:
            sem = asyncio.Semaphore(32)

            async def put(k: bytes, v: bytes) -> None:
                async with sem:
                    await client.put(k, v)

            await asyncio.gather(*(put(k, v) for k, v in data.items()))

    asyncio.run(go())


def read_all(cluster: LocalCluster) -> dict[bytes, bytes]:
    with SyncClient(cluster.urls()) as client:
        return {item.key: item.value for page in client.scan_all() for item in page.items}


def summary_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return body


def error_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    err: dict[str, Any] = json.loads(done.stderr.strip().splitlines()[-1])["error"]
    return err


def test_backup_restores_into_a_cluster_of_another_shape(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    source = make_cluster(nodes=3, partitions=4, replicas=3, name="source")
    data = sample_data(2000)
    write_all(source, data)
    folder = tmp_path / "backups"
    summary_file = tmp_path / "summary.json"
    folder.mkdir()
    stale, fresh = folder / ".kvbackup-killed.partial", folder / ".kvbackup-running.partial"
    stale.write_bytes(b"left by a run that was killed")
    fresh.write_bytes(b"a run still going")
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    first = summary_of(kv(source, "backup", f"{folder}/", "--keep", "2", "--summary-file", str(summary_file)))
    assert not stale.exists() and fresh.exists(), "only day-old scratch files are cleaned up"
    fresh.unlink()
    assert first["keys"] == len(data) and first["partitions"] == 4
    assert json.loads(summary_file.read_text()) == first
    backup = Path(first["file"])
    assert backup.parent == folder and backup.stat().st_size == first["size"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial")]
    with tarfile.open(backup) as tar:  # a plain tar any machine can list
        names = tar.getnames()
    assert names[0] == "kvbackup/header.json" and names[-1] == "kvbackup/manifest.json"
    assert sum(n.endswith(".json") and "/p" in n for n in names) == 4  # one section per partition

    # Retention: three more runs, two files stay, the newest ones.
    runs = [summary_of(kv(source, "backup", f"{folder}/", "--keep", "2")) for _ in range(3)]
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(Path(r["file"]).name for r in runs[-2:])

    target = make_cluster(nodes=2, partitions=3, replicas=2, name="target")
    restored = summary_of(kv(target, "restore", str(folder) + "/"))  # a folder: its newest backup
    assert restored["keys"] == len(data) and restored["file"] == runs[-1]["file"]
    assert read_all(target) == data

    # The restored cluster is a working cluster: it takes writes and reshapes.
    with SyncClient(target.urls()) as client:
        assert client.put(b"after-restore", b"ok") > 0


def test_a_bad_file_is_refused_and_nothing_is_loaded(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    source = make_cluster(nodes=3, partitions=2, replicas=3, name="source")
    data = sample_data(300)
    write_all(source, data)
    good = Path(summary_of(kv(source, "backup", str(tmp_path / "good.kvbackup")))["file"])
    raw = good.read_bytes()
    target = make_cluster(nodes=1, partitions=2, replicas=1, name="target")

    truncated = tmp_path / "truncated.kvbackup"
    truncated.write_bytes(raw[: len(raw) // 2])
    cut_at_member = tmp_path / "cut.kvbackup"  # ends cleanly on a member boundary, without the manifest
    with tarfile.open(good) as tar:
        manifest_offset = tar.getmember("kvbackup/manifest.json").offset
    cut_at_member.write_bytes(raw[:manifest_offset] + b"\0" * 1024)
    corrupt = tmp_path / "corrupt.kvbackup"
    with tarfile.open(good) as tar:
        chunk = next(m for m in tar.getmembers() if m.name.endswith(".msgpack"))
    flipped = bytearray(raw)
    flipped[chunk.offset_data + chunk.size // 2] ^= 0xFF
    corrupt.write_bytes(bytes(flipped))
    not_a_backup = tmp_path / "notes.kvbackup"
    not_a_backup.write_text("hello")
    missing = tmp_path / "missing.kvbackup"

    for bad, words in [
        (truncated, "truncated"),
        (cut_at_member, "truncated"),
        (corrupt, "corrupt"),
        (not_a_backup, "damaged"),
        (missing, "no such backup"),
    ]:
        done = kv(target, "restore", str(bad))
        assert done.returncode == 2, (bad.name, done.stdout, done.stderr)
        assert words in error_of(done)["message"], (bad.name, done.stderr)
    assert read_all(target) == {}, "a refused file must load nothing"

    # A cluster that holds keys is refused without --force, and loaded with it.
    with SyncClient(target.urls()) as client:
        client.put(b"app/00001", b"local value")
    refused = kv(target, "restore", str(good))
    assert refused.returncode == 3 and error_of(refused)["code"] == "not_empty"
    assert read_all(target) == {b"app/00001": b"local value"}
    summary_of(kv(target, "restore", str(good), "--force"))
    assert read_all(target) == data


def test_backup_while_partitions_split_and_writes_go_on(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    source = make_cluster(nodes=3, partitions=2, replicas=3, name="source")
    data = sample_data(1500)
    rng = random.Random(3)
    data.update({f"bulk/{i}".encode(): rng.randbytes(400_000) for i in range(30)})  # more than socket buffers
    write_all(source, data)
    url = source.urls()[0]

    async def split_during_backup() -> tuple[bytes, int, dict[bytes, bytes]]:
        extra: dict[bytes, bytes] = {}
        async with AsyncClient(source.urls()) as client, aiohttp.ClientSession() as http:
            out = bytearray()

            async def split_all() -> int:
                done = 0
                answer = await http.get(url + "/v1/admin/map")
                for pid in (await answer.json())["partitions"]:
                    resp = await http.post(f"{url}/v1/admin/partitions/{pid['id']}/split")
                    done += resp.status == 200
                return done

            async with client.backup_stream() as stream:
                async for piece in stream:
                    out.extend(piece)
                    break  # the node is now blocked writing into full socket buffers
                splits = await split_all()
                for i in range(100):
                    key = f"during/{i}".encode()
                    await client.put(key, b"x")
                    extra[key] = b"x"
                async for piece in stream:
                    out.extend(piece)
            return bytes(out), splits, extra

    raw, splits, during = asyncio.run(split_during_backup())
    assert splits == 2
    path = tmp_path / "during.kvbackup"
    path.write_bytes(raw)
    with path.open("rb") as f:
        checked = verify(f)
    assert len(checked.header["map"]["partitions"]) == 2
    assert len(checked.partitions) > 2, "the backup should have met the split partitions"
    target = make_cluster(nodes=1, partitions=1, replicas=1, name="target")
    summary_of(kv(target, "restore", str(path)))
    restored = read_all(target)
    # Every key written before the backup began is in it; keys written during it may or may not be.
    assert {k: restored.get(k) for k in data} == data
    assert set(restored) - set(data) <= set(during)


def test_a_node_killed_mid_backup_fails_that_run_and_the_next_one_succeeds(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    rng = random.Random(5)
    data = {f"bulk/{i}".encode(): rng.randbytes(400_000) for i in range(30)}  # more than socket buffers
    write_all(cluster, data)

    async def interrupted() -> BaseException | None:
        killed = False

        def on_bytes(_: int) -> None:
            nonlocal killed
            if not killed:
                killed = True
                cluster.kill(1)  # the node serving the stream, with SIGKILL, by pid

        async with AsyncClient([cluster.urls()[0]], timeout=10) as client:
            with (tmp_path / "cut.partial").open("wb") as f:
                try:
                    await write_backup(client, f, on_bytes)
                except BackupError as exc:
                    return exc
        return None

    failure = asyncio.run(interrupted())
    assert isinstance(failure, BackupIncomplete), failure  # the header arrives, then the stream breaks
    with (tmp_path / "cut.partial").open("rb") as f, pytest.raises(BackupError):
        verify(f)
    # The CLI, given every node, starts again (the dead one refuses connections) and succeeds.
    cluster.wait_for(lambda: cluster.leader_of(1, via=2) not in (None, 1), timeout=30, what="a new leader")
    summary = summary_of(kv(cluster, "backup", str(tmp_path / "whole.kvbackup")))
    assert summary["keys"] == len(data)


def test_lease_bound_keys_are_left_out(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    source = make_cluster(nodes=3, partitions=2, replicas=3, name="source")
    with SyncClient(source.urls()) as client:
        lease = client.lease_grant(60)
        client.put(b"members/a", b"pod a", lease=lease)  # gone once its owner stops: not restored
        client.put(b"members/b", b"pod b", lease=lease)
        client.put(b"members/b", b"pod b, now permanent")  # written again without the lease: kept
        client.put(b"config", b"plain")
    path = tmp_path / "leases.kvbackup"
    assert summary_of(kv(source, "backup", str(path)))["keys"] == 2
    with tarfile.open(path) as tar:
        handle = tar.extractfile("kvbackup/manifest.json")
        assert handle is not None and json.load(handle)["ephemeral_keys_left_out"] == 1
    target = make_cluster(nodes=1, partitions=1, replicas=1, name="target")
    summary_of(kv(target, "restore", str(path)))
    assert read_all(target) == {b"members/b": b"pod b, now permanent", b"config": b"plain"}


def test_restore_rows_refuses_bad_input(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    url = cluster.urls()[0] + "/v1/admin/restore/rows"

    async def go() -> list[tuple[int, dict[str, Any]]]:
        out = []
        async with aiohttp.ClientSession() as http:
            for body in [
                b"",
                b"\xc1",
                msgpack.packb({"rows": []}),
                msgpack.packb({"rows": [["text key", b"v"]]}),
                msgpack.packb({"rows": [[b"", b"v"]]}),
                msgpack.packb({"rows": [[b"k" * 5000, b"v"]]}),
                msgpack.packb({"rows": [[b"k", b"v", b"extra"]]}),
                msgpack.packb([b"k", b"v"]),
            ]:
                resp = await http.post(url, data=body)
                out.append((resp.status, await resp.json()))
            ok = await http.post(url, data=msgpack.packb({"rows": [[b"good", b"row"]]}))
            out.append((ok.status, await ok.json()))
        return out

    answers = asyncio.run(go())
    for status, body in answers[:-1]:
        assert status == 400 and body["error"]["code"] == "bad_request", body
    assert answers[-1] == (200, {"loaded": 1})
    assert read_all(cluster) == {b"good": b"row"}


@pytest.fixture
def s3_server() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def test_backup_to_and_restore_from_s3(make_cluster: ClusterFactory, s3_server: str) -> None:
    env = {"AWS_ENDPOINT_URL": s3_server, **KEYS}
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="kv-backups")
    source = make_cluster(nodes=3, partitions=2, replicas=3, name="source")
    data = sample_data(500)
    write_all(source, data)
    runs = [
        summary_of(kv(source, "backup", "s3://kv-backups/daily/", "--keep", "1", env=env)) for _ in range(2)
    ]
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="kv-backups", Prefix="daily/")["Contents"]]
    assert [f"s3://kv-backups/{k}" for k in listed] == [runs[-1]["file"]]
    assert s3.head_object(Bucket="kv-backups", Key=listed[0])["ContentLength"] == runs[-1]["size"]

    target = make_cluster(nodes=1, partitions=1, replicas=1, name="target")
    restored = summary_of(kv(target, "restore", "s3://kv-backups/daily/", env=env))
    assert restored["file"] == runs[-1]["file"] and restored["keys"] == len(data)
    assert read_all(target) == data

    missing = kv(target, "restore", "s3://kv-backups/none.kvbackup", env=env)
    assert missing.returncode == 2, missing.stderr
