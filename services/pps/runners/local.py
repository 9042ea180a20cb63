"""``LocalRunner``: run a datum's user code on this machine in bubblewrap.

The sandbox is what the "Trust" section of the architecture asks for:

- **Who**: bubblewrap runs as an unprivileged host uid/gid (``SandboxSettings``:
  ``PACH_PPS_SANDBOX_UID`` / ``_GID``, default 65534 = nobody/nogroup, never
  0), with no supplementary groups, in its own user namespace; inside it
  the code has the uid/gid of ``transform.user`` (a uid, ``uid:gid`` or a
  user name of this machine; default: the sandbox uid) and no capability
  (``--cap-drop ALL``); no_new_privs is set, so setuid binaries do not
  raise it, and it may not make user namespaces of its own
  (``--disable-userns``). It has its own pid, ipc, uts and cgroup
  namespaces; the network stays the host's (as in a pod).
- **What it sees**: ``/`` is a read-only tmpfs holding read-only binds of
  an allow-list only: the system directories (``/usr``, ``/etc``, ``/bin``,
  ``/sbin``, ``/lib*``), the Python environment of the cluster (the
  virtualenv directory and the installation it was made from, at their own
  paths, wherever they live: ``python3`` in a spec works) and any extra
  read-only binds the runner is given. Never the data dir, the project
  tree, ``/root``, ``/home``, ``/var``. In ``/etc`` every entry that is not
  world-readable, and the known secrets (shadow and gshadow files, ssh host
  keys, sudoers), are masked. ``/proc``, ``/dev`` and an empty ``/tmp`` are
  the sandbox's own; ``/sys`` is not there.
- ``/pfs`` is the datum's scratch ``pfs`` directory: ``/pfs/out`` (owned by
  the sandbox uid) writable, every other entry (an input) read-only.
  Directories are bound through file descriptors opened here, so none of
  the host path leading to them needs to be open to the sandbox uid.
- **Limits**: the datum's ``Limits`` (memory, cpu, processes) are enforced
  with a control group per run when this machine lets us make one (see
  ``cgroups``), else with rlimits (``RLIMIT_AS``, ``RLIMIT_NPROC`` per
  sandbox uid; no cpu limit). A default process cap
  (``PACH_PPS_SANDBOX_PIDS``, 1024) stops a fork bomb; a default memory
  cap (``PACH_PPS_SANDBOX_MEMORY``) applies when a spec sets none. A run
  that the kernel killed for memory says so in ``RunResult.reason``.
- **Environment**: built from an allow-list, never the worker's own:
  ``PATH`` (the Python environment's ``bin`` first), ``HOME=/tmp``,
  ``LANG``/``LC_*``/``TZ`` of the worker, then the datum's variables
  (``transform.env``, ``PACH_JOB_ID``, inputs ...). No credential of the
  cluster (NATS, object store, databases) reaches user code.
- The process tree dies with the worker (``--die-with-parent``), runs in a
  new session, and a timeout kills all of it (SIGKILL).

``transform.image`` is ignored here: the command runs with this machine's
programs. An empty ``working_dir`` runs in ``/pfs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import posixpath
import pwd
import re
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from libs.errors import FailedPrecondition, InvalidArgument
from services.pps.domain.resources import Limits, parse_memory
from services.pps.runners.base import LineSink, RunResult
from services.pps.runners.cgroups import Cgroups, RunGroup
from services.pps.runners.pipes import DRAIN_AFTER_EXIT_S, feed, pump
from services.pps.runners.warm import (
    DRIVER,
    WARM_MIN_MEMORY,
    SandboxKey,
    WarmSandbox,
    WarmUnavailable,
    clear_dir,
    pfs_entries,
)

# The system directories user code sees (read-only), when this machine has them.
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
# Secrets of /etc masked even when world-readable.
ETC_SECRETS = (
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "ssl/private",
    "security/opasswd",
    "ssh/ssh_host_*",
)
# Variables of the worker user code gets (everything else stays out).
ENV_ALLOWED = frozenset({"LANG", "LANGUAGE", "TZ", "TERM"})
ENV_ALLOWED_PREFIXES = ("LC_",)
SANDBOX_HOME = "/tmp"
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin")
DEFAULT_UID = 65534
DEFAULT_PIDS = 1024
_SETUP_FAILED = 125  # the wrapper could not join the run's control group
# Run as root before bubblewrap: join the run's control groups, set the
# rlimits (ulimit -v KiB, -u processes), then exec the rest (setpriv -> bwrap).
_WRAPPER = (
    'v=$1 u=$2; shift 2; while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; '
    'shift; if [ "$v" != 0 ]; then ulimit -v "$v" || exit 125; fi; '
    'if [ "$u" != 0 ]; then ulimit -u "$u" || exit 125; fi; exec "$@"'
)


@dataclass(frozen=True)
class SandboxSettings:
    """The host identity sandboxes run as and their default limits
    (``PACH_PPS_SANDBOX_UID``, ``PACH_PPS_SANDBOX_GID``: default 65534;
    ``PACH_PPS_SANDBOX_PIDS``: processes per datum, default 1024;
    ``PACH_PPS_SANDBOX_MEMORY``: memory per datum when the spec sets none,
    default none)."""

    uid: int = DEFAULT_UID
    gid: int = DEFAULT_UID
    pids: int = DEFAULT_PIDS
    memory: int = 0

    def __post_init__(self) -> None:
        if self.uid <= 0 or self.gid <= 0:
            raise InvalidArgument(
                f"the sandbox must run as an unprivileged uid/gid, not {self.uid}:{self.gid} "
                "(PACH_PPS_SANDBOX_UID / PACH_PPS_SANDBOX_GID)"
            )
        if self.pids < 1:
            raise InvalidArgument(f"PACH_PPS_SANDBOX_PIDS must be >= 1, got {self.pids}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SandboxSettings:
        e = os.environ if env is None else env
        memory = e.get("PACH_PPS_SANDBOX_MEMORY", "")
        return cls(
            uid=_number(e, "PACH_PPS_SANDBOX_UID", DEFAULT_UID),
            gid=_number(e, "PACH_PPS_SANDBOX_GID", DEFAULT_UID),
            pids=_number(e, "PACH_PPS_SANDBOX_PIDS", DEFAULT_PIDS),
            memory=parse_memory(memory, "PACH_PPS_SANDBOX_MEMORY") if memory else 0,
        )


def _number(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "")
    if not raw:
        return default
    if not raw.isdigit():
        raise InvalidArgument(f"{key} must be a whole number, got {raw!r}")
    return int(raw)


def find_bwrap() -> str:
    """The bubblewrap binary; FailedPrecondition if it is not installed."""
    return _find("bwrap", "bubblewrap (bwrap)")


def _find(name: str, what: str) -> str:
    path = shutil.which(name, path=os.pathsep.join(SYSTEM_PATH))
    if path is None:
        raise FailedPrecondition(
            f"{what} is not installed: the local runner needs it to run pipeline code"
        )
    return path


def python_dirs() -> list[Path]:
    """The directories of this Python user code needs: the virtualenv and
    the installation it was made from (outermost first, none inside another,
    none inside a system directory already bound)."""
    found: list[Path] = []
    system = [Path("/" + d).resolve() for d in SYSTEM_DIRS]
    for d in sorted({Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}):
        if any(d.is_relative_to(s) for s in system):
            continue
        if not any(d.is_relative_to(f) for f in found):
            found.append(d)
    return found


def python_dirs_in_tmp() -> list[Path]:
    """``python_dirs`` that lie under /tmp."""
    return [d for d in python_dirs() if d.is_relative_to("/tmp")]


def base_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment user code starts from: an allow-list of the worker's
    (locale, time zone), ``HOME=/tmp`` and ``PATH`` with the directory of
    this Python first. Nothing else of the worker's gets in."""
    src = os.environ if env is None else env
    out = {k: v for k, v in src.items() if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)}
    py_dir = str(Path(sys.executable).parent)
    out["PATH"] = os.pathsep.join([py_dir, *(p for p in SYSTEM_PATH if p != py_dir)])
    out["HOME"] = SANDBOX_HOME
    return out


def etc_masks(etc: Path = Path("/etc")) -> tuple[list[str], list[str]]:
    """The files and directories of ``etc`` to hide: every entry not
    world-readable and the known secrets (``ETC_SECRETS``)."""
    files: list[str] = []
    dirs: list[str] = []
    patterns = [re.compile(_glob(p)) for p in ETC_SECRETS]
    for top, subdirs, names in os.walk(etc):
        keep: list[str] = []
        for name in sorted(subdirs):
            path = os.path.join(top, name)
            if os.path.islink(path):
                continue
            if _hidden(path, etc, patterns):
                dirs.append(path)
            else:
                keep.append(name)
        subdirs[:] = keep
        for name in sorted(names):
            path = os.path.join(top, name)
            if not os.path.islink(path) and _hidden(path, etc, patterns):
                files.append(path)
    return files, dirs


def _glob(pattern: str) -> str:
    return "^" + re.escape(pattern).replace(r"\*", "[^/]*") + "$"


def _hidden(path: str, etc: Path, patterns: list[re.Pattern[str]]) -> bool:
    rel = os.path.relpath(path, etc)
    if any(p.match(rel) for p in patterns):
        return True
    try:
        return not os.lstat(path).st_mode & stat.S_IROTH
    except OSError:
        return True


def root_args(hide: Sequence[Path] = ()) -> list[str]:
    """bwrap arguments building the read-only view of the allow-listed
    system directories (``/etc`` with its secrets masked) plus the
    sandbox's own ``/proc``, ``/dev`` and ``/tmp``. The Python directories
    and ``/pfs`` are added per run (through descriptors)."""
    args = ["--tmpfs", "/"]
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    files, dirs = etc_masks()
    for f in files:
        args += ["--ro-bind", "/dev/null", f]
    for d in dirs:
        args += ["--tmpfs", d, "--remount-ro", d]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return args + hide_args(hide, [Path("/" + d) for d in SYSTEM_DIRS])


def hide_args(hide: Sequence[Path], bound: Sequence[Path]) -> list[str]:
    """Directories of ``hide`` inside a ``bound`` one shown empty (read-only)."""
    args: list[str] = []
    for h in hide:
        p = Path(h).absolute()
        if p.is_dir() and any(p.is_relative_to(b) for b in bound):
            args += ["--tmpfs", str(p), "--remount-ro", str(p)]
    return args


def reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` (no other group) can walk to ``path``: every
    directory leading to it searchable."""
    for d in [*reversed(Path(path).absolute().parents)]:
        try:
            st = d.stat()
        except OSError:
            return False
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class Stage:
    """A private mount namespace in which directories the sandbox uid cannot
    walk to (a Python under ``/root``, a data dir under a ``0700`` parent)
    are bound at reachable paths (``<stage dir>/<n>``, an empty root-owned
    directory on the host); the sandbox's wrapper enters it (``nsenter``)
    before dropping to the sandbox uid. The host's mounts are not touched:
    the namespace lives as long as ``fd``."""

    def __init__(self, roots: Sequence[Path], unshare: str, sh: str) -> None:
        self.roots = [Path(r).absolute() for r in roots]
        self.dir = Path(tempfile.mkdtemp(prefix="pach-sandbox-stage-"))
        self.dir.chmod(0o755)
        pairs: list[str] = []
        for n, root in enumerate(self.roots):
            root.mkdir(mode=0o755, parents=True, exist_ok=True)  # a scratch root to come
            (self.dir / str(n)).mkdir(mode=0o755)
            pairs += [str(root), str(self.dir / str(n))]
        script = (
            'while [ $# -gt 0 ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; '
            "echo ready; exec cat"
        )
        helper = subprocess.Popen(
            [unshare, "--mount", "--propagation", "private", "--", sh, "-c", script, "sh", *pairs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert helper.stdin and helper.stdout
        try:
            if helper.stdout.readline() != b"ready\n":
                raise FailedPrecondition(
                    "cannot prepare the sandbox's mount namespace (unshare/mount failed)"
                )
            self.fd = os.open(f"/proc/{helper.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            helper.stdin.close()
            helper.wait()
            helper.stdout.close()
        self._finalizer = weakref.finalize(self, _release, self.fd, self.dir)

    def path(self, host: Path) -> Path | None:
        """Where ``host`` is in the stage (None: not below a staged root)."""
        p = Path(host).absolute()
        for n, root in enumerate(self.roots):
            if p.is_relative_to(root):
                return self.dir / str(n) / p.relative_to(root)
        return None

    def close(self) -> None:
        self._finalizer()


def _release(fd: int, where: Path) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    shutil.rmtree(where, ignore_errors=True)


class LocalRunner:
    """Runs commands in bubblewrap sandboxes on this machine."""

    def __init__(
        self,
        *,
        hide: Sequence[Path] = (),
        bwrap: str | None = None,
        settings: SandboxSettings | None = None,
        ro_binds: Sequence[tuple[Path, str]] = (),
        cgroups: Cgroups | bool | None = True,
        reuse: bool | None = None,
    ) -> None:
        """``ro_binds``: extra (host path, sandbox path) pairs bound read-only
        into every sandbox. ``cgroups``: True probes this machine, False or
        None uses rlimits only, a ``Cgroups`` uses that."""
        self._bwrap = bwrap or find_bwrap()
        self._sh = _find("sh", "a POSIX shell")
        self.settings = settings or SandboxSettings.from_env()
        s = self.settings
        self._root = root_args(hide)
        self._python = python_dirs()
        self._hide_python = hide_args(hide, self._python)
        self._ro_binds = [(Path(src).absolute(), dest) for src, dest in ro_binds]
        self._env = base_env()
        files, dirs = etc_masks()
        self._masked = (set(files), tuple(d + "/" for d in dirs))
        self.cgroups: Cgroups | None = Cgroups.probe() if cgroups is True else (cgroups or None)
        # Directories the sandbox uid cannot walk to are reached through a
        # private mount namespace (``Stage``); otherwise setpriv drops to it.
        wanted = [*self._python, *(src for src, _ in self._ro_binds), *hide]
        unreachable = [d for d in wanted if not reachable(d, s.uid, s.gid)]
        self.stage: Stage | None = None
        # A warm sandbox per worker slot (``run(..., warm=True)``), unless
        # PACH_PPS_SANDBOX_REUSE=0.
        self.reuse = reuse if reuse is not None else os.environ.get("PACH_PPS_SANDBOX_REUSE") != "0"
        self._warm: dict[Path, WarmSandbox] = {}
        if unreachable:
            self.stage = Stage(_outermost(unreachable), _find("unshare", "unshare"), self._sh)
            self._drop = [
                _find("nsenter", "nsenter (util-linux)"),
                f"--mount=/proc/self/fd/{self.stage.fd}",
                "-S",
                str(s.uid),
                "-G",
                str(s.gid),
                "--",
            ]
        else:
            setpriv = _find("setpriv", "setpriv (util-linux)")
            self._drop = [setpriv, f"--reuid={s.uid}", f"--regid={s.gid}", "--clear-groups", "--"]

    def close(self) -> None:
        """End the warm sandboxes; release the stage (its mount namespace
        and directory)."""
        for box in self._warm.values():
            box.close_now()
        self._warm.clear()
        if self.stage is not None:
            self.stage.close()
            self.stage = None

    def _source(self, host: Path) -> str:
        """The path bwrap binds ``host`` from (staged when it must be)."""
        if self.stage is not None:
            staged = self.stage.path(host)
            if staged is not None:
                return str(staged)
        s = self.settings
        if not reachable(host, s.uid, s.gid):
            raise FailedPrecondition(
                f"{host} cannot be bound into the sandbox: uid {s.uid} cannot reach it "
                "(give its directory to the runner as a scratch root)",
                path=str(host),
            )
        return str(host)

    # --- what the sandbox is ---------------------------------------------------

    def identity(self, user: str) -> tuple[int, int]:
        """The uid and gid user code has inside its namespace for
        ``transform.user`` (empty: the sandbox's own); InvalidArgument for a
        name this machine does not know."""
        s = self.settings
        if not user:
            return s.uid, s.gid
        name, _, group = user.partition(":")
        uid = _lookup(name, pwd.getpwnam, "pw_uid", "user")
        if group:
            gid = _lookup(group, grp.getgrnam, "gr_gid", "group")
        elif name.isdigit():
            try:
                gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                gid = uid
        else:
            gid = pwd.getpwnam(name).pw_gid
        return uid, gid

    def limits(self, limits: Limits | None) -> Limits:
        """``limits`` with the settings' defaults where it sets none."""
        lim = limits or Limits()
        return Limits(
            memory=lim.memory or self.settings.memory,
            cpu=lim.cpu,
            pids=lim.pids or self.settings.pids,
            cpu_share=lim.cpu_share,
        )

    def give_out(self, out: Path) -> None:
        """``out`` and what is in it to the sandbox uid (only what it does
        not own yet: a chown changes the ctime)."""
        _own_out(out, self.settings.uid, self.settings.gid)

    def sees(self, path: Path) -> bool:
        """Whether user code could read host file ``path`` (the upload
        follows symlinks out of ``/pfs`` only to such files)."""
        try:
            real = Path(os.path.realpath(path))
            st = real.stat()
        except OSError:
            return False
        roots = [Path("/" + d).resolve() for d in SYSTEM_DIRS if os.path.isdir("/" + d)]
        roots += self._python + [src for src, _ in self._ro_binds]
        if not any(real.is_relative_to(r) for r in roots):
            return False
        text = str(real)
        files, dirs = self._masked
        if text in files or text.startswith(dirs):
            return False
        if st.st_uid == self.settings.uid:
            return bool(st.st_mode & stat.S_IRUSR)
        if st.st_gid == self.settings.gid:
            return bool(st.st_mode & stat.S_IRGRP)
        return bool(st.st_mode & stat.S_IROTH)

    def sandbox_args(
        self,
        pfs_dir: Path,
        working_dir: str,
        *,
        uid: int | None = None,
        gid: int | None = None,
        extra_ro_binds: Sequence[tuple[Path, str]] = (),
        fds: list[int] | None = None,
    ) -> list[str]:
        """The bwrap command line of one sandbox; ``extra_ro_binds`` adds
        (host path, sandbox path) pairs bound read-only for this run only
        (after the runner's own). One the sandbox uid could not read (a
        secret's directory, 0700 root) is copied in instead, its files
        opened here into ``fds`` (to be passed to bwrap and closed after
        its start) and made the sandbox user's, read-only."""
        s = self.settings
        args = [
            self._bwrap,
            "--unshare-user",
            "--disable-userns",
            "--uid",
            str(s.uid if uid is None else uid),
            "--gid",
            str(s.gid if gid is None else gid),
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            "pachyderm-sandbox",
            "--cap-drop",
            "ALL",
            "--die-with-parent",
            "--new-session",
            *self._root,
        ]
        for d in self._python:
            args += ["--ro-bind", self._source(d), str(d)]
        args += self._hide_python
        for src, dest in self._ro_binds:
            args += ["--ro-bind", self._source(Path(src)), dest]
        for src, dest in extra_ro_binds:
            if fds is None or readable_tree(Path(src), s.uid, s.gid):
                args += ["--ro-bind", self._source(Path(src)), dest]
            else:
                args += _copied_in(Path(src), dest, fds)
        args += ["--ro-bind", self._source(pfs_dir), "/pfs"]
        with os.scandir(pfs_dir) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if not entry.is_dir(follow_symlinks=False):
                    continue
                mode = "--bind" if entry.name == "out" else "--ro-bind"
                args += [mode, self._source(Path(entry.path)), f"/pfs/{entry.name}"]
        args += ["--remount-ro", "/", "--chdir", working_dir or "/pfs"]
        return args

    def _command(self, sandbox: list[str], group: RunGroup | None, limits: Limits) -> list[str]:
        """The wrapper (join the group, set rlimits, drop to the sandbox
        uid) and then ``sandbox``."""
        vm_kib = 0
        nproc = 0
        if limits.memory and (group is None or not group.enforces("memory")):
            vm_kib = max(1, limits.memory >> 10)
        if group is None or not group.enforces("pids"):
            nproc = limits.pids
        procs = group.procs_files() if group is not None else []
        return [
            self._sh,
            "-c",
            _WRAPPER,
            "sh",
            str(vm_kib),
            str(nproc),
            *procs,
            "--",
            *self._drop,
            *sandbox,
        ]

    # --- running ---------------------------------------------------------------

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
        if not cmd:
            raise InvalidArgument("transform.cmd is empty: nothing to run")
        if timeout is not None and timeout <= 0:
            raise InvalidArgument(f"timeout must be > 0 seconds, got {timeout}", timeout=timeout)
        uid, gid = self.identity(user)
        lim = self.limits(limits)
        full_env = {**self._env, **env}
        # Warm: not with secrets mounted (a copy would go stale), nor under a
        # memory limit the driver would take a noticeable part of.
        if warm and self.reuse and not extra_ro_binds and not 0 < lim.memory < WARM_MIN_MEMORY:
            entries = pfs_entries(pfs_dir)  # a handful of directories
            if entries is not None:
                key = SandboxKey(pfs_dir, entries, uid, gid, (), lim)
                try:
                    return await self._run_warm(
                        key, cmd, full_env, working_dir, stdin, timeout, on_line
                    )
                except WarmUnavailable:
                    pass  # a sandbox of its own, as without warm sandboxes
        await asyncio.to_thread(self.give_out, pfs_dir / "out")
        group = None
        if self.cgroups is not None:
            try:
                group = await asyncio.to_thread(self.cgroups.create, lim)
            except OSError as err:
                raise FailedPrecondition(f"cannot make the sandbox's control group: {err}") from err
        started = time.monotonic()
        fds: list[int] = []
        try:
            try:
                sandbox = self.sandbox_args(
                    pfs_dir, working_dir, uid=uid, gid=gid, extra_ro_binds=extra_ro_binds, fds=fds
                )
                proc = await _Child.start(
                    [*self._command(sandbox, group, lim), "--", *cmd],
                    env=full_env,
                    pass_fds=[*fds, *([self.stage.fd] if self.stage is not None else [])],
                )
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            result = await self._wait(proc, stdin, timeout, on_line, group, lim, started)
        finally:
            if group is not None:
                await asyncio.to_thread(group.remove)
        return result

    async def _run_warm(
        self,
        key: SandboxKey,
        cmd: Sequence[str],
        env: Mapping[str, str],
        working_dir: str,
        stdin: bytes,
        timeout: float | None,
        on_line: LineSink,
    ) -> RunResult:
        """Run in the slot's warm sandbox (started, or started again when
        what it binds changed)."""
        box = self._warm.get(key.pfs_dir)
        if box is not None and (box.closed or box.key != key):
            self._warm.pop(key.pfs_dir, None)
            await box.close()
            box = None
        if box is None:
            box = await self._start_warm(key)
            self._warm[key.pfs_dir] = box
        out = key.pfs_dir / "out"
        with os.scandir(out) as entries:
            empty = next(entries, None) is None
        if empty:
            self.give_out(out)  # one chown at most
        else:
            await asyncio.to_thread(self.give_out, out)
        try:
            return await box.run(
                cmd, env=env, working_dir=working_dir, stdin=stdin, timeout=timeout, on_line=on_line
            )
        finally:
            if box.closed:
                self._warm.pop(key.pfs_dir, None)

    async def _start_warm(self, key: SandboxKey) -> WarmSandbox:
        s = self.settings
        tmp = key.pfs_dir.parent / "tmp"
        await asyncio.to_thread(_fresh_tmp, tmp, s.uid, s.gid)
        group = None
        if self.cgroups is not None:
            try:
                group = await asyncio.to_thread(self.cgroups.create, key.limits)
            except OSError as err:
                raise FailedPrecondition(f"cannot make the sandbox's control group: {err}") from err
        fds: list[int] = []
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            try:
                sandbox = self.sandbox_args(key.pfs_dir, "/", uid=key.uid, gid=key.gid, fds=fds)
                sandbox += ["--bind", self._source(tmp), "/tmp"]
                driver = [sys.executable, "-I", "-S", "-c", DRIVER, str(theirs.fileno())]
                proc = await _Child.start(
                    [*self._command(sandbox, group, key.limits), "--", *driver],
                    env=self._env,
                    pass_fds=[
                        *fds,
                        theirs.fileno(),
                        *([self.stage.fd] if self.stage is not None else []),
                    ],
                )
            finally:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                theirs.close()
        except BaseException:
            ours.close()
            if group is not None:
                await asyncio.to_thread(group.remove)
            raise
        ours.setblocking(False)
        box = WarmSandbox(key, proc, ours, group, key.limits, tmp, _limit_reason, _kill)
        await box.wait_ready()
        return box

    async def _wait(
        self,
        proc: _Child,
        stdin: bytes,
        timeout: float | None,
        on_line: LineSink,
        group: RunGroup | None,
        limits: Limits,
        started: float,
    ) -> RunResult:
        io = [
            asyncio.create_task(feed(proc.stdin, stdin)),
            asyncio.create_task(pump(proc.stdout, proc.stderr, on_line=on_line)),
        ]
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
                _kill(proc.pid, group)
                await proc.wait()
            seconds = time.monotonic() - started
            done, pending = await asyncio.wait(io, timeout=DRAIN_AFTER_EXIT_S)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()  # an error of on_line surfaces here
        finally:
            if proc.returncode is None:  # cancelled or failed: leave nothing behind
                _kill(proc.pid, group)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
            for task in io:
                task.cancel()
            await asyncio.gather(*io, return_exceptions=True)
        assert proc.returncode is not None
        reason = ""
        if proc.returncode == _SETUP_FAILED and group is not None:
            reason = "the sandbox could not join its control group"
        elif group is not None and proc.returncode != 0:
            reason = _limit_reason(group, limits)
        return RunResult(
            returncode=proc.returncode, timed_out=timed_out, seconds=seconds, reason=reason
        )

    async def spawn_floor(self, runs: int = 5) -> float:
        """Median seconds to start and end a sandbox running ``true``."""

        async def ignore(_: str) -> None:
            return None

        times: list[float] = []
        with tempfile.TemporaryDirectory(prefix="pps-floor-") as tmp:
            pfs = Path(tmp)
            os.chmod(tmp, 0o755)  # the sandbox uid walks to it
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


class _Child:
    """A sandbox's first process, started with ``subprocess.Popen`` (which
    uses vfork: the worker's memory is not copied for every datum, as the
    event loop's own fork-based spawn does, blocking the loop for tens of
    milliseconds with a large heap) and watched from the event loop: its
    output through pipe transports, its end through a pidfd."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdin: IO[bytes],
        stdout: IO[bytes],
        stderr: IO[bytes],
    ) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._exited = asyncio.get_running_loop().create_future()
        self._watch()

    @classmethod
    async def start(
        cls, argv: Sequence[str], *, env: Mapping[str, str], pass_fds: Sequence[int]
    ) -> _Child:
        # vfork + exec: quick, and nothing to wait for in a thread
        popen = subprocess.Popen(  # noqa: ASYNC220
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            pass_fds=list(pass_fds),
        )
        assert popen.stdin and popen.stdout and popen.stderr
        return cls(popen, popen.stdin, popen.stdout, popen.stderr)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):  # no pidfd: a thread waits
            waiting = asyncio.ensure_future(asyncio.to_thread(self._popen.wait))
            waiting.add_done_callback(lambda _: self._ended())
            return

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._popen.wait()  # it has ended: reaping does not block
            self._ended()

        loop.add_reader(fd, exited)

    def _ended(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        assert self._popen.returncode is not None
        return self._popen.returncode


def _fresh_tmp(tmp: Path, uid: int, gid: int) -> None:
    """A warm sandbox's ``/tmp``: an empty directory of the sandbox user's."""
    tmp.mkdir(mode=0o700, exist_ok=True)
    clear_dir(tmp)
    os.chown(tmp, uid, gid)
    tmp.chmod(0o700)


def _limit_reason(group: RunGroup, limits: Limits) -> str:
    """Why the kernel stopped the run, if a limit did."""
    parts = []
    if group.oom_killed():
        parts.append(
            f"user code exceeded its memory limit of {limits.describe_memory()} "
            "(resource_limits.memory) and was killed"
        )
    refused = group.pids_refused()
    if refused:
        parts.append(
            f"user code reached its limit of {limits.pids} processes ({refused} fork(s) refused)"
        )
    return "; ".join(parts)


def _may(st: os.stat_result, uid: int, gid: int, want: int) -> bool:
    """Whether ``uid``/``gid`` has the permission bits ``want`` (of r=4, x=1)."""
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & want == want


def readable_tree(top: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` can read everything in ``top``."""
    try:
        if not _may(top.stat(), uid, gid, 5 if top.is_dir() else 4):
            return False
        for root, dirs, files in os.walk(top):
            for name in dirs:
                if not _may(os.stat(os.path.join(root, name)), uid, gid, 5):
                    return False
            for name in files:
                if not _may(os.stat(os.path.join(root, name)), uid, gid, 4):
                    return False
    except OSError:
        return False
    return True


def _copied_in(src: Path, dest: str, fds: list[int]) -> list[str]:
    """bwrap arguments copying the regular files of ``src`` to ``dest``
    (read-only, the sandbox user's) from descriptors opened into ``fds``."""
    args: list[str] = []
    if src.is_file():
        fds.append(os.open(src, os.O_RDONLY | os.O_CLOEXEC))
        return ["--perms", "0400", "--ro-bind-data", str(fds[-1]), dest]
    for root, _, files in os.walk(src):
        for name in sorted(files):
            path = os.path.join(root, name)
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            inside = posixpath.join(dest, os.path.relpath(path, src))
            args += ["--perms", "0400", "--ro-bind-data", str(fds[-1]), inside]
    return args


def _outermost(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for p in sorted(Path(x).absolute() for x in paths):
        if not any(p.is_relative_to(f) for f in found):
            found.append(p)
    return found


def _lookup(name: str, by_name: object, attr: str, kind: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        entry = by_name(name)  # type: ignore[operator]
    except KeyError:
        raise InvalidArgument(
            f"transform.user: {kind} {name!r} does not exist on this machine",
            field="transform.user",
        ) from None
    return int(getattr(entry, attr))


def _own_out(out: Path, uid: int, gid: int) -> None:
    """Give ``out`` (and what an incremental run put in it) to the sandbox uid."""
    out.mkdir(exist_ok=True)
    for path in _walk(out):
        st = os.lstat(path)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(path, uid, gid, follow_symlinks=False)


def _walk(top: Path) -> Iterator[str]:
    yield str(top)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            yield os.path.join(root, name)


def _kill(pid: int, group: RunGroup | None = None) -> None:
    """SIGKILL the sandbox's process group (bwrap; its children die with
    it) and every process of its control group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if group is not None:
        group.kill()
