"""Control groups for sandboxes: one per run, holding its memory, cpu and
process limits, and saying afterwards whether the run hit them.

``Cgroups.probe()`` finds what this machine lets us use: cgroup v2 (a
unified hierarchy with the ``memory``, ``pids`` and ``cpu`` controllers
enabled below our own group) or v1 (one hierarchy per controller; each is
used when we can create a group in it). Nothing usable: ``None``, and the
runner falls back to rlimits. A run's group is created below the group this
process is in (or the hierarchy's root when that is not visible), named
``pach-sandbox-<token>``; the sandbox's first process joins it before it
runs bubblewrap (its ``cgroup.procs`` files are given to the runner's
wrapper), so nothing it starts escapes it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from services.pps.domain.resources import Limits

MOUNTS = Path("/proc/self/mounts")
_CFS_PERIOD_US = 100_000
_RMDIR_TRIES = 50
_RMDIR_PAUSE_S = 0.02


@dataclass(frozen=True, slots=True)
class Cgroups:
    """Where runs' groups go: the v2 base, or a v1 base per controller."""

    v2: Path | None = None
    memory: Path | None = None
    pids: Path | None = None
    cpu: Path | None = None

    @property
    def version(self) -> int:
        return 2 if self.v2 is not None else 1

    def describe(self) -> str:
        if self.v2 is not None:
            return f"cgroup v2 at {self.v2}"
        got = [n for n in ("memory", "pids", "cpu") if getattr(self, n) is not None]
        return "cgroup v1 (" + ", ".join(got) + ")"

    @classmethod
    def probe(cls) -> Cgroups | None:
        """What this machine lets us use (None: no writable cgroup)."""
        mounts = _mounts()
        own = _own_groups()
        v2 = mounts.get("cgroup2")
        if v2 is not None:
            base = _usable(v2, own.get(""), {"memory", "pids", "cpu"})
            if base is not None:
                return cls(v2=base)
        found: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpu"):
            mount = mounts.get(controller)
            if mount is None:
                continue
            base = _usable(mount, own.get(controller), set())
            if base is not None:
                found[controller] = base
        if not found:
            return None
        return cls(**found)  # type: ignore[arg-type]

    def create(self, limits: Limits) -> RunGroup:
        """A new group (per controller) holding ``limits``."""
        name = f"pach-sandbox-{secrets.token_hex(6)}"
        group = RunGroup(self, name)
        try:
            group.setup(limits)
        except OSError:
            group.remove()
            raise
        return group


@dataclass
class RunGroup:
    """One run's group(s)."""

    where: Cgroups
    name: str

    def dirs(self) -> dict[str, Path]:
        w = self.where
        if w.v2 is not None:
            return {"v2": w.v2 / self.name}
        return {
            k: base / self.name
            for k, base in (("memory", w.memory), ("pids", w.pids), ("cpu", w.cpu))
            if base is not None
        }

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files the sandbox's first process writes its pid to."""
        return [str(d / "cgroup.procs") for d in self.dirs().values()]

    def setup(self, limits: Limits) -> None:
        dirs = self.dirs()
        for d in dirs.values():
            d.mkdir()
        if "v2" in dirs:
            d = dirs["v2"]
            if limits.memory:
                _write(d / "memory.max", limits.memory)
                _try_write(d / "memory.swap.max", 0)
            if limits.pids:
                _write(d / "pids.max", limits.pids)
            if limits.cpu:
                _write(d / "cpu.max", f"{_quota(limits.cpu)} {_CFS_PERIOD_US}")
            if limits.cpu_share:
                _try_write(d / "cpu.weight", max(1, min(10000, int(100 * limits.cpu_share))))
            return
        if limits.memory and "memory" in dirs:
            _write(dirs["memory"] / "memory.limit_in_bytes", limits.memory)
            _try_write(dirs["memory"] / "memory.memsw.limit_in_bytes", limits.memory)
        if limits.pids and "pids" in dirs:
            _write(dirs["pids"] / "pids.max", limits.pids)
        if "cpu" in dirs:
            if limits.cpu:
                _write(dirs["cpu"] / "cpu.cfs_period_us", _CFS_PERIOD_US)
                _write(dirs["cpu"] / "cpu.cfs_quota_us", _quota(limits.cpu))
            if limits.cpu_share:
                _try_write(dirs["cpu"] / "cpu.shares", max(2, int(1024 * limits.cpu_share)))

    def enforces(self, kind: str) -> bool:
        """Whether the group limits ``kind`` (memory, pids, cpu)."""
        return self.where.v2 is not None or kind in self.dirs()

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the group for memory."""
        dirs = self.dirs()
        if "v2" in dirs:
            return _counter(dirs["v2"] / "memory.events", "oom_kill") > 0
        if "memory" in dirs:
            d = dirs["memory"]
            if _counter(d / "memory.oom_control", "oom_kill") > 0:
                return True
        return False

    def pids_refused(self) -> int:
        """How many forks the process limit refused."""
        dirs = self.dirs()
        d = dirs.get("v2") or dirs.get("pids")
        return 0 if d is None else _counter(d / "pids.events", "max")

    def kill(self) -> None:
        """SIGKILL every process still in the group."""
        for d in self.dirs().values():
            kill_file = d / "cgroup.kill"
            if self.where.v2 is not None and kill_file.exists():
                _try_write(kill_file, 1)
                continue
            with contextlib.suppress(OSError):
                for line in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                        os.kill(int(line), signal.SIGKILL)

    def remove(self) -> None:
        """Remove the group (its processes are killed first)."""
        for d in self.dirs().values():
            for attempt in range(_RMDIR_TRIES):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy: processes exiting
                    if attempt == 0:
                        self.kill()
                    time.sleep(_RMDIR_PAUSE_S)


def _quota(cpu: float) -> int:
    return max(1000, int(cpu * _CFS_PERIOD_US))


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def _try_write(path: Path, value: object) -> None:
    with contextlib.suppress(OSError):
        _write(path, value)


def _counter(path: Path, key: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
            return int(parts[1])
    return 0


def _mounts() -> dict[str, Path]:
    """``cgroup2`` -> its mount; a v1 controller name -> its hierarchy's mount."""
    found: dict[str, Path] = {}
    try:
        lines = MOUNTS.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) < 4:
            continue
        mount, fstype, options = Path(parts[1]), parts[2], parts[3].split(",")
        if fstype == "cgroup2":
            found.setdefault("cgroup2", mount)
        elif fstype == "cgroup":
            for opt in options:
                if opt in ("memory", "pids", "cpu"):
                    found.setdefault(opt, mount)
    return found


def _own_groups() -> dict[str, str]:
    """Our group per v1 controller ("" for v2) from /proc/self/cgroup."""
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            own[controller] = parts[2]
    return own


def _usable(mount: Path, own: str | None, controllers: set[str]) -> Path | None:
    """The base below which a group can be made (ours, else the root), with
    ``controllers`` enabled for its children (v2)."""
    bases = []
    if own and own != "/":
        bases.append(mount / own.lstrip("/"))
    bases.append(mount)
    for base in bases:
        if not base.is_dir():
            continue
        if controllers:
            try:
                enabled = set((base / "cgroup.subtree_control").read_text().split())
            except OSError:
                continue
            if not controllers <= enabled:
                continue
        probe = base / f"pach-probe-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            probe.mkdir()
        except OSError:
            continue
        with contextlib.suppress(OSError):
            probe.rmdir()
        return base
    return None


__all__ = ["Cgroups", "RunGroup"]
