"""LocalRunner: real bubblewrap sandboxes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from pathlib import Path

import psutil
import pytest

from libs.errors import InvalidArgument
from services.pps.domain.resources import Limits
from services.pps.runners.local import (
    SYSTEM_PATH,
    LocalRunner,
    SandboxSettings,
    base_env,
    python_dirs_in_tmp,
    root_args,
)
from services.pps.runners.pipes import MAX_LINE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pfs(tmp_path: Path) -> Path:
    # The scratch root (as the worker's): the sandbox uid walks into it
    # through the runner's stage (tmp_path's parents are private).
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o755)
    root = scratch / "pfs"
    (root / "out").mkdir(parents=True)
    (root / "in").mkdir()
    (root / "in" / "a").write_text("input\n")
    return root


def _runner(pfs: Path, **kwargs: object) -> LocalRunner:
    hide = [pfs.parent, *kwargs.pop("hide", [])]  # type: ignore[misc]
    return LocalRunner(hide=hide, **kwargs)  # type: ignore[arg-type]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    async def __call__(self, line: str) -> None:
        self.lines.append(line)


async def _sh(
    runner: LocalRunner,
    pfs: Path,
    script: str,
    *,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    working_dir: str = "",
    timeout: float | None = 20.0,
    user: str = "",
) -> tuple[int, bool, list[str]]:
    out = Lines()
    result = await runner.run(
        ["sh", "-c", script],
        pfs_dir=pfs,
        stdin=stdin,
        env=env or {},
        working_dir=working_dir,
        timeout=timeout,
        on_line=out,
        user=user,
    )
    return result.returncode, result.timed_out, out.lines


async def test_sees_pfs_host_read_only_and_private_tmp(pfs: Path, tmp_path: Path) -> None:
    runner = _runner(pfs)
    code, _, lines = await _sh(
        runner,
        pfs,
        "cat /pfs/in/a; echo o > /pfs/out/o && echo out-ok; "
        "(echo x > /pfs/in/b) 2>/dev/null || echo in-ro; "
        "(touch /usr/x) 2>/dev/null || echo usr-ro; "
        "ls /tmp | wc -l; echo t > /tmp/t && echo tmp-ok; test -d /etc && echo etc",
    )
    assert code == 0
    # /tmp is private: empty but for the way to this Python when it lives there.
    in_tmp = str(len({d.parts[2] for d in python_dirs_in_tmp()}))
    assert lines == ["input", "out-ok", "in-ro", "usr-ro", in_tmp, "tmp-ok", "etc"]
    assert (pfs / "out" / "o").read_text() == "o\n"
    assert not (pfs / "in" / "b").exists()


async def test_hidden_directories_look_empty(pfs: Path) -> None:
    # A host directory the sandbox shows (the Python environment is visible
    # even in a checkout under /tmp).
    hidden = Path(sys.prefix) / "lib"
    runner = _runner(pfs, hide=[hidden])
    _, _, lines = await _sh(runner, pfs, f"ls {hidden} | wc -l; ls {hidden.parent} | wc -l")
    assert lines[0] == "0" and int(lines[1]) > 0


async def test_stdin_env_path_and_working_dir(pfs: Path) -> None:
    runner = _runner(pfs)
    code, _, lines = await _sh(
        runner,
        pfs,
        'cat; echo "$FOO"; command -v python3; pwd',
        stdin=b"one\ntwo\n",
        env={"FOO": "bar"},
        working_dir="/pfs/in",
    )
    assert code == 0
    assert lines == ["one", "two", "bar", str(Path(sys.executable).parent / "python3"), "/pfs/in"]


async def test_exit_codes_stderr_and_long_lines(pfs: Path) -> None:
    runner = _runner(pfs)
    long = f"head -c {MAX_LINE + 10} /dev/zero | tr '\\0' x"
    script = f"echo err >&2; {long}; echo; printf tail; exit 7"
    code, timed_out, lines = await _sh(runner, pfs, script)
    assert (code, timed_out) == (7, False)
    assert "err" in lines and lines[-1] == "tail"
    assert [len(x) for x in lines if x.startswith("x")] == [MAX_LINE, 10]


async def test_code_not_reading_stdin_is_fine(pfs: Path) -> None:
    code, _, _ = await _sh(_runner(pfs), pfs, "exit 0", stdin=b"x" * (1 << 20))
    assert code == 0


async def test_timeout_kills_the_whole_tree(pfs: Path) -> None:
    started = time.monotonic()
    code, timed_out, lines = await _sh(
        _runner(pfs), pfs, "sleep 31.4159 & echo started; sleep 31.4159", timeout=1.0
    )
    assert timed_out and code != 0 and lines == ["started"]
    assert time.monotonic() - started < 5
    await asyncio.sleep(0.2)
    assert not _running("31.4159")


async def test_cancel_kills_the_sandbox(pfs: Path) -> None:
    task = asyncio.create_task(_sh(_runner(pfs), pfs, "sleep 27.1828"))
    async with asyncio.timeout(10):
        while not _running("27.1828"):  # noqa: ASYNC110 - polls the process table
            await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert not _running("27.1828")


async def test_bad_calls(pfs: Path) -> None:
    runner = _runner(pfs)
    with pytest.raises(InvalidArgument, match="empty"):
        await runner.run(
            [], pfs_dir=pfs, stdin=b"", env={}, working_dir="", timeout=None, on_line=Lines()
        )
    with pytest.raises(InvalidArgument, match="timeout"):
        await _sh(runner, pfs, "true", timeout=0)
    code, _, lines = await _sh(runner, pfs, "exec no-such-program-xyz")
    assert code != 0 and any("no-such-program-xyz" in x for x in lines)


def test_base_env_drops_secrets_and_puts_this_python_first() -> None:
    env = base_env(
        {
            "PATH": "/usr/bin:/bin",
            "PACH_S3_SECRET_KEY": "s",
            "AWS_ACCESS_KEY_ID": "a",
            "HOME": "/root",
        }
    )
    assert env["PATH"].split(":") == [str(Path(sys.executable).parent), *SYSTEM_PATH]
    assert "PACH_S3_SECRET_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert env["HOME"] == "/tmp"


def test_root_args_bind_the_host_read_only() -> None:
    args = root_args()
    assert args[:2] == ["--tmpfs", "/"]
    pairs = list(itertools.pairwise(args))
    assert ("--ro-bind", "/usr") in pairs and ("--tmpfs", "/tmp") in pairs
    assert ("--ro-bind", "/tmp") not in pairs and ("--ro-bind", "/proc") not in pairs


async def test_spawn_floor() -> None:
    assert 0 < await LocalRunner().spawn_floor(3) < 1


def _running(marker: str) -> bool:
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or []):
                return True
        except psutil.Error:
            continue
    return False


async def test_a_long_line_completed_by_a_later_read_is_cut_too() -> None:
    from services.pps.runners.pipes import LineCutter

    lines: list[str] = []

    async def keep(line: str) -> None:
        lines.append(line)

    first = b"x" * 30_000  # no newline yet, shorter than a piece
    rest = b"x" * (MAX_LINE + 10 - len(first)) + b"\n\nend\n"
    cutter = LineCutter(keep)
    for block in (first, rest):  # the pipe's timing: two reads
        await cutter.feed(block)
    await cutter.end()
    assert [len(x) for x in lines] == [MAX_LINE, 10, 0, 3]


async def test_runs_as_an_unprivileged_uid_without_capabilities(pfs: Path) -> None:
    runner = _runner(pfs)
    code, _, lines = await _sh(
        runner,
        pfs,
        "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; "
        "unshare -r true 2>/dev/null || echo no-userns; "
        "mount -t tmpfs none /tmp 2>/dev/null || echo no-mount",
    )
    assert code == 0
    assert lines[:2] == ["65534", "65534"]
    status = dict(line.split(":\t") for line in lines[2:5])
    assert status == {"CapEff": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1"}
    assert lines[5:] == ["no-userns", "no-mount"]
    assert (pfs / "out").stat().st_uid == 65534  # /pfs/out is the sandbox uid's


async def test_the_host_sees_the_sandbox_uid_not_root(pfs: Path) -> None:
    task = asyncio.create_task(_sh(_runner(pfs), pfs, "sleep 13.5791", user="0"))

    def sleepers() -> set[tuple[int, ...]]:
        found = set()
        for p in psutil.process_iter(["name", "cmdline", "uids"]):
            if p.info["name"] == "sleep" and "13.5791" in (p.info["cmdline"] or []):
                found.add(tuple(p.info["uids"]))
        return found

    try:
        async with asyncio.timeout(10):
            while not sleepers():  # noqa: ASYNC110 - polls the process table
                await asyncio.sleep(0.05)
        assert sleepers() == {(65534, 65534, 65534)}  # uid 0 inside is 65534 outside
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("user", "ids"),
    [("", "65534 65534"), ("0", "0 0"), ("1234:2345", "1234 2345"), ("nobody", "65534 65534")],
)
async def test_transform_user_is_the_identity_inside_only(pfs: Path, user: str, ids: str) -> None:
    runner = _runner(pfs)
    out = Lines()
    result = await runner.run(
        ["sh", "-c", 'echo "$(id -u) $(id -g)"; touch /pfs/out/f; touch /usr/x || echo ro'],
        pfs_dir=pfs,
        stdin=b"",
        env={},
        working_dir="",
        timeout=20,
        on_line=out,
        user=user,
    )
    # (touch's complaint comes on stderr, a pipe of its own: before or after "ro")
    assert result.returncode == 0 and out.lines[0] == ids and "ro" in out.lines[1:]
    assert (pfs / "out" / "f").stat().st_uid == 65534  # on the host: always the sandbox uid
    with pytest.raises(InvalidArgument, match="user 'no-such-user-x' does not exist"):
        await runner.run(
            ["true"],
            pfs_dir=pfs,
            stdin=b"",
            env={},
            working_dir="",
            timeout=20,
            on_line=out,
            user="no-such-user-x",
        )


async def test_environment_is_an_allow_list(pfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PACH_NATS_PASSWORD", "NATS_TOKEN", "AWS_SECRET_ACCESS_KEY", "PACH_S3_SECRET_KEY"):
        monkeypatch.setenv(key, "leaked")
    monkeypatch.setenv("MONGODB_URI", "leaked")
    monkeypatch.setenv("LANG", "C.UTF-8")
    runner = _runner(pfs)
    code, _, lines = await _sh(runner, pfs, "env", env={"PACH_JOB_ID": "j", "MINE": "m"})
    env = dict(line.split("=", 1) for line in lines)
    assert code == 0 and "leaked" not in env.values()
    assert set(env) <= {"PATH", "HOME", "LANG", "TERM", "PWD", "PACH_JOB_ID", "MINE", "SHLVL", "_"}
    assert env["PACH_JOB_ID"] == "j" and env["MINE"] == "m" and env["HOME"] == "/tmp"


async def test_secrets_of_etc_and_private_host_dirs_are_not_there(pfs: Path) -> None:
    runner = _runner(pfs)
    project = ROOT
    _, _, lines = await _sh(
        runner,
        pfs,
        "for f in /etc/shadow /etc/gshadow /etc/sudoers; do "
        '  if [ -s "$f" ] && cat "$f" >/dev/null 2>&1; then echo "read $f"; fi; done; '
        f"ls {project}/pyproject.toml 2>/dev/null && echo project; "
        "ls -A /root | grep -v '^.pyenv$'; ls /home /var /sys /srv 2>/dev/null; echo end",
    )
    assert lines == ["end"]


async def test_memory_and_process_limits(pfs: Path) -> None:
    runner = _runner(pfs, settings=SandboxSettings(pids=32))
    assert runner.cgroups is not None  # this machine has writable cgroups
    out = Lines()
    hog = await runner.run(
        ["python3", "-c", "b = bytearray(200 << 20)"],
        pfs_dir=pfs,
        stdin=b"",
        env={},
        working_dir="",
        timeout=30,
        on_line=out,
        limits=Limits(memory=32 << 20),
    )
    assert hog.returncode != 0
    assert "exceeded its memory limit of 32Mi (resource_limits.memory)" in hog.reason
    code, _, _ = await _sh(
        runner, pfs, "i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done 2>/dev/null; exit 1"
    )
    assert code != 0
    assert not _running("sleep 5")


def test_rlimits_when_no_cgroup(pfs: Path) -> None:
    runner = _runner(pfs, cgroups=False, settings=SandboxSettings(pids=7))
    argv = runner._command(["bwrap"], None, Limits(memory=64 << 20, pids=7))
    assert argv[4:6] == [str(64 << 10), "7"]  # ulimit -v KiB, ulimit -u


async def test_a_private_extra_bind_is_copied_in_read_only(pfs: Path, tmp_path: Path) -> None:
    """A secret's directory (0700 root, files 0600) is readable by the
    sandbox user at its mount path, read-only, without opening the host's."""
    secret = tmp_path / "secret"
    secret.mkdir(mode=0o700)
    (secret / "password").write_text("hunter2\n")
    (secret / "password").chmod(0o600)
    runner = _runner(pfs)
    out = Lines()
    result = await runner.run(
        ["sh", "-c", "cat /secrets/s/password; echo x > /secrets/s/password || echo ro"],
        pfs_dir=pfs,
        stdin=b"",
        env={},
        working_dir="",
        timeout=20,
        on_line=out,
        extra_ro_binds=[(secret, "/secrets/s")],
    )
    assert result.returncode == 0
    assert out.lines[0] == "hunter2" and "ro" in out.lines
    assert (secret / "password").read_text() == "hunter2\n"
    assert oct(secret.stat().st_mode & 0o777) == "0o700"
