"""``kvcluster reshape --wait`` against a scripted admin API: it follows a running job to its end,
exits 1 with the job's error when it failed, and notices a job replaced under it; usage errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from click.testing import CliRunner, Result

from kvcluster.cli.main import cli

StartStub = Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[str]]

TARGET = {"nodes": [1, 2, 3], "partitions": 16, "replicas": 3}
MAP = {
    "nodes": [{"id": n, "url": f"http://n{n}", "draining": False} for n in (1, 2, 3)],
    "partitions": [{"id": p, "voters": [1, 2, 3], "learners": []} for p in range(8)],
}


def job(state: str, done: int, **extra: object) -> dict[str, object]:
    return {
        "id": "abc123abc123",
        "state": state,
        "target": TARGET,
        "steps_done": done,
        "steps_total": 4,
        "current": f"split {done}" if state == "running" else None,
        "error": None,
        "started": 1.0e9,
        "finished": 1.0e9 + 5 if state != "running" else None,
        **extra,
    }


def scripted(
    states: list[dict[str, object]], seen: list[str]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /v1/admin/reshape answers the states in turn (the last one forever)."""

    async def handler(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path}")
        if request.path == "/v1/admin/map":
            return web.json_response(MAP)
        if request.method == "GET" and request.path == "/v1/admin/reshape":
            return web.json_response(states.pop(0) if len(states) > 1 else states[0])
        if request.method == "POST" and request.path == "/v1/admin/reshape":
            seen.append(await request.text())
            return web.json_response({"job": "abc123abc123", **job("running", 0)}, status=202)
        return web.json_response({"error": {"code": "not_found", "message": "no"}}, status=404)

    return handler


async def invoke(*args: str) -> Result:
    # The CLI's client blocks; the stub server runs on this test's loop.
    return await asyncio.to_thread(CliRunner().invoke, cli, ["reshape", *args], catch_exceptions=False)


async def test_wait_follows_a_running_job_to_done(stub_server: StartStub) -> None:
    seen: list[str] = []
    url = await stub_server(scripted([job("running", 1), job("running", 2), job("done", 4)], seen))
    result = await invoke("-e", url, "--wait")
    assert result.exit_code == 0, result.output
    assert "done" in result.stderr and "4 steps" in result.stderr
    assert seen.count("GET /v1/admin/reshape") == 3  # polled until the job ended, not once
    assert not [s for s in seen if s.startswith("POST")]  # --wait never submits


async def test_wait_on_a_failed_job_exits_1_with_its_error(stub_server: StartStub) -> None:
    seen: list[str] = []
    failed = job("failed", 2, error="split 5 refused: partition 5 has no leader")
    url = await stub_server(scripted([job("running", 1), failed], seen))
    result = await invoke("-e", url, "--wait")
    assert result.exit_code == 1, result.output
    assert "failed" in result.stderr and "partition 5 has no leader" in result.stderr


async def test_a_job_replaced_while_followed_is_reported(stub_server: StartStub) -> None:
    seen: list[str] = []
    url = await stub_server(
        scripted([{"state": "idle"}, job("running", 1), job("done", 1, id="other0000000")], seen)
    )
    result = await invoke("-e", url, "--partitions", "16")
    assert result.exit_code == 1, result.output
    assert (
        '"nodes": [1, 2, 3], "partitions": 16, "replicas": 3'
        in seen[seen.index("POST /v1/admin/reshape") + 1]
    )
    assert "replaced by job other0000000" in result.stderr


async def test_status_prints_the_job_once(stub_server: StartStub) -> None:
    seen: list[str] = []
    url = await stub_server(scripted([job("running", 2)], seen))
    result = await invoke("-e", url, "--status")
    assert result.exit_code == 0, result.output
    assert "reshape job abc123abc123: running" in result.stdout
    assert "steps     2/4" in result.stdout and "current   split 2" in result.stdout
    assert "cluster now: nodes [1, 2, 3], 8 partitions, 3 replicas" in result.stdout
    assert seen.count("GET /v1/admin/reshape") == 1


async def test_usage_errors() -> None:
    assert (await invoke("-e", "http://127.0.0.1:1", "--status", "--partitions", "4")).exit_code == 2
    assert (await invoke("-e", "http://127.0.0.1:1", "--status", "--wait")).exit_code == 2
    assert (await invoke("-e", "http://127.0.0.1:1")).exit_code == 2  # nothing to change
    assert (await invoke("-e", "http://127.0.0.1:1", "--nodes", "x,y")).exit_code == 2
    assert (await invoke("-e", "http://127.0.0.1:1", "--forget", "4", "--wait")).exit_code == 2
    assert (await invoke("-e", "http://127.0.0.1:1", "--forget", "4", "--nodes", "3")).exit_code == 2
    missing = await invoke("--data-dir", "/nonexistent-kvcluster", "--partitions", "4")
    assert missing.exit_code == 2 and "no local cluster" in missing.stderr
