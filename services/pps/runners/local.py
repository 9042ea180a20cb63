"""``LocalRunner``: run a datum's user code on this machine in bubblewrap.

The sandbox (``bwrap``) gets its own mount and pid namespaces:

- ``/`` is a tmpfs holding read-only binds of the host's top-level
  directories (and its top-level symlinks, such as ``/bin -> usr/bin``), so
  the user code sees this machine's file system, read-only. ``/proc``,
  ``/dev`` and a private, empty ``/tmp`` are the sandbox's own; ``/sys`` is
  the host's, read-only. Directories given as ``hide`` (the scratch root that
  holds other datums' files) appear empty.
- ``/pfs`` is the datum's scratch ``pfs`` directory: ``/pfs/out`` writable,
  every other entry (an input) read-only.
- The process tree dies with the worker (``--die-with-parent``), runs in a
  new session, and a timeout kills all of it (SIGKILL).

``transform.image`` is ignored here: the command runs with this machine's
programs. The environment is the worker's own (minus the object store's and
databases' credentials) with ``PATH`` starting with the directory of the
worker's Python, so ``python3`` in a pipeline spec is the cluster's Python
environment (the one with its packages installed); then the variables the
datum sets. An empty ``working_dir`` keeps the worker's current directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from libs.errors import FailedPrecondition, InvalidArgument
from services.pps.runners.base import LineSink, RunResult

# Top-level host directories the sandbox does not take from the host.
_OWN = frozenset({"proc", "dev", "tmp", "pfs"})
# Variables of the worker that user code does not get.
_SECRET_PREFIXES = ("PACH_S3_", "AWS_")
_SECRET_NAMES = frozenset({"MONGODB_URI"})
MAX_LINE = 64 << 10  # longer output lines are cut into pieces of this size
_READ = 64 << 10
_DRAIN_AFTER_EXIT_S = 5.0  # output still arriving after the process ended


def find_bwrap() -> str:
    """The bubblewrap binary; FailedPrecondition if it is not installed."""
    path = shutil.which("bwrap")
    if path is None:
        raise FailedPrecondition(
            "bubblewrap (bwrap) is not installed: the local runner needs it to run pipeline code"
        )
    return path


def base_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment as user code sees it: secrets removed and the
    directory of this Python first on PATH."""
    src = os.environ if env is None else env
    out = {
        k: v
        for k, v in src.items()
        if k not in _SECRET_NAMES and not k.startswith(_SECRET_PREFIXES)
    }
    py_dir = str(Path(sys.executable).parent)
    rest = [p for p in out.get("PATH", os.defpath).split(os.pathsep) if p and p != py_dir]
    out["PATH"] = os.pathsep.join([py_dir, *rest])
    return out


def root_args(hide: Sequence[Path] = ()) -> list[str]:
    """bwrap arguments building the read-only view of the host's ``/``."""
    args = ["--tmpfs", "/"]
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in _OWN:
                continue
            path = "/" + entry.name
            if entry.is_symlink():
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    # The cluster's Python environment stays visible even when it lives
    # under /tmp (a checkout there): `python3` in a spec is that Python.
    bound = python_dirs_in_tmp()
    for d in bound:
        args += ["--ro-bind", str(d), str(d)]
    for h in hide:
        p = Path(h).absolute()
        visible = p.parts[1:2] and (
            p.parts[1] not in _OWN or any(p.is_relative_to(d) for d in bound)
        )
        if visible and p.is_dir():
            args += ["--tmpfs", str(p)]
    return args


def python_dirs_in_tmp() -> list[Path]:
    """The directories of this Python (the virtualenv, and the installation
    it was made from) that lie under /tmp, outermost first."""
    found: list[Path] = []
    for d in sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}):
        if d.is_relative_to("/tmp") and not any(d.is_relative_to(f) for f in found):
            found.append(d)
    return found


class LocalRunner:
    """Runs commands in bubblewrap sandboxes on this machine."""

    def __init__(self, *, hide: Sequence[Path] = (), bwrap: str | None = None) -> None:
        self._bwrap = bwrap or find_bwrap()
        self._root = root_args(hide)
        self._env = base_env()

    def sandbox_args(
        self, pfs_dir: Path, working_dir: str, extra_ro_binds: Sequence[tuple[Path, str]] = ()
    ) -> list[str]:
        args = [self._bwrap, *self._root, "--bind", str(pfs_dir), "/pfs"]
        for host, inside in extra_ro_binds:
            args += ["--ro-bind", str(host), inside]
        with os.scandir(pfs_dir) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name != "out" and entry.is_dir(follow_symlinks=False):
                    args += ["--ro-bind", entry.path, f"/pfs/{entry.name}"]
        args += ["--unshare-pid", "--die-with-parent", "--new-session"]
        if working_dir:
            args += ["--chdir", working_dir]
        return args

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
    ) -> RunResult:
        if not cmd:
            raise InvalidArgument("transform.cmd is empty: nothing to run")
        if timeout is not None and timeout <= 0:
            raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout}", timeout=timeout)
        full_env = {**self._env, **env}
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *self.sandbox_args(pfs_dir, working_dir, extra_ro_binds),
            "--",
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        io = [
            asyncio.create_task(_feed(proc.stdin, stdin)),
            asyncio.create_task(_pump(proc.stdout, on_line)),
            asyncio.create_task(_pump(proc.stderr, on_line)),
        ]
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
                _kill(proc.pid)
                await proc.wait()
            seconds = time.monotonic() - started
            done, pending = await asyncio.wait(io, timeout=_DRAIN_AFTER_EXIT_S)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()  # an error of on_line surfaces here
        finally:
            if proc.returncode is None:  # cancelled or failed: leave nothing behind
                _kill(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
            for task in io:
                task.cancel()
            await asyncio.gather(*io, return_exceptions=True)
        assert proc.returncode is not None
        return RunResult(returncode=proc.returncode, timed_out=timed_out, seconds=seconds)

    async def spawn_floor(self, runs: int = 5) -> float:
        """Median seconds to start and end a sandbox running ``true``."""

        async def ignore(_: str) -> None:
            return None

        times: list[float] = []
        with tempfile.TemporaryDirectory(prefix="pps-floor-") as tmp:
            pfs = Path(tmp)
            (pfs / "out").mkdir()
            for _ in range(max(1, runs)):
                result = await self.run(
                    ["true"],
                    pfs_dir=pfs,
                    stdin=b"",
                    env={},
                    working_dir="/",
                    timeout=10.0,
                    on_line=ignore,
                )
                times.append(result.seconds)
        return statistics.median(times)


def _kill(pid: int) -> None:
    """SIGKILL the sandbox's process group (bwrap; its children die with it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    # Code that does not read all of its stdin is fine (as with 1.7's worker).
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        if data:
            pipe.write(data)
            await pipe.drain()
        pipe.close()
        await pipe.wait_closed()


async def _pump(stream: asyncio.StreamReader, on_line: LineSink) -> None:
    """Hand each output line (without its newline) to ``on_line``."""
    buf = bytearray()
    while block := await stream.read(_READ):
        buf += block
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            # A long line that arrived whole is cut like one still coming.
            for cut in range(start, max(end, start + 1), MAX_LINE):
                await on_line(_text(buf[cut : min(cut + MAX_LINE, end)]))
            start = end + 1
        del buf[:start]
        while len(buf) >= MAX_LINE:
            await on_line(_text(buf[:MAX_LINE]))
            del buf[:MAX_LINE]
    if buf:
        await on_line(_text(buf))


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
