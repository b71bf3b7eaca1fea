"""A fixed sequence of reshapes under load: the reshape issue's scenario, measured.

The random nemeses ask "does anything break?"; this asks the same of one
planned walk through shapes (nodes, partitions, replicas), optionally with a
``kill -9`` of a random node half-way through one of the reshapes, and
measures each reshape: how long it took, its steps by kind, and the rate of
acknowledged operations during it against the rate just before it. New nodes
are started before a reshape that needs them; nodes the reshape drained are
stopped after it (``kvcluster.local.reshape``, the code behind
``kvcluster reshape``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kvcluster.client import KVError, SyncClient
from kvcluster.local import ClusterError
from kvcluster.local.reshape import DirectSupervisor, reshape

from .nemesis import Env, FaultRecord


@dataclass(frozen=True)
class Shape:
    nodes: int
    partitions: int
    replicas: int
    crash: str = ""
    """``kill``: kill -9 a random node in the middle of this reshape; ``kill-driver``: the node
    running the job (the meta group's leader). Either is restarted a few seconds later."""

    def __str__(self) -> str:
        return f"n{self.nodes}p{self.partitions}r{self.replicas}" + (f"+{self.crash}" if self.crash else "")

    @classmethod
    def parse(cls, text: str) -> Shape:
        """``5,16,3``, ``5,16,3,kill`` or ``5,16,3,kill-driver``."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in CRASHES):
            raise ValueError(f"expected NODES,PARTITIONS,REPLICAS[,kill|kill-driver], got {text!r}")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), crash=parts[3] if len(parts) == 4 else "")


CRASHES = ("kill", "kill-driver")

ISSUE_SCENARIO = (
    Shape(3, 8, 3),
    Shape(5, 8, 3),
    Shape(5, 16, 3),
    Shape(5, 16, 5, crash="kill-driver"),
    Shape(5, 16, 3, crash="kill"),
    Shape(5, 4, 3),
    Shape(3, 4, 3),
)
"""Partitions 4 -> 8 -> 16 -> 4, replicas 3 -> 5 -> 3, nodes 3 -> 5 -> 3; one reshape loses the node
driving it, another a random node, both to kill -9 half-way."""

RATE_WINDOW_S = 5.0


class ReshapeScript:
    def __init__(self, shapes: Sequence[Shape], acked: Callable[[], int], reshape_timeout: float) -> None:
        self.shapes = list(shapes)
        self.acked = acked
        """Acknowledged operations so far (the workload's running count)."""
        self.reshape_timeout = reshape_timeout
        self._samples: list[tuple[float, int]] = []

    def _sample(self) -> None:
        self._samples.append((time.monotonic(), self.acked()))

    def _rate_before(self, now: float) -> float | None:
        """Acknowledged operations per second over the window before ``now``."""
        recent = [(t, n) for t, n in self._samples if now - RATE_WINDOW_S - 1 <= t <= now]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < 1:
            return None
        return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])

    async def _sampler(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.5)

    async def run(self, env: Env) -> None:
        sampler = asyncio.create_task(self._sampler())
        try:
            await asyncio.sleep(RATE_WINDOW_S)  # a baseline before the first reshape
            for shape in self.shapes:
                if env.stopping.is_set():
                    break
                await self._step(env, shape)
                await asyncio.sleep(RATE_WINDOW_S)  # a quiet baseline before the next one
        finally:
            sampler.cancel()

    async def _step(self, env: Env, shape: Shape) -> None:
        record = env.log.begin("reshape-script", str(shape), env.all_nodes())
        started = time.monotonic()
        before, acked_at_start = self._rate_before(started), self.acked()
        killer = None
        if shape.crash:
            previous = (await env.call(_job, env) or {}).get("id")
            killer = asyncio.create_task(self._crash_midway(env, record, previous))
        # Nodes beyond the target are drained and then stopped on purpose: not a crash.
        env.expected_down.update(n for n in env.all_nodes() if n > shape.nodes)
        try:
            result = await env.call(self._reshape, env, shape)
        except (ClusterError, KVError) as exc:
            record.problems.append(f"reshape to {shape} failed: {exc}")
            result = None
        finally:
            if killer is not None:
                await killer
        took = time.monotonic() - started
        record.observed.update(
            took_s=round(took, 1),
            rate_before=round(before, 1) if before is not None else None,
            rate_during=round((self.acked() - acked_at_start) / took, 1) if took > 0 else None,
        )
        if result is not None:
            job = result.job
            record.observed.update(
                steps=job.get("steps_done"),
                step_seconds=job.get("step_seconds"),
                added=result.added,
                removed=result.removed,
            )
            await self._check_shape(env, shape, record)
        env.log.end(record)

    def _reshape(self, env: Env, shape: Shape) -> Any:
        with SyncClient(env.cluster.urls(), timeout=30.0) as client:
            return reshape(
                DirectSupervisor(env.cluster),
                client,
                shape.nodes,
                shape.partitions,
                shape.replicas,
                timeout=self.reshape_timeout,
            )

    async def _crash_midway(self, env: Env, record: FaultRecord, previous: str | None) -> None:
        """Wait until the new job is a step in, then kill -9 a random node and bring it back."""
        deadline = time.monotonic() + self.reshape_timeout
        while time.monotonic() < deadline:
            job = await env.call(_job, env) or {}
            if job.get("id") != previous:
                if job.get("state") == "running" and int(job.get("steps_done") or 0) >= 1:
                    break
                if job.get("state") in ("done", "failed"):
                    record.problems.append("the reshape finished before the crash could be injected")
                    return
            await asyncio.sleep(0.1)
        victim = _meta_leader(env) if record.variant.endswith("kill-driver") else None
        victim = victim or env.rng.choice(env.alive())
        record.observed["killed"] = victim
        record.observed["killed_at_step"] = int((await env.call(_job, env) or {}).get("steps_done") or 0)
        await env.call(env.cluster.kill, victim)
        await asyncio.sleep(env.rng.uniform(2.0, 4.0))
        await env.restart([victim], record)

    async def _check_shape(self, env: Env, shape: Shape, record: FaultRecord) -> None:
        """The map matches the target and replicas are spread within one of the mean."""
        with SyncClient(env.cluster.urls(), timeout=30.0) as client:
            pmap = await env.call(client.admin_map)
        parts = pmap["partitions"]
        counts: dict[int, int] = {n["id"]: 0 for n in pmap["nodes"]}
        for p in parts:
            for n in p["voters"]:
                counts[n] = counts.get(n, 0) + 1
        record.observed["replicas_per_node"] = counts
        if len(parts) != shape.partitions:
            record.problems.append(f"{len(parts)} partitions, wanted {shape.partitions}")
        if any(len(p["voters"]) != shape.replicas or p["learners"] for p in parts):
            record.problems.append(f"not every partition has exactly {shape.replicas} voters")
        if sorted(counts) != list(range(1, shape.nodes + 1)):
            record.problems.append(f"members {sorted(counts)}, wanted nodes 1..{shape.nodes}")
        if counts and max(counts.values()) - min(counts.values()) > 1:
            record.problems.append(f"replicas are not balanced: {counts}")


def _meta_leader(env: Env) -> int | None:
    """The node leading the meta group, which is where the reshape job runs."""
    for node in env.alive():
        status, body = env.cluster.get_json(node, "/v1/admin/map", timeout=5.0)
        if status == 200 and isinstance(body, dict):
            leader = body.get("leaders", {}).get("0")
            return int(leader) if leader is not None else None
    return None


def _job(env: Env) -> dict[str, Any] | None:
    for node in env.alive():
        status, body = env.cluster.get_json(node, "/v1/admin/reshape", timeout=5.0)
        if status == 200 and isinstance(body, dict):
            return body
    return None
