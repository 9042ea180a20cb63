"""LocalRunner: real bubblewrap sandboxes."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

import psutil
import pytest

from libs.errors import InvalidArgument
from services.pps.runners.local import (
    MAX_LINE,
    SYSTEM_PATH,
    LocalRunner,
    base_env,
    python_dirs_in_tmp,
    root_args,
)


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
    from services.pps.runners.local import _pump

    class Blocks:
        """A stream whose reads return these blocks (the pipe's timing)."""

        def __init__(self, *blocks: bytes) -> None:
            self.blocks = list(blocks)

        async def read(self, n: int) -> bytes:
            return self.blocks.pop(0) if self.blocks else b""

    lines: list[str] = []

    async def keep(line: str) -> None:
        lines.append(line)

    first = b"x" * 30_000  # no newline yet, shorter than a piece
    rest = b"x" * (MAX_LINE + 10 - len(first)) + b"\n\nend\n"
    await _pump(Blocks(first, rest), keep)  # type: ignore[arg-type]
    assert [len(x) for x in lines] == [MAX_LINE, 10, 0, 3]
