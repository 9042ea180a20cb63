"""The runner interface: run one command over one datum's ``/pfs``.

A runner gets the datum's scratch ``pfs`` directory (inputs under
``<pfs_dir>/<input>``, the output under ``<pfs_dir>/out``) and makes it the
command's ``/pfs``; inputs are read-only, ``/pfs/out`` is writable. Output
lines (stdout and stderr alike) go to ``on_line`` as they come.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.pps.domain.resources import Limits

LineSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended: the exit code (-N: killed by signal N), whether the
    timeout killed it, its wall time in seconds, and why the sandbox
    stopped it when a limit did (memory, processes; "" otherwise)."""

    returncode: int
    timed_out: bool
    seconds: float
    reason: str = ""


class Runner(Protocol):
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
        """Run ``cmd`` with ``pfs_dir`` as ``/pfs``; ``env`` adds to (and
        overrides) the runner's base environment; ``working_dir`` empty: the
        runner's default; ``timeout``
        None: no limit (on expiry the whole process tree is killed and
        ``timed_out`` is set); ``extra_ro_binds``: (host path, sandbox path)
        pairs made visible read-only (a secret's ``mount_path``); ``user``:
        ``transform.user`` (empty: the runner's unprivileged default);
        ``limits``: what the code may use (None: the runner's defaults);
        ``warm``: ``pfs_dir`` is a worker slot's, whose entries stay from
        one datum to the next (the runner may keep a sandbox running there
        for the slot's next datum)."""
        ...

    def give_out(self, out: Path) -> None:
        """Make ``out`` (and what is in it) the user code's to change (done
        by ``run`` too; a caller that must know ctimes calls it first)."""
        ...

    def sees(self, path: Path) -> bool:
        """Whether user code could read host file ``path`` (an output
        symlink out of ``/pfs`` is followed only to such a file)."""
        ...

    def close(self) -> None:
        """Release what the runner holds (called once, at the worker's end)."""
        ...
