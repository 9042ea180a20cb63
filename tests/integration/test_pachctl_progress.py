"""pachctl's progress on long work: drawn on stderr when it is a terminal
(a pseudo-terminal here), absent when it is not (a pipe), with stdout the
same either way."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import ROOT, Cluster, running

BIG = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("progress")) / "data")


def on_pty(cluster: Cluster, *args: str) -> tuple[bytes, str]:
    """Run pachctl with stderr on a pseudo-terminal: (stdout, what the
    terminal showed)."""
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    out = bytearray()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: out.extend(stdout.read()), daemon=True)
    reader.start()  # stdout is a pipe: drained alongside, so a big stream never blocks
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(120) == 0, shown.decode(errors="replace")
        reader.join(60)
    finally:
        os.close(leader)
    return bytes(out), shown.decode(errors="replace")


def test_progress_on_a_terminal_and_none_without(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "data"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(BIG))
    (src / "sub" / "small.txt").write_bytes(b"hello\n")

    # put-file -r of a directory: bytes and files of the total
    _, shown = on_pty(cluster, "put-file", "data", "master", "/d", "-r", "-f", str(src))
    assert "put-file data@master:" in shown and "(100%)" in shown and "2/2 files" in shown
    assert "8MiB" in shown, shown
    piped = pachctl(cluster, "put-file", "data", "master", "/e", "-r", "-f", str(src))
    assert piped.returncode == 0 and piped.stderr == b""

    # get-file -r
    _, shown = on_pty(cluster, "get-file", "data", "master", "/d", "-r", "-o", str(tmp_path / "g"))
    assert "get-file data@" in shown and "(100%)" in shown, shown
    assert (tmp_path / "g" / "big.bin").stat().st_size == BIG
    piped = pachctl(cluster, "get-file", "data", "master", "/e", "-r", "-o", str(tmp_path / "h"))
    assert piped.returncode == 0 and piped.stderr == b""

    # extract: the stream on stdout, its progress on the terminal
    out, shown = on_pty(cluster, "extract")
    assert "extract: " in shown and len(out) > BIG
    piped = pachctl(cluster, "extract")
    assert piped.returncode == 0 and piped.stderr == b"" and len(piped.stdout) > BIG

    # flush-commit says what it waits for
    out, shown = on_pty(cluster, "flush-commit", "data/master")
    assert "waiting for the commits downstream of data/master" in shown
    piped = pachctl(cluster, "flush-commit", "data/master")
    assert piped.returncode == 0 and piped.stderr == b"" and piped.stdout == out
