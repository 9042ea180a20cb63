"""Warm sandboxes: one bubblewrap sandbox that runs a worker slot's datums
one after another, instead of a new sandbox per datum.

The sandbox is the one ``LocalRunner`` builds for a datum (same identity,
namespaces, root, binds and limits), except that its command is a small
driver (``DRIVER``, run by the cluster's Python with ``-I -S``) and its
``/tmp`` is a directory of the slot that the worker empties between datums.
The slot's ``pfs`` directory keeps its entries (each input's directory and
``out``) from datum to datum, so the binds stay valid while the worker lays
out each datum's files inside them.

For each datum the worker sends the driver, over a Unix socket, the
command, environment, working directory and three pipe ends (the datum's
stdin, stdout, stderr). The driver forks, execs the command, waits for it,
then SIGKILLs every other process it can signal in the sandbox (``kill(-1)``:
whatever the datum left running), removes the System V IPC objects left in
the sandbox's IPC namespace, and answers with the exit code (128 + N for
signal N, as bubblewrap reports it; 1 when the command cannot start).
Before the next datum the worker checks, from the host, that only the sandbox's init and
the driver are alive in it; anything else ends the sandbox. The driver is not
dumpable (``PR_SET_DUMPABLE`` 0): user code cannot trace it or open its
descriptors. A timeout, a restart, a hit limit, a driver that is gone, or a
change of what the sandbox binds (another set of inputs, ``transform.user``,
secrets, limits) ends the sandbox; the next datum starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from libs.errors import FailedPrecondition
from services.pps.domain.resources import Limits
from services.pps.runners.base import LineSink, RunResult
from services.pps.runners.cgroups import RunGroup
from services.pps.runners.pipes import DRAIN_AFTER_EXIT_S, feed, pump

if TYPE_CHECKING:
    from services.pps.runners.local import _Child

_READY_WAIT_S = 30.0
WARM_MIN_MEMORY = 64 << 20  # under this memory limit, a sandbox per datum
_LEFTOVER_WAIT_S = 0.5
_MAX_REQUEST = 1 << 20

# Runs inside the sandbox as the sandbox's user. argv[1]: the control socket.
DRIVER = r"""
import ctypes, json, os, resource, signal, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(4, 0, 0, 0, 0)
resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
ctl = socket.socket(fileno=int(sys.argv[1]))
os.set_inheritable(ctl.fileno(), False)
for name in os.listdir("/proc/self/fd"):
    if int(name) > 2 and int(name) != ctl.fileno():
        try:
            os.close(int(name))
        except OSError:
            pass
def clear_ipc():
    for kind in ("shm", "sem", "msg"):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            ident = int(row.split()[1])
            if kind == "shm":
                libc.shmctl(ident, 0, None)
            elif kind == "sem":
                libc.semctl(ident, 0, 0)
            else:
                libc.msgctl(ident, 0, None)
ctl.send(b"ready")
while True:
    msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 3)
    if not msg:
        break
    req = json.loads(msg)
    argv = req["argv"]
    pid = 0
    try:
        os.chdir(req["cwd"])
        acts = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(fds)]
        acts += [(os.POSIX_SPAWN_CLOSE, fd) for fd in fds if fd > 2]
        pid = os.posix_spawnp(argv[0], argv, req["env"], file_actions=acts, setsid=True,
                              setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT))
    except Exception as err:
        os.write(fds[2], ("sandbox: execvp %s: %s\n" % (argv[0], err)).encode())
        rc = 1
    for fd in fds:
        os.close(fd)
    if pid:
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if rc < 0:
            rc = 128 - rc
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    clear_ipc()
    ctl.send(json.dumps({"rc": rc}).encode())
"""


class WarmUnavailable(FailedPrecondition):
    """The warm sandbox did not start (the datum runs in one of its own)."""


@dataclass(frozen=True)
class SandboxKey:
    """What a sandbox was made with; a datum needing anything else gets a
    new one. ``entries``: the slot's ``/pfs`` directories, by name and inode."""

    pfs_dir: Path
    entries: tuple[tuple[str, int], ...]
    uid: int
    gid: int
    binds: tuple[tuple[str, str], ...]
    limits: Limits


def pfs_entries(pfs_dir: Path) -> tuple[tuple[str, int], ...] | None:
    """The directories of ``pfs_dir`` (name, inode); None when it holds
    anything else (such a ``/pfs`` runs in a sandbox of its own)."""
    out: list[tuple[str, int]] = []
    with os.scandir(pfs_dir) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                return None
            out.append((entry.name, entry.inode()))
    return tuple(sorted(out))


def clear_dir(path: Path) -> None:
    """Remove what is in ``path`` (not ``path`` itself)."""
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


async def _clear(path: Path) -> None:
    """``clear_dir`` in a thread, unless there is nothing to clear."""
    with os.scandir(path) as entries:
        if next(entries, None) is None:
            return
    await asyncio.to_thread(clear_dir, path)


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (host pids)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            found += [int(x) for x in text.split()]
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` can still run code (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X", "x")


class WarmSandbox:
    """One running sandbox and its driver (see the module docstring)."""

    def __init__(
        self,
        key: SandboxKey,
        child: _Child,
        ctl: socket.socket,
        group: RunGroup | None,
        limits: Limits,
        tmp_dir: Path,
        limit_reason: Callable[[RunGroup, Limits], str],
        kill: Callable[[int, RunGroup | None], None],
    ) -> None:
        self.key = key
        self._child = child
        self._ctl = ctl
        self._group = group
        self._limits = limits
        self._tmp = tmp_dir
        self._limit_reason = limit_reason
        self._kill = kill
        self._lock = asyncio.Lock()
        self._driver = 0
        self._init = 0
        self.closed = False
        self.datums = 0
        self._output: list[str] = []  # the driver's own output (for a failure's reason)

    async def wait_ready(self) -> None:
        """Wait for the driver's hello; WarmUnavailable when it never comes."""

        async def keep(line: str) -> None:
            self._output = [*self._output[-9:], line]

        self._pumps = [
            asyncio.create_task(pump(self._child.stdout, self._child.stderr, on_line=keep)),
        ]
        with contextlib.suppress(OSError):
            self._child.stdin.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(_READY_WAIT_S):
                hello = await loop.sock_recv(self._ctl, 64)
        except TimeoutError:
            hello = b""
        if hello != b"ready":
            await self.close()
            said = "; ".join(self._output) or "no output"
            raise WarmUnavailable(f"the warm sandbox did not start ({said})")
        inits = _children(self._child.pid)
        self._init = inits[0] if len(inits) == 1 else 0
        drivers = _children(self._init) if self._init else []
        self._driver = drivers[0] if len(drivers) == 1 else 0
        if not self._driver:
            await self.close()
            raise WarmUnavailable("the warm sandbox's driver is not where it should be")

    def clean(self) -> bool:
        """Whether only the sandbox's init and driver are alive in it."""
        others = [p for p in _children(self._init) if p != self._driver and _alive(p)]
        return not others and not any(_alive(p) for p in _children(self._driver))

    async def run(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str],
        working_dir: str,
        stdin: bytes,
        timeout: float | None,
        on_line: LineSink,
    ) -> RunResult:
        async with self._lock:
            loop = asyncio.get_running_loop()
            await _clear(self._tmp)
            r_in, w_in = os.pipe()
            r_out, w_out = os.pipe()
            r_err, w_err = os.pipe()
            ends = [r_in, w_out, w_err]
            try:
                request = json.dumps(
                    {"argv": list(cmd), "env": dict(env), "cwd": working_dir or "/pfs"}
                ).encode()
                if len(request) > _MAX_REQUEST:
                    raise FailedPrecondition("the datum's command and environment are too large")
                started = time.monotonic()
                socket.send_fds(self._ctl, [request], ends)
            except BaseException:
                for fd in (w_in, r_out, r_err):
                    os.close(fd)
                raise
            finally:
                for fd in ends:
                    os.close(fd)
            io = [
                asyncio.create_task(feed(os.fdopen(w_in, "wb", 0), stdin)),
                asyncio.create_task(
                    pump(os.fdopen(r_out, "rb", 0), os.fdopen(r_err, "rb", 0), on_line=on_line)
                ),
            ]
            timed_out = False
            returncode: int | None = None
            reason = ""
            try:
                try:
                    async with asyncio.timeout(timeout):
                        answer = await loop.sock_recv(self._ctl, 4096)
                    if answer:
                        returncode = int(json.loads(answer)["rc"])
                    else:
                        reason = "the sandbox ended before the datum did"
                except TimeoutError:
                    timed_out = True
                seconds = time.monotonic() - started
                if returncode is None:
                    await self.close()
                    returncode = -signal.SIGKILL
                elif not await self._settled():
                    await self.close()  # something outlived the datum: no reuse
                if self._group is not None and returncode != 0:
                    limit = self._limit_reason(self._group, self._limits)
                    if limit:
                        reason = limit
                        await self.close()  # its counters stay: the next gets a new group
                done, pending = await asyncio.wait(io, timeout=DRAIN_AFTER_EXIT_S)
                for task in pending:
                    task.cancel()
                for task in done:
                    task.result()
            except BaseException:
                await self.close()
                raise
            finally:
                for task in io:
                    task.cancel()
                await asyncio.gather(*io, return_exceptions=True)
                if not self.closed:
                    await _clear(self._tmp)
            self.datums += 1
            return RunResult(
                returncode=returncode, timed_out=timed_out, seconds=seconds, reason=reason
            )

    async def _settled(self) -> bool:
        """Wait (briefly) until only init and the driver are left."""
        deadline = time.monotonic() + _LEFTOVER_WAIT_S
        while not self.clean():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        """End the sandbox and everything in it."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self._ctl.close()
        self._kill(self._child.pid, self._group)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.shield(self._child.wait())
        for task in getattr(self, "_pumps", []):
            task.cancel()
        if self._group is not None:
            await asyncio.to_thread(self._group.remove)

    def close_now(self) -> None:
        """End the sandbox without waiting (the runner's close)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self._ctl.close()
        self._kill(self._child.pid, self._group)
        if self._group is not None:
            self._group.remove()


__all__ = [
    "DRIVER",
    "WARM_MIN_MEMORY",
    "SandboxKey",
    "WarmSandbox",
    "WarmUnavailable",
    "clear_dir",
    "pfs_entries",
]
