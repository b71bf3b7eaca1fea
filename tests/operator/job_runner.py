"""The Job controller and kubelet for backup and restore Jobs: their container runs for real.

The emulated API has no Job controller and nothing runs a Job's pod. This
runs the container of a Job's pod template as a real ``kvcluster`` process,
with the same kind of translation ``node_pods`` does for node pods, spelled
out here:

* the client Service URL (``http://demo.kv.svc:7000``) does not resolve
  here; it becomes the loopback URLs of the cluster's node processes;
* Secret volumes become directories of files holding the Secret's data,
  a PersistentVolumeClaim a directory per claim name (shared by every Job
  that mounts it, as a real volume is), and every argument or environment
  value under a mount path is rewritten to the stand-in directory;
* an emptyDir is a fresh directory per run; the one mounted at ``/tmp`` is
  handed to the process as ``TMPDIR`` (it cannot be the machine's /tmp);
* ``valueFrom.secretKeyRef`` environment values are read from the Secret;
* the termination message file (``/dev/termination-log``) is a file per run,
  whose content becomes the pod's ``state.terminated.message``.

Then the run is recorded in the API as the Job controller and kubelet would
leave it: the pod, terminated with its exit code and message, owned by the
Job; the Job, Complete or Failed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_pods import in_mounts

from kvoperator.kube import JOBS, PODS, SECRETS, KubeClient


@dataclass
class JobRun:
    name: str
    exit_code: int
    message: str
    stdout: str
    stderr: str


@dataclass
class JobRunner:
    kube: KubeClient
    namespace: str
    base_dir: Path
    service_urls: Mapping[str, list[str]]
    """Client Service URL -> the node URLs behind it."""

    async def _secret(self, name: str) -> dict[str, str]:
        body = await self.kube.get(SECRETS.path(self.namespace, name))
        if body is None:
            raise RuntimeError(f"Secret {name} does not exist")
        return {k: base64.b64decode(v).decode() for k, v in (body.get("data") or {}).items()}

    async def run(self, name: str, template: Mapping[str, Any], timeout: float = 120.0) -> JobRun:
        spec = template["spec"]
        (container,) = spec["containers"]
        run_dir = self.base_dir / "runs" / name
        run_dir.mkdir(parents=True)
        mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                folder = run_dir / f"secret-{mount['name']}"
                folder.mkdir()
                for key, value in (await self._secret(volume["secret"]["secretName"])).items():
                    (folder / key).write_text(value)
                mounts[mount["mountPath"]] = folder
            elif "persistentVolumeClaim" in volume:
                folder = self.base_dir / "claims" / volume["persistentVolumeClaim"]["claimName"]
                folder.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"]] = folder
            elif "emptyDir" in volume:
                folder = run_dir / f"empty-{mount['name']}"
                folder.mkdir()
                mounts[mount["mountPath"]] = folder
            else:
                raise RuntimeError(f"{name}: volume {mount['name']!r} has no local stand-in")
        message_file = run_dir / "termination-log"
        message_path = container.get("terminationMessagePath", "/dev/termination-log")

        def local(value: str) -> str:
            if value in self.service_urls:
                return ",".join(self.service_urls[value])
            if value == message_path:
                return str(message_file)
            return in_mounts(value, mounts)

        command = list(container["command"])
        if command[0] != "kvcluster":
            raise RuntimeError(f"{name}: unexpected container command {command!r}")
        argv = [sys.executable, "-m", "kvcluster", *(local(a) for a in command[1:]), "--quiet"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KVCLUSTER_", "AWS_"))}
        if "/tmp" in mounts:  # the pod's /tmp is its emptyDir; here the process finds it through TMPDIR
            env["TMPDIR"] = str(mounts["/tmp"])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = local(var["value"])
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                data = await self._secret(ref["name"])
                if ref["key"] in data:
                    env[var["name"]] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise RuntimeError(f"{name}: Secret {ref['name']} has no key {ref['key']}")
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()  # by pid, through the handle that started it
            await proc.wait()
            raise
        stdout, stderr = out.decode(), err.decode()
        message = message_file.read_text() if message_file.exists() else stderr[-4096:]
        return JobRun(name, proc.returncode or 0, message.strip(), stdout, stderr)

    async def record(
        self, run: JobRun, labels: Mapping[str, str], *, when: str, cronjob: Mapping[str, Any] | None = None
    ) -> None:
        """Leave the run in the API as the Job controller and the kubelet would.

        With ``cronjob``, the Job is created first, owned by it (a scheduled
        run); without, the Job already exists (the operator created it).
        """
        if cronjob is not None:
            owner = {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": cronjob["metadata"]["name"],
                "uid": cronjob["metadata"]["uid"],
                "controller": True,
            }
            job = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": run.name,
                    "namespace": self.namespace,
                    "labels": dict(labels),
                    "ownerReferences": [owner],
                },
                "spec": {},
            }
            await self.kube.create(JOBS.path(self.namespace), job)
        job_body = await self.kube.get(JOBS.path(self.namespace, run.name))
        assert job_body is not None
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{run.name}-run",
                "namespace": self.namespace,
                "labels": dict(labels),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": run.name,
                        "uid": job_body["metadata"]["uid"],
                    }
                ],
            },
            "spec": {"containers": [{"name": "backup", "image": "kvcluster:test"}]},
        }
        await self.kube.create(PODS.path(self.namespace), pod)
        state = {"terminated": {"exitCode": run.exit_code, "message": run.message, "finishedAt": when}}
        await self.kube.patch(
            PODS.path(self.namespace, pod["metadata"]["name"], "status"),
            {"status": {"containerStatuses": [{"name": "backup", "state": state}]}},
        )
        kind = "Complete" if run.exit_code == 0 else "Failed"
        status = {
            "startTime": when,
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": when}],
        }
        if kind == "Complete":
            status["completionTime"] = when
        await self.kube.patch(JOBS.path(self.namespace, run.name, "status"), {"status": status})
