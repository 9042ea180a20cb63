"""Pipeline workers as Kubernetes pods.

``KubernetesWorkerPool`` is the ``WorkerPool`` (services/pps/app/workers.py)
pps uses when ``PACH_PPS_RUNNER=kubernetes``: one ReplicationController per
pipeline version (``libs/deploy/workers.py``), scaled to the pipeline's
parallelism, scaled to 0 for standby or stop and back, replaced by the next
version's on update, deleted with the pipeline.

``PodRunner`` is the ``Runner`` the worker container uses inside such a pod
(``PACH_PPS_RUNNER=pod``): it hands each datum to the datum driver in the
user's container through files in the shared ``/pach`` volume
(docs/decisions/0025-workers-in-user-images.md).

``python -m services.pps.runners.kubernetes install-driver <dir>`` is the
pod's init container: it copies the driver script into ``<dir>``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from libs.api.pps import pps_pb2 as pps
from libs.deploy import kube, workers
from libs.errors import InvalidArgument
from services.pps.domain.resources import Limits
from services.pps.runners.base import LineSink, RunResult

_log = structlog.get_logger("pps.kubernetes")
DRIVER_SOURCE = Path(__file__).with_name("datum-driver.sh")

DELETE_TRIES = 6
_REMOVALS: set[asyncio.Task[None]] = set()  # removals that outlive a cancelled master
# A container waiting for one of these will not start by itself.
BROKEN_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)

# (version, spec) of a pipeline, or None once it is deleted.
SpecLookup = Callable[[str], Awaitable[tuple[int, pps.CreatePipelineRequest] | None]]


@dataclass(frozen=True)
class KubernetesRunnerConfig:
    """``PACH_PPS_NAMESPACE``, ``PACH_PPS_WORKER_IMAGE``,
    ``PACH_PPS_IMAGE_PULL_SECRET`` and ``PACH_KUBECONFIG`` (empty: the pod's
    service account)."""

    namespace: str = "default"
    image: str = "pachyderm-es:latest"
    image_pull_secret: str = ""
    kubeconfig: str = ""
    objects_host_path: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KubernetesRunnerConfig:
        return cls(
            namespace=env.get("PACH_PPS_NAMESPACE", "default") or "default",
            image=env.get("PACH_PPS_WORKER_IMAGE", "pachyderm-es:latest"),
            image_pull_secret=env.get("PACH_PPS_IMAGE_PULL_SECRET", ""),
            kubeconfig=env.get("PACH_KUBECONFIG", ""),
            objects_host_path=env.get("PACH_PPS_OBJECTS_HOST_PATH", "")
            if env.get("PACH_OBJECT_BACKEND", "local") == "local"
            else "",
        )

    def worker_options(self) -> workers.WorkerOptions:
        return workers.WorkerOptions(
            namespace=self.namespace,
            image=self.image,
            image_pull_secret=self.image_pull_secret,
            objects_host_path=self.objects_host_path,
        )


@dataclass
class KubernetesWorkerPool:
    pipeline: str
    kube: kube.Kube
    spec_of: SpecLookup
    options: workers.WorkerOptions = field(default_factory=workers.WorkerOptions)
    # How often an unchanged pool still reads its controller back (one
    # deleted by hand is made again) and its pods' states (``failure``).
    recheck_s: float = 5.0
    _size: int = 0
    _applied: tuple[int, int] | None = None  # (version, replicas) last made so
    _checked: float = 0.0
    _failure: str = ""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        return self._size

    @property
    def failure(self) -> str:
        return self._failure

    async def scale(self, count: int) -> None:
        async with self._lock:
            found = await self.spec_of(self.pipeline)
            if found is None:
                await self._delete_all()
                return
            version, spec = found
            fresh = time.monotonic() - self._checked < self.recheck_s
            if self._applied == (version, count) and fresh:
                return
            try:
                objs = workers.worker_objects(self.pipeline, version, spec, self.options, count)
            except InvalidArgument as exc:
                self._failure = str(exc)
                return
            ns = self.options.namespace
            name = objs[0]["metadata"]["name"]
            await self._delete_all(keep=name)
            existing = await self.kube.get("ReplicationController", ns, name)
            if existing is None:
                for obj in objs:
                    await self.kube.apply(obj)
                _log.info(
                    "workers created", pipeline=self.pipeline, controller=name, replicas=count
                )
            elif int((existing.get("spec") or {}).get("replicas", -1)) != count:
                await self.kube.patch(
                    "ReplicationController", ns, name, dict(workers.scale_patch(count))
                )
                _log.info("workers scaled", pipeline=self.pipeline, controller=name, replicas=count)
            self._applied, self._size = (version, count), count
            self._failure = await self._pod_failure(name) if count else ""
            self._checked = time.monotonic()

    async def _pod_failure(self, controller: str) -> str:
        """Why the controller's pods cannot run ("" when nothing says so):
        an image that cannot be pulled, a container crash-looping, a
        missing Secret or ConfigMap."""
        for pod in await self.kube.list("Pod", self.options.namespace, f"app={controller}"):
            status = pod.get("status") or {}
            containers = [
                *(status.get("initContainerStatuses") or []),
                *(status.get("containerStatuses") or []),
            ]
            for c in containers:
                waiting = (c.get("state") or {}).get("waiting") or {}
                reason = waiting.get("reason", "")
                if reason in BROKEN_REASONS:
                    message = waiting.get("message", "")
                    detail = f": {message}" if message else ""
                    return (
                        f"workers of pipeline {self.pipeline} cannot run: container "
                        f"{c.get('name', '?')} of pod {pod['metadata']['name']} is "
                        f"{reason}{detail}"
                    )
        return ""

    async def stop(self) -> None:
        """Scale to 0 (standby, stop); remove everything once the pipeline
        is deleted."""
        gone = await self.spec_of(self.pipeline) is None
        if not gone:
            await self.scale(0)
            return
        # The master is ending for good and is often cancelled meanwhile (the
        # supervisor drops a deleted pipeline's master): the removal runs on
        # in its own task, retried, so a cancel cannot leave pods behind.
        task = asyncio.create_task(self._remove(), name=f"remove workers {self.pipeline}")
        _REMOVALS.add(task)
        task.add_done_callback(_REMOVALS.discard)
        await asyncio.shield(task)

    async def _remove(self) -> None:
        delay = 0.5
        for attempt in range(1, DELETE_TRIES + 1):
            try:
                async with self._lock:
                    await self._delete_all()
                return
            except Exception as exc:
                if attempt == DELETE_TRIES:
                    _log.error("removing workers failed", pipeline=self.pipeline, error=repr(exc))
                    return
                _log.warning(
                    "removing workers failed, retrying", pipeline=self.pipeline, error=repr(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)

    async def _delete_all(self, keep: str = "") -> None:
        ns = self.options.namespace
        sel = workers.selector(self.pipeline)
        for kind in ("ReplicationController", "Service"):
            for obj in await self.kube.list(kind, ns, sel):
                name = obj["metadata"]["name"]
                if name != keep and await self.kube.delete(kind, ns, name):
                    _log.info("workers removed", pipeline=self.pipeline, kind=kind, name=name)
        if not keep:
            self._applied, self._size = None, 0


def kubernetes_pools(
    api: kube.Kube, spec_of: SpecLookup, cfg: KubernetesRunnerConfig
) -> Callable[[str], KubernetesWorkerPool]:
    """The pool factory pps uses with ``PACH_PPS_RUNNER=kubernetes``."""

    def make(pipeline: str) -> KubernetesWorkerPool:
        return KubernetesWorkerPool(pipeline, api, spec_of, cfg.worker_options())

    return make


class PodRunner:
    """Runs each datum's command in the user's container, through the datum
    driver (``datum-driver.sh``): the datum's ``pfs`` directory's entries
    are moved into ``pfs_root`` (the user container's ``/pfs``) for the run
    and back after it."""

    def __init__(self, driver_dir: Path, pfs_root: Path) -> None:
        self.driver_dir = driver_dir
        self.pfs_root = pfs_root
        self._n = 0
        self._lock = asyncio.Lock()

    async def run(
        self,
        cmd: Sequence[str],
        *,
        pfs_dir: Path,
        stdin: bytes,
        env: Mapping[str, str],
        working_dir: str,
        timeout: float | None,
        on_line: LineSink,
        extra_ro_binds: Sequence[tuple[Path, str]] = (),
        user: str = "",
        limits: Limits | None = None,
        warm: bool = False,
    ) -> RunResult:
        # In a pod the user container's own securityContext and resources
        # (set from the pipeline's spec by the pod template,
        # libs/deploy/workers.py) are the uid and the limits.
        del user, limits, warm  # the pod's driver is always warm
        for text in (*cmd, *env.keys(), *env.values(), working_dir):
            if "\n" in text or "\0" in text:
                raise InvalidArgument("a command, env var or working dir with a newline")
        async with self._lock:  # one datum at a time per pod
            moved = await asyncio.to_thread(self._move_in, pfs_dir)
            try:
                return await self._run(cmd, stdin, env, working_dir, timeout, on_line)
            finally:
                await asyncio.to_thread(self._move_back, pfs_dir, moved)

    def give_out(self, out: Path) -> None:
        """The user container may run as any uid: ``out`` and what is in it
        become writable by all (the shared volume is the pod's alone)."""
        for path in [out, *out.rglob("*")]:
            if not path.is_symlink():
                wanted = 0o777 if path.is_dir() else 0o666
                path.chmod(path.stat().st_mode | wanted)

    def sees(self, path: Path) -> bool:
        """Host files are the worker container's, never the user's: a
        symlink out of ``/pfs`` is never followed."""
        del path
        return False

    def close(self) -> None:
        """Nothing to release (the pod's volumes go with the pod)."""

    def _move_in(self, pfs_dir: Path) -> list[str]:
        """The datum's entries into the user container's ``/pfs`` (renames:
        one volume, nothing copied)."""
        self.driver_dir.mkdir(parents=True, exist_ok=True)
        self.pfs_root.mkdir(parents=True, exist_ok=True)
        moved = [p.name for p in pfs_dir.iterdir()]
        for entry in moved:
            (pfs_dir / entry).rename(self.pfs_root / entry)
        return moved

    def _move_back(self, pfs_dir: Path, moved: list[str]) -> None:
        for entry in moved:
            with contextlib.suppress(FileNotFoundError):
                (self.pfs_root / entry).rename(pfs_dir / entry)

    async def _run(
        self,
        cmd: Sequence[str],
        stdin: bytes,
        env: Mapping[str, str],
        working_dir: str,
        timeout: float | None,
        on_line: LineSink,
    ) -> RunResult:
        req = self.driver_dir / f"req-{self._n}"
        tmp = self.driver_dir / f".tmp-{self._n}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "argv").write_text("".join(f"{a}\n" for a in cmd))
        (tmp / "env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        (tmp / "cwd").write_text(working_dir + "\n")
        (tmp / "stdin").write_bytes(stdin)
        tmp.rename(req)
        self._n += 1
        started = time.monotonic()
        timed_out = False
        offset, pending = 0, b""
        out = req / "out"
        while True:
            done = (req / "rc").exists()
            if out.exists():
                with out.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    await on_line(line.decode(errors="replace"))
            if done:
                break
            if timeout is not None and not timed_out and time.monotonic() - started > timeout:
                (req / "kill").touch()
                timed_out = True
            await asyncio.sleep(0.05)
        if pending:
            await on_line(pending.decode(errors="replace"))
        code = int((req / "rc").read_text().strip() or "1")
        shutil.rmtree(req, ignore_errors=True)
        if timed_out and code == 137:
            code = -9
        return RunResult(code, timed_out, time.monotonic() - started)


def install_driver(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    dest = target / DRIVER_SOURCE.name
    shutil.copyfile(DRIVER_SOURCE, dest)
    os.chmod(dest, 0o555)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "install-driver":
        print(
            "usage: python -m services.pps.runners.kubernetes install-driver <dir>", file=sys.stderr
        )
        return 2
    install_driver(Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
