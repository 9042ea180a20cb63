"""The worker pool of a pipeline: how many workers it has and keeping them
alive while they are needed.

``WorkerPool`` is what the master uses (``scale(n)`` / ``stop()``);
``LocalWorkerPool`` runs each worker as a local process
(``python -m services.pps.worker`` with ``PACH_PPS_PIPELINE`` and
``PACH_PPS_WORKER_ID`` added to this process's environment), restarting one
that dies while the pool wants it. A worker that keeps dying right after it
starts puts the pool in a crash loop: ``failure`` says why, and restarts back
off (up to ``max_backoff`` seconds). A Kubernetes pool can implement the
same interface with pods."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from libs.api.pps import pps_pb2 as pps
from libs.config import worker_env

_log = structlog.get_logger("pps.workers")

# A worker that exits within this many seconds of its start crashed.
QUICK_EXIT_S = 5.0
# This many quick exits in a row: the pool is in a crash loop.
CRASH_LOOP = 3


def worker_count(spec: pps.ParallelismSpec, cpus: int | None = None) -> int:
    """Pachyderm 1.7's parallelism: ``constant`` workers, or ``coefficient``
    times this machine's cores; at least 1."""
    if spec.constant:
        return max(1, int(spec.constant))
    if spec.coefficient:
        return max(1, int(spec.coefficient * (cpus or os.cpu_count() or 1)))
    return 1


class WorkerPool(Protocol):
    @property
    def size(self) -> int:
        """How many workers the pool keeps (0: stopped)."""
        ...

    @property
    def failure(self) -> str:
        """Why the workers cannot run ("" when they can)."""
        ...

    async def scale(self, count: int) -> None:
        """Keep ``count`` workers running (start or stop the difference)."""
        ...

    async def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after a grace period)."""
        ...


PoolFactory = Callable[[str], WorkerPool]


@dataclass
class _Worker:
    worker_id: str
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    watcher: asyncio.Task[None] | None = None


@dataclass
class LocalWorkerPool:
    pipeline: str
    command: Sequence[str] = (sys.executable, "-m", "services.pps.worker")
    env: Mapping[str, str] | None = None
    grace: float = 5.0
    max_backoff: float = 30.0
    _workers: dict[int, _Worker] = field(default_factory=dict)
    _quick_exits: int = 0
    _failure: str = ""
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def failure(self) -> str:
        return self._failure

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers.values() if w.proc is not None]

    async def scale(self, count: int) -> None:
        async with self._lock:
            for n in range(count):
                if n not in self._workers:
                    worker = _Worker(f"{self.pipeline}-{n}")
                    self._workers[n] = worker
                    worker.watcher = asyncio.create_task(
                        self._keep(n, worker), name=f"worker {worker.worker_id}"
                    )
            extra = [n for n in self._workers if n >= count]
            await asyncio.gather(*(self._retire(self._workers.pop(n)) for n in extra))

    async def stop(self) -> None:
        await self.scale(0)
        self._quick_exits = 0
        self._failure = ""

    async def _start(self, worker: _Worker) -> asyncio.subprocess.Process:
        # The workers' own NATS credential, never pps's.
        env = worker_env(os.environ if self.env is None else self.env)
        env["PACH_PPS_PIPELINE"] = self.pipeline
        env["PACH_PPS_WORKER_ID"] = worker.worker_id
        # The worker exits at once if this process is gone before it reads
        # its parent (it also gets SIGKILL from the kernel once it has).
        env["PACH_PPS_PARENT_PID"] = str(os.getpid())
        proc = await asyncio.create_subprocess_exec(*self.command, env=env)
        worker.proc, worker.started = proc, time.monotonic()
        _log.info("worker started", pipeline=self.pipeline, worker=worker.worker_id, pid=proc.pid)
        return proc

    async def _keep(self, n: int, worker: _Worker) -> None:
        """Run the worker; start it again when it dies while still wanted."""
        backoff = 0.5
        while self._workers.get(n) is worker:
            proc = await self._start(worker)
            code = await proc.wait()
            if self._workers.get(n) is not worker:
                return
            lived = time.monotonic() - worker.started
            _log.warning(
                "worker exited", pipeline=self.pipeline, worker=worker.worker_id, code=code
            )
            if lived < QUICK_EXIT_S:
                self._quick_exits += 1
                if self._quick_exits >= CRASH_LOOP:
                    self._failure = (
                        f"workers of pipeline {self.pipeline} keep exiting "
                        f"(last exit code {code} after {lived:.1f}s)"
                    )
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
            else:
                self._quick_exits, self._failure, backoff = 0, "", 0.5

    async def _retire(self, worker: _Worker) -> None:
        proc = worker.proc
        if worker.watcher is not None:
            worker.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.watcher
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        _log.info("worker stopped", pipeline=self.pipeline, worker=worker.worker_id)


def local_pools(env: Mapping[str, str] | None = None) -> PoolFactory:
    """A factory of local process pools sharing ``env`` (default: ours)."""

    def make(pipeline: str) -> WorkerPool:
        return LocalWorkerPool(pipeline, env=env)

    return make
