"""The kubelet for the end-to-end tests: real ``kvcluster node`` processes behind emulated pods.

:class:`~sts_controller.StatefulSetController` creates and deletes pod
objects; this module makes them run. When a pod appears, its container is
started as a real ``python -m kvcluster node`` process on 127.0.0.1 with the
configuration the operator rendered: the container's ``args`` and its
environment (literal values, the pod name, the ConfigMap keys) are turned
into node flags, the Secret volume becomes files, the data volume a
directory per claim. Only what cannot work on one machine is translated,
and each translation is spelled out in :meth:`NodePods.command`:

* the pod DNS names (``demo-0.demo-headless.kv.svc:7000``) do not resolve
  here, so every name is mapped to a 127.0.0.1 port of its own (a stable
  table per pod name, like the stable network identity of a StatefulSet pod);
  ``--listen``, ``--advertise-url`` and ``--peers`` go through that table;
* the host name is not the pod name, so ``KVCLUSTER_ID_FROM_HOSTNAME``
  becomes ``--id`` computed by the node's own ``node_id_from_hostname`` from
  the pod name;
* mount paths (``/data``, ``/etc/kvcluster/auth``) are rewritten to the
  directories that stand in for the volumes.

A claim's directory outlives its pod, as a PersistentVolume does: a pod
recreated with the same ordinal finds its data again. When the StatefulSet
controller deletes the claim (``whenScaled: Delete``) the directory is set
aside, so the ordinal would come back empty.

Readiness is the node's real ``/readyz``, probed with the pod's readiness
probe settings (period scaled down, failure threshold kept, so a blip is not
an unready pod, as on a real kubelet). A process that dies while its pod
exists is recorded in ``crashes`` and restarted with back-off, as
``restartPolicy: Always`` does. A pod is known by its uid: one deleted and
created again under the same name gets a new process on the same claim.

When a pod goes away the process gets SIGTERM (SIGKILL after the pod's grace
period), by pid. If the pod went because its StatefulSet shrank, the node
must hold nothing at that moment:
the harness asks the cluster (``GET /v1/admin/nodes/{id}`` through a node
that stays) before it stops the process, and records a *violation* if the
node was not drained. Starting a node while a reshape job already targets it
(the operator must grow the StatefulSet before it reshapes onto new nodes)
is a violation too. Tests assert that ``violations`` stays empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from sts_controller import PodInfo

from kvcluster.cli.nodecmd import node_id_from_hostname
from kvcluster.local.ports import free_ports
from kvoperator.kube import PODS, PVCS, STATEFULSETS, KubeClient

ENV_PREFIX = "KVCLUSTER_"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
PROBE_TIME_SCALE = 0.1
"""Probe periods run ten times faster than the pod spec says (5 s -> 0.5 s), so that readiness
is seen quickly; the failure threshold is kept, so a blip shorter than ``threshold x period`` does
not make a pod unready, as on a real kubelet."""
STOP_GRACE_CAP = 20.0
"""Upper bound on the SIGTERM grace, whatever the pod asks for: keeps the test bounded."""
RESTART_BACKOFF = 10.0 * PROBE_TIME_SCALE
"""The kubelet's first restart delay (10 s, doubling), on the same time scale as the probes."""


@dataclass(frozen=True)
class ProbeSpec:
    """A readiness probe's timing, from the pod spec, on the test's time scale."""

    path: str = "/readyz"
    period: float = 10.0 * PROBE_TIME_SCALE
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1

    @classmethod
    def from_container(cls, container: Mapping[str, Any]) -> ProbeSpec:
        probe = container.get("readinessProbe") or {}
        return cls(
            path=str((probe.get("httpGet") or {}).get("path", "/readyz")),
            period=float(probe.get("periodSeconds", 10)) * PROBE_TIME_SCALE,
            timeout=min(float(probe.get("timeoutSeconds", 1)), 1.0),
            failure_threshold=int(probe.get("failureThreshold", 3)),
            success_threshold=int(probe.get("successThreshold", 1)),
        )


@dataclass
class ProbeState:
    """The kubelet's view: not ready until a success, unready only after ``failure_threshold`` failures."""

    ready: bool = False
    failures: int = 0
    successes: int = 0
    next_at: float = 0.0
    last: str = ""


@dataclass(frozen=True)
class PodCommand:
    """How a pod's container runs here: the node's argv and what the harness needs to know of it."""

    pod: str
    uid: str
    """The pod object's uid: a pod deleted and created again under the same name is a new pod."""
    statefulset: str
    ordinal: int
    node_id: int
    url: str
    argv: list[str]
    claim: str | None
    data_dir: Path | None
    grace: float
    token: str | None
    cluster_state: str
    probe: ProbeSpec

    def flag(self, name: str) -> str | None:
        return self.argv[self.argv.index(name) + 1] if name in self.argv else None


@dataclass
class NodeProcess:
    """A pod's running container: one node process."""

    cmd: PodCommand
    proc: subprocess.Popen[bytes]
    log_path: Path
    incarnation: int
    restarts: int = 0
    probe: ProbeState = field(default_factory=ProbeState)
    restart_at: float | None = None
    """Set while crashed: when the kubelet starts the container again."""

    @property
    def pod(self) -> str:
        return self.cmd.pod

    @property
    def node_id(self) -> int:
        return self.cmd.node_id

    @property
    def url(self) -> str:
        return self.cmd.url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass(frozen=True)
class Crash:
    """A node process that exited while its pod still existed; the kubelet restarts it."""

    pod: str
    pid: int
    exit_code: int | None
    log_path: Path
    tail: str
    """The end of its log: what it said before dying."""

    def __str__(self) -> str:
        last = self.tail.strip().splitlines()[-3:]
        return (
            f"{self.pod} (pid {self.pid}) exited with {self.exit_code}: {' | '.join(last)} [{self.log_path}]"
        )


@dataclass(frozen=True)
class Removal:
    """What the harness saw when a pod went away."""

    pod: str
    node_id: int
    scaled_down: bool
    """The StatefulSet shrank below the ordinal (rather than the whole cluster being deleted)."""
    admin_view: Mapping[str, Any] | None
    """``GET /v1/admin/nodes/{id}`` just before SIGTERM (None when not a scale-down, or unknown)."""
    exit_code: int | None
    data_released: bool
    """The claim was deleted with the pod, so its directory was set aside."""


@dataclass
class NodePods:
    """Starts and stops node processes as pods come and go; see the module docstring."""

    kube: KubeClient
    namespace: str
    base_dir: Path
    wait_changed: Callable[[float], Any]
    max_pods: int = 8
    statefulset: str = "demo"
    procs: dict[str, NodeProcess] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    removals: list[Removal] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    """What happened, in order, with seconds since the harness started."""
    crashes: list[Crash] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _session: aiohttp.ClientSession | None = None
    _task: asyncio.Task[None] | None = None
    _t0: float = field(default_factory=time.monotonic)
    _incarnations: dict[str, int] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir)
        # A table fixed before any process runs: a pod keeps its port across
        # restarts, as it keeps its DNS name, and every peer list agrees.
        ports = free_ports(self.max_pods)
        self.ports = {f"{self.statefulset}-{i}": port for i, port in enumerate(ports)}

    # --- life cycle ------------------------------------------------------------

    async def __aenter__(self) -> NodePods:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._kubelet_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every process this harness started (SIGTERM, then SIGKILL), by pid."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for proc in list(self.procs.values()):
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            await _wait_exit(proc, 10.0)
            del self.procs[name]
        if self._session is not None:
            await self._session.close()
            self._session = None

    def kill_all(self) -> None:
        """Last resort for a fixture finalizer: SIGKILL whatever still runs (no event loop needed)."""
        for proc in self.procs.values():
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.proc.wait(timeout=10)

    # --- addresses -------------------------------------------------------------------

    def url(self, pod: str) -> str:
        return f"http://127.0.0.1:{self.ports[pod]}"

    def urls(self) -> list[str]:
        """Every address a pod of the StatefulSet can have: the client's endpoint list."""
        return [self.url(name) for name in sorted(self.ports, key=_ordinal)]

    def map_url(self, url: str, dns_suffix: str) -> str:
        """``http://demo-0.<suffix>:7000`` -> ``http://127.0.0.1:<port of demo-0>``.

        Anything that is not a pod address under the StatefulSet's governing
        Service is an error: it would mean the operator rendered an address
        the pods could not reach in a real cluster either.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        pod, _, suffix = host.partition(".")
        if suffix != dns_suffix or pod not in self.ports or parts.port is None:
            raise ValueError(f"{url!r} is not a pod address under {dns_suffix!r}")
        return f"{parts.scheme}://127.0.0.1:{self.ports[pod]}{parts.path}"

    def map_peers(self, peers: str, dns_suffix: str) -> str:
        out = []
        for part in filter(None, (p.strip() for p in peers.split(","))):
            ident, _, url = part.partition("=")
            out.append(f"{ident}={self.map_url(url, dns_suffix)}")
        return ",".join(out)

    def _note(self, line: str) -> None:
        self.log.append(f"{time.monotonic() - self._t0:7.2f}s {line}")

    # --- the StatefulSet controller's hooks ----------------------------------------

    async def pods_changed(self, statefulset: str, pods: list[PodInfo]) -> None:
        """Start the containers of new pods, stop those of pods that went away (or were replaced)."""
        async with self._lock:
            current = {p.name: p for p in pods}
            uids = await self._pod_uids()
            for name in sorted(self.procs, key=_ordinal):
                if name not in current or uids.get(name) != self.procs[name].cmd.uid:
                    await self._remove(name)
            for name in sorted(set(current) - set(self.procs), key=_ordinal):
                await self._start(current[name])

    async def _pod_uids(self) -> dict[str, str]:
        pods = await self.kube.list(PODS.path(self.namespace))
        return {p["metadata"]["name"]: str(p["metadata"].get("uid", "")) for p in pods}

    async def ready(self, pod: PodInfo) -> bool:
        """The pod's readiness, as a kubelet probing the real ``/readyz`` would report it."""
        proc = self.procs.get(pod.name)
        if proc is None:
            return False
        if not proc.alive():
            self._crashed(proc)
            return False
        spec, state = proc.cmd.probe, proc.probe
        now = time.monotonic()
        if now < state.next_at:
            return state.ready
        state.next_at = now + spec.period
        ok, why = await self._probe(proc.url + spec.path, spec.timeout)
        if ok:
            state.failures, state.successes = 0, state.successes + 1
        else:
            state.failures, state.successes = state.failures + 1, 0
            if why != state.last:
                self._note(f"probe {pod.name} failed: {why}")
        state.last = "" if ok else why
        was = state.ready
        if ok and state.successes >= spec.success_threshold:
            state.ready = True
        elif not ok and state.failures >= spec.failure_threshold:
            state.ready = False
        if state.ready != was:
            self._note(f"{pod.name} {'ready' if state.ready else 'NOT READY'}")
        return state.ready

    async def _probe(self, url: str, timeout: float) -> tuple[bool, str]:
        assert self._session is not None
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status == 200:
                    return True, ""
                return False, f"HTTP {resp.status} {(await resp.text())[:200]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return False, type(exc).__name__

    def _crashed(self, proc: NodeProcess) -> None:
        """Record a crash once, and when the container comes back (restartPolicy: Always)."""
        if proc.restart_at is not None:
            return
        delay = min(RESTART_BACKOFF * 2**proc.restarts, 30.0)
        proc.restart_at = time.monotonic() + delay
        proc.probe = ProbeState()
        crash = Crash(proc.pod, proc.pid, proc.proc.returncode, proc.log_path, _tail(proc.log_path))
        self.crashes.append(crash)
        self._note(f"crash {crash}; restart in {delay:.1f}s")

    def _restart_due(self) -> None:
        for name, proc in list(self.procs.items()):
            if not proc.alive():
                self._crashed(proc)
            if proc.restart_at is not None and time.monotonic() >= proc.restart_at:
                incarnation = self._incarnations[name] = self._incarnations[name] + 1
                log_path = self.base_dir / "logs" / f"{name}.{incarnation}.log"
                popen = _spawn(proc.cmd.argv, name, log_path)
                self.procs[name] = NodeProcess(proc.cmd, popen, log_path, incarnation, proc.restarts + 1)
                self._note(f"restart {name} pid {popen.pid} (restart {proc.restarts + 1})")

    async def _kubelet_loop(self) -> None:
        """Restart crashed containers; stop those of pods deleted by anything else (the GC)."""
        while True:
            try:
                async with self._lock:
                    uids = await self._pod_uids()
                    for name in sorted(self.procs, key=_ordinal):
                        if uids.get(name) != self.procs[name].cmd.uid:
                            await self._remove(name)
                    self._restart_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep going: the test asserts on `errors`
                self.errors.append(exc)
            await self.wait_changed(0.5)

    # --- starting ------------------------------------------------------------------

    async def command(self, pod: PodInfo) -> PodCommand:
        """The node's command line, from the pod and its StatefulSet as stored in the API."""
        body = await self.kube.get(PODS.path(self.namespace, pod.name))
        sts = await self.kube.get(STATEFULSETS.path(self.namespace, pod.statefulset))
        if body is None or sts is None:
            raise RuntimeError(f"{pod.name}: pod or StatefulSet vanished before it started")
        return self.render(pod, body, sts)

    def render(self, pod: PodInfo, body: Mapping[str, Any], sts: Mapping[str, Any]) -> PodCommand:
        """The translation itself (writes the Secret files and makes the volume directories)."""
        spec = body["spec"]
        container = spec["containers"][0]
        dns_suffix = f"{sts['spec']['serviceName']}.{self.namespace}.svc"
        env = dict(pod.env)
        mounts, claim, data_dir = self._volumes(pod, spec, container, sts)

        def local_path(value: str) -> str:
            return in_mounts(value, mounts)

        def expand(value: str) -> str:  # the kubelet's $(VAR) expansion
            return VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)

        command = [expand(c) for c in container.get("command", [])]
        if command != ["kvcluster"]:
            raise RuntimeError(f"{pod.name}: unexpected container command {command!r}")
        argv = [sys.executable, "-m", "kvcluster"]
        args = [expand(a) for a in container.get("args", [])]
        i = 0
        while i < len(args):
            arg = args[i]
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
            if value is None:
                argv.append(arg)
            elif arg == "--listen":
                argv += [arg, f"127.0.0.1:{self.ports[pod.name]}"]
            elif arg == "--advertise-url":
                argv += [arg, self.map_url(value, dns_suffix)]
            elif arg == "--peers":
                argv += [arg, self.map_peers(value, dns_suffix)]
            else:
                argv += [arg, local_path(value)]
            i += 1 if value is None else 2

        # Environment variables that are node flags become flags, so that the
        # command line shows everything the node was told.
        for name, value in sorted(env.items()):
            if not name.startswith(ENV_PREFIX):
                continue
            flag = "--" + name[len(ENV_PREFIX) :].lower().replace("_", "-")
            if flag == "--id-from-hostname":
                if value.lower() in ("1", "true", "yes"):
                    argv += ["--id", str(node_id_from_hostname(pod.name))]
            elif flag == "--peers":
                argv += [flag, self.map_peers(value, dns_suffix)]
            else:
                argv += [flag, local_path(value)]

        token_file = _flag(argv, "--token-file")
        cmd = PodCommand(
            pod=pod.name,
            uid=str(body["metadata"].get("uid", "")),
            statefulset=pod.statefulset,
            ordinal=pod.ordinal,
            node_id=int(_flag(argv, "--id") or 0),
            url=self.url(pod.name),
            argv=argv,
            claim=claim,
            data_dir=data_dir,
            grace=min(float(spec.get("terminationGracePeriodSeconds", 30)), STOP_GRACE_CAP),
            token=Path(token_file).read_text().strip() if token_file else None,
            cluster_state=_flag(argv, "--cluster-state") or "new",
            probe=ProbeSpec.from_container(container),
        )
        if cmd.node_id != pod.node_id:
            raise RuntimeError(f"{pod.name}: the config gives node id {cmd.node_id}, not {pod.node_id}")
        if cmd.flag("--advertise-url") != cmd.url:
            raise RuntimeError(f"{pod.name}: advertises {cmd.flag('--advertise-url')!r}, not {cmd.url!r}")
        return cmd

    def _volumes(
        self, pod: PodInfo, spec: Mapping[str, Any], container: Mapping[str, Any], sts: Mapping[str, Any]
    ) -> tuple[dict[str, Path], str | None, Path | None]:
        """Local stand-ins for the container's mounts: mount path -> directory; the data claim."""
        pod_dir = self.base_dir / "pods" / pod.name
        mounts: dict[str, Path] = {}
        claim: str | None = None
        data_dir: Path | None = None
        claim_templates = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            name, path = mount["name"], mount["mountPath"]
            if name in claim_templates:
                claim = f"{name}-{pod.name}"
                data_dir = self.base_dir / "claims" / claim
                data_dir.mkdir(parents=True, exist_ok=True)
                mounts[path] = data_dir
            elif "secret" in volumes.get(name, {}):
                secret_dir = pod_dir / f"secret-{name}"
                shutil.rmtree(secret_dir, ignore_errors=True)
                secret_dir.mkdir(parents=True)
                for key, value in pod.files.items():
                    (secret_dir / key).write_text(value)
                    (secret_dir / key).chmod(0o400)
                mounts[path] = secret_dir
            elif "emptyDir" in volumes.get(name, {}):
                empty = pod_dir / f"empty-{name}"
                shutil.rmtree(empty, ignore_errors=True)
                empty.mkdir(parents=True)
                mounts[path] = empty
            else:
                raise RuntimeError(f"{pod.name}: volume {name!r} has no local stand-in")
        return mounts, claim, data_dir

    async def _start(self, pod: PodInfo) -> None:
        cmd = await self.command(pod)
        if cmd.cluster_state == "existing":
            await self._check_not_targeted(cmd)
        incarnation = self._incarnations[pod.name] = self._incarnations.get(pod.name, 0) + 1
        log_path = self.base_dir / "logs" / f"{pod.name}.{incarnation}.log"
        proc = self.procs[pod.name] = NodeProcess(
            cmd, _spawn(cmd.argv, pod.name, log_path), log_path, incarnation
        )
        self._note(f"start {pod.name} node {cmd.node_id} pid {proc.pid} {cmd.cluster_state}")

    async def _check_not_targeted(self, cmd: PodCommand) -> None:
        """A node joining an existing cluster must not be the target of a reshape yet."""
        job = await self._admin_get("/v1/admin/reshape", exclude=cmd.pod)
        if not isinstance(job, dict):
            return
        target = job.get("target") or {}
        if job.get("state") == "running" and cmd.node_id in (target.get("nodes") or []):
            self.violations.append(
                f"{cmd.pod} started while reshape job {job.get('id')} already targets node {cmd.node_id}"
            )

    # --- stopping --------------------------------------------------------------------

    async def _remove(self, name: str) -> None:
        proc = self.procs[name]
        sts = await self.kube.get(STATEFULSETS.path(self.namespace, proc.cmd.statefulset))
        scaled_down = sts is not None and proc.cmd.ordinal >= int(sts["spec"].get("replicas", 0))
        view: dict[str, Any] | None = None
        if scaled_down:
            answer = await self._admin_get(f"/v1/admin/nodes/{proc.node_id}", exclude=name)
            view = answer if isinstance(answer, dict) else None
            if view is None:
                self.violations.append(f"{name} removed; the cluster could not say whether it was drained")
            elif view.get("status") == 404:
                pass  # never a member (it had not joined yet): it holds nothing
            elif not (view.get("drained") and view.get("reachable") and view.get("local_replicas") == 0):
                self.violations.append(f"{name} removed while not drained: {view}")
        code = await _stop(proc)
        released = False
        claim, data_dir = proc.cmd.claim, proc.cmd.data_dir
        if claim is not None and data_dir is not None:
            # A deleted claim (whenScaled: Delete) takes its volume along: the ordinal comes back empty.
            released = await self.kube.get(PVCS.path(self.namespace, claim)) is None
            if released:
                _set_aside(data_dir, self.base_dir / "released" / f"{claim}.{proc.incarnation}")
        del self.procs[name]
        self.removals.append(Removal(name, proc.node_id, scaled_down, view, code, released))
        drained = None if view is None else view.get("drained")
        self._note(
            f"stop {name} node {proc.node_id} pid {proc.pid} exit {code}"
            + (f" scaled-down drained={drained}" if scaled_down else "")
            + (" claim-released" if released else "")
        )

    async def _admin_get(self, path: str, *, exclude: str, timeout: float = 15.0) -> Any:
        """An admin call through any running node but ``exclude``; None if none answers in time.

        Retries because the meta group may be changing leaders just then (a
        503); a 404 is an answer (``{"status": 404}``).
        """
        assert self._session is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for proc in sorted(self.procs.values(), key=lambda p: p.cmd.ordinal):
                if proc.pod == exclude or not proc.alive():
                    continue
                token = proc.cmd.token
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                try:
                    async with self._session.get(
                        proc.url + path, headers=headers, timeout=aiohttp.ClientTimeout(total=3.0)
                    ) as resp:
                        if resp.status == 404:
                            return {"status": 404}
                        if resp.status == 200:
                            return await resp.json()
                except (aiohttp.ClientError, TimeoutError):
                    pass
            if loop.time() > deadline:
                return None
            await asyncio.sleep(0.2)


def in_mounts(value: str, mounts: Mapping[str, Path]) -> str:
    """A path inside a container (``/data/x``, ``/backup/nightly/``) on its volume's stand-in directory.

    The longest mount path wins, as in the container; a trailing ``/`` (a
    directory argument) is kept. Anything outside every mount is left as it is.
    """
    for path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == path or value.startswith(path.rstrip("/") + "/"):
            mapped = str(local / value[len(path) :].lstrip("/"))
            return mapped + "/" if value.endswith("/") else mapped
    return value


def _spawn(argv: list[str], pod: str, log_path: Path) -> subprocess.Popen[bytes]:
    # Nothing of the test process's own KVCLUSTER_* settings may leak into the node.
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env["POD_NAME"] = pod
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as logf:
        return subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)


def _set_aside(data_dir: Path, aside: Path) -> None:
    """Kept for a post-mortem rather than deleted, but never handed to a pod again."""
    aside.parent.mkdir(parents=True, exist_ok=True)
    data_dir.rename(aside)


async def _wait_exit(proc: NodeProcess, timeout: float) -> int | None:
    """Wait for the process to exit; SIGKILL it after ``timeout`` seconds."""
    try:
        return await asyncio.to_thread(proc.proc.wait, timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        return await asyncio.to_thread(proc.proc.wait, 10)


async def _stop(proc: NodeProcess) -> int | None:
    """SIGTERM, the pod's grace period, then SIGKILL: what the kubelet does."""
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    return await _wait_exit(proc, proc.cmd.grace)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _ordinal(pod: str) -> int:
    return int(pod.rsplit("-", 1)[1])
