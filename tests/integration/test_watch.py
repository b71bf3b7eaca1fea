"""Watch on real node processes: order, resume by token, a killed serving node, splits and merges,
compaction, lease expiry, bad input, and the command line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from kvcluster.client import AsyncClient, BadRequest, OutcomeUnknown, Unavailable, Watch, WatchEvent

from .conftest import ClusterFactory

pytestmark = pytest.mark.timeout(180)


class Collector:
    """Runs a watch in a task; tests await conditions on what it has yielded (bounded waits)."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[WatchEvent] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for event in self.watch:
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def until(self, predicate: Callable[[list[WatchEvent]], bool], timeout: float, what: str) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"watch: {what} not seen within {timeout} s; got {self.events[-5:]}"
            ) from None

    async def started(self, timeout: float = 10.0) -> None:
        """The stream's first token has been read: changes from now on will all be seen."""
        await asyncio.wait_for(self.watch.positioned.wait(), timeout)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.watch.aclose()


def changes(events: list[WatchEvent]) -> list[tuple[str, bytes, int]]:
    return [(e.type, e.key, e.revision) for e in events if e.type != "compacted"]


def assert_exactly_once(events: list[WatchEvent]) -> None:
    seen = changes(events)
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    last: dict[bytes, int] = {}
    for _, key, rev in seen:
        assert rev > last.get(key, 0), f"{key!r}: revision {rev} after {last[key]}"
        last[key] = rev


async def test_prefix_watch_streams_puts_and_deletes_in_order(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=4, replicas=3)
    async with AsyncClient(cluster.urls()[1:]) as kv, AsyncClient(cluster.urls()[0]) as watcher:
        col = Collector(watcher.watch(prefix="w/"))
        await col.started()
        expected: list[tuple[str, bytes, int]] = []
        for i in range(30):
            key = f"w/{i % 12}".encode()
            expected.append(("put", key, await kv.put(key, f"v{i}")))
        binary = b"w/\xff\x00bin"
        expected.append(("put", binary, await kv.put(binary, b"\x01\x02")))
        expected.append(("delete", b"w/3", await kv.delete(b"w/3")))
        await kv.put("other/1", "not watched")
        await col.until(lambda ev: len(ev) >= len(expected), 20, "every change")
        await col.close()
    got = changes(col.events)
    assert sorted(got) == sorted(expected)
    for key in {k for _, k, _ in expected}:  # per key in the order they were applied
        assert [c for c in got if c[1] == key] == [c for c in expected if c[1] == key]
    by_key = {(e.key, e.revision): e for e in col.events}
    assert by_key[(binary, expected[30][2])].value == b"\x01\x02"
    assert by_key[(b"w/3", expected[31][2])].value is None
    assert by_key[(b"w/11", expected[23][2])].value == b"v23"


async def test_key_watch_and_start_revision(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    async with AsyncClient(cluster.urls()) as kv:
        versions = [await kv.put("cfg", f"v{i}") for i in range(5)]
        await kv.put("cfgx", "a neighbour with the key as prefix")
        col = Collector(kv.watch(key="cfg", start=versions[1]))
        await col.until(lambda ev: len(ev) >= 3, 10, "the changes after the start revision")
        later = await kv.put("cfg", "v5")
        await col.until(lambda ev: len(ev) >= 4, 10, "a live change")
        await col.close()
    assert [(e.key, e.revision) for e in col.events] == [(b"cfg", v) for v in [*versions[2:], later]]


async def test_resume_from_token_delivers_the_rest_exactly(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=4, replicas=3)
    url = cluster.urls()[0]
    async with AsyncClient(cluster.urls()) as kv, aiohttp.ClientSession() as s:
        first = {f"r/{i}".encode(): await kv.put(f"r/{i}", "a") for i in range(20)}
        read: list[tuple[bytes, int]] = []
        token = None
        async with s.get(url + "/v1/watch?prefix=r/&from=0") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
            async for line in resp.content:
                obj = json.loads(line)
                if obj["type"] == "put":
                    read.append((obj["key"].encode(), obj["revision"]))
                elif obj["type"] == "progress" and len(read) >= len(first):
                    token = obj["token"]
                    break  # drop the stream right after a token
        assert sorted(read) == sorted(first.items())
        second = {f"r/{i}".encode(): await kv.put(f"r/{i}", "b") for i in range(0, 20, 3)}
        resumed: list[tuple[bytes, int]] = []
        async with s.get(url + f"/v1/watch?prefix=r/&from={token}") as resp:
            async for line in resp.content:
                obj = json.loads(line)
                assert obj["type"] in ("put", "progress"), obj
                if obj["type"] == "put":
                    resumed.append((obj["key"].encode(), obj["revision"]))
                if len(resumed) == len(second):
                    break
        assert sorted(resumed) == sorted(second.items())  # the rest, nothing from before the token


class Writer:
    """Puts to ``keys`` keys under ``prefix`` until stopped; what was acknowledged, what is unknown."""

    def __init__(self, kv: AsyncClient, prefix: str, keys: int) -> None:
        self.kv, self.prefix, self.keys = kv, prefix, keys
        self.acked: set[tuple[bytes, int]] = set()
        self.unknown: set[bytes] = set()
        self._stop = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}{i % self.keys}".encode()
            try:
                self.acked.add((key, await self.kv.put(key, str(i))))
            except (OutcomeUnknown, Unavailable):
                self.unknown.add(key)
            i += 1

    async def stop(self) -> None:
        self._stop.set()
        await self.task

    def check(self, events: list[WatchEvent]) -> None:
        """Every acknowledged write seen exactly once; nothing seen that was never written."""
        assert_exactly_once(events)
        seen = {(e.key, e.revision) for e in events}
        assert self.acked <= seen, "an acknowledged write is missing"
        assert {k for k, _ in seen - self.acked} <= self.unknown, "an event for a write that was never made"


async def test_watch_resumes_when_the_serving_node_is_killed(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=4, replicas=3)
    urls = cluster.urls()
    async with AsyncClient(urls, timeout=10) as watcher, AsyncClient(urls[1:], timeout=10) as kv:
        col = Collector(watcher.watch(prefix="k/"))  # served by node 1, the first endpoint
        await col.started()
        writer = Writer(kv, "k/", 50)
        await col.until(lambda ev: len(ev) >= 100, 20, "100 changes before the kill")
        cluster.kill(1)
        served = len(col.events)
        await col.until(lambda ev: len(ev) >= served + 150, 60, "150 changes after the kill")
        await writer.stop()
        await col.until(
            lambda ev: writer.acked <= {(e.key, e.revision) for e in ev}, 30, "every acknowledged write"
        )
        await col.close()
    assert col.watch.reconnects >= 1
    writer.check(col.events)


async def test_watch_across_split_and_merge(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    async with AsyncClient(cluster.urls(), timeout=20) as kv:
        col = Collector(kv.watch(prefix="s/"))
        await col.started()
        writer = Writer(kv, "s/", 64)

        async def more_writes(n: int) -> None:
            target = len(writer.acked) + n
            await col.until(lambda _: len(writer.acked) >= target, 30, f"{n} more writes")

        for partitions in (4, 2):
            await more_writes(20)  # changes before, during and after each reshape
            await kv.reshape([1, 2, 3], partitions, 3)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 90
            while (await kv.reshape_status())["state"] != "done":  # a job with no event to await
                assert loop.time() < deadline, f"reshape to {partitions} partitions did not finish"
                await asyncio.sleep(0.2)
            assert len((await kv.admin_map())["partitions"]) == partitions
        await more_writes(20)
        await writer.stop()
        await col.until(
            lambda ev: writer.acked <= {(e.key, e.revision) for e in ev}, 30, "every acknowledged write"
        )
        await col.close()
    writer.check(col.events)


async def test_compacted_history_is_reported_then_the_watch_goes_on(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=1, replicas=3, node_args=["--watch-history", "20"])
    async with AsyncClient(cluster.urls()) as kv:
        for i in range(100):
            await kv.put(f"c/{i}", "x")
        col = Collector(kv.watch(prefix="c/", start=0))
        await col.until(lambda ev: len(ev) >= 1, 10, "the compacted notice")
        assert col.events[0].type == "compacted" and col.events[0].revision >= 80
        version = await kv.put("c/new", "y")
        await col.until(lambda ev: len(ev) >= 2, 10, "a change after the notice")
        await col.close()
    assert [(e.type, e.key, e.revision) for e in col.events[1:]] == [("put", b"c/new", version)]


async def test_lease_expiry_is_an_expire_event(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    async with AsyncClient(cluster.urls()) as kv:
        col = Collector(kv.watch(prefix="member/"))
        await col.started()
        lease = await kv.lease_grant(1.0)
        version = await kv.put("member/a", "here", lease=lease)
        await col.until(lambda ev: any(e.type == "expire" for e in ev), 15, "the expiry")
        await col.close()
        assert await kv.get("member/a") is None
    put, expire = col.events
    assert (put.type, put.key, put.revision) == ("put", b"member/a", version)
    assert (expire.type, expire.key, expire.value) == ("expire", b"member/a", None)
    assert expire.revision > version


async def test_bad_watch_requests_are_refused(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    url = cluster.urls()[0]
    other_key_token = None
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/v1/watch?key=one") as resp:
            other_key_token = json.loads(await resp.content.readline())["token"]
        for query in [
            "",
            "key=a&prefix=b",
            "key=",
            "prefix=p&from=-1",
            "prefix=p&from=abc",
            "prefix=p&from=1.%25%25",
            "prefix=p&from=99999999999999999999",
            f"key=two&from={other_key_token}",
            f"prefix=p&from={base64.urlsafe_b64encode(b'junk').decode()}",
            "key=" + "k" * 2000,
        ]:
            async with s.get(url + "/v1/watch?" + query) as resp:
                assert resp.status in (400, 413), query
                body: dict[str, Any] = await resp.json()
                assert body["error"]["code"] in ("bad_request", "too_large"), query
    async with AsyncClient(url) as kv:
        with pytest.raises(BadRequest):
            await anext(kv.watch(prefix="p", start="1.bad"))
        assert await kv.put("still", "serving") > 0


def test_cli_watch_prints_changes(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3)
    url = cluster.urls()[0]
    puts = [
        subprocess.run(
            [sys.executable, "-m", "kvcluster", "put", "-e", url, f"cli/{i}", f"value {i}"],
            capture_output=True,
            check=True,
        )
        for i in range(3)
    ]
    assert all(p.returncode == 0 for p in puts)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kvcluster",
            "watch",
            "-e",
            url,
            "cli/",
            "--from",
            "0",
            "--count",
            "3",
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(e["key"] for e in events) == ["cli/0", "cli/1", "cli/2"]
    assert {e["value"] for e in events} == {"value 0", "value 1", "value 2"}
    # Where the watch stood when it stopped: at most the start (the events after it come again).
    resume = out.stderr.split("resume with: --from ")[1].split()[0]
    assert resume == "0" or resume.startswith("1.")


async def test_a_watcher_that_stops_reading_is_cut_off_and_writes_go_on(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(nodes=3, partitions=2, replicas=3, node_args=["--watch-stall-timeout", "2"])
    host, port = cluster.urls()[0].removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /v1/watch?prefix=big/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    try:
        async with AsyncClient(cluster.urls()[1:]) as kv:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()

            async def put_until_stopped() -> int:
                puts = 0
                while not stop.is_set():  # 512 KB events the watcher does not read
                    await kv.put(f"big/{puts % 10}", b"x" * (512 << 10))
                    puts += 1
                return puts

            puts = loop.create_task(put_until_stopped())
            deadline = loop.time() + 90
            while "kvcluster_watch_cut_off_total 1.0" not in await kv.metrics(cluster.urls()[0]):
                assert loop.time() < deadline, "the stalled watch was never cut off"
                await asyncio.sleep(0.1)
            # Cut off: what it reads now ends where the node dropped the connection.
            data = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                    data += chunk
            stop.set()
            assert await asyncio.wait_for(puts, 30) >= 10  # the writes went on while the watcher stalled
        assert data.startswith(b"HTTP/1.1 200 OK")
        assert b"big/" in data and '"type":"put"' in data.decode(errors="replace")
        async with AsyncClient(cluster.urls()[0]) as kv:
            assert "kvcluster_watch_streams 0.0" in await kv.metrics()
    finally:
        writer.close()
