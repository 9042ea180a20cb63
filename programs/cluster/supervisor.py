"""Supervised child processes: start, restart with backoff when they die,
stop with SIGTERM then SIGKILL.

``ServiceProcess`` runs ``python -m services.<name>``; ``NatsProcess``
wraps ``programs.cluster.natsserver.NatsServer`` (restarted on the same port and store,
so clients reconnect and JetStream state survives).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import signal
import sys
import time
from collections.abc import Callable, Mapping

import structlog

from programs.cluster.natsserver import NatsServer

_log = structlog.get_logger("cluster")

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0
HEALTHY_AFTER_S = 10.0  # a process that lived this long restarts without delay
NATS_POLL_S = 1.0  # how often the launcher looks whether nats-server still runs

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Backoff:
    def __init__(self) -> None:
        self.failures = 0
        self.started = time.monotonic()

    def next_delay(self) -> float:
        if time.monotonic() - self.started >= HEALTHY_AFTER_S:
            self.failures = 0
        delay = min(MIN_BACKOFF_S * float(2**self.failures), MAX_BACKOFF_S)
        self.failures += 1
        return delay


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class ServiceProcess:
    def __init__(
        self, service: str, replica: int, env: Mapping[str, str], on_change: Callable[[], None]
    ) -> None:
        self.service = service
        self.replica = replica
        self.name = f"{service}-{replica}"
        self.env = {**env, "PACH_REPLICA": str(replica)}
        self.restarts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._on_change = on_change
        self._backoff = _Backoff()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{self.service}",
            env=self.env,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it decides the order
            preexec_fn=_die_with_parent,
        )
        self._backoff.started = time.monotonic()
        _log.info("process started", process=self.name, pid=self.proc.pid)
        self._on_change()

    async def supervise(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            assert self.proc is not None
            code = await self.proc.wait()
            if stopping.is_set():
                return
            delay = self._backoff.next_delay()
            _log.warning(
                "process died; restarting",
                process=self.name,
                pid=self.proc.pid,
                exit=describe_exit(code),
                restart_in_s=delay,
            )
            self._on_change()
            await _sleep_unless(stopping, delay)
            if stopping.is_set():
                return
            self.restarts += 1
            await self.start()

    async def stop(self, timeout: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            _log.warning("process did not stop; killing", process=self.name, pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        _log.info("process stopped", process=self.name, exit=describe_exit(proc.returncode))


class NatsProcess:
    def __init__(
        self, server: NatsServer, on_change: Callable[[], None], name: str = "nats-server"
    ) -> None:
        self.name = name
        self.server = server
        self.restarts = 0
        self._on_change = on_change
        self._backoff = _Backoff()

    @property
    def pid(self) -> int | None:
        proc = self.server.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)
        self._backoff.started = time.monotonic()
        _log.info("process started", process=self.name, pid=self.pid, url=self.server.url)
        self._on_change()

    async def supervise(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            proc = self.server.proc
            code = proc.poll() if proc is not None else -1
            if code is None:
                await _sleep_unless(stopping, NATS_POLL_S)
                continue
            delay = self._backoff.next_delay()
            _log.warning(
                "process died; restarting",
                process=self.name,
                exit=describe_exit(code),
                restart_in_s=delay,
            )
            self.server.proc = None
            self._on_change()
            await _sleep_unless(stopping, delay)
            if stopping.is_set():
                return
            self.restarts += 1
            try:
                await self.start()
            except Exception as exc:  # e.g. the port is briefly taken; try again
                _log.error("nats-server restart failed", error=str(exc))

    async def stop(self, timeout: float) -> None:
        if self.pid is not None:
            await asyncio.to_thread(self.server.stop, timeout)
            _log.info("process stopped", process=self.name)


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
