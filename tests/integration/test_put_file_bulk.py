"""put-file -r of many small files through pachctl against a real cluster:
every file lands with its own bytes (batched, packed, recorded as one
event per batch, the tree made durable in one group), and a process
killed in the middle leaves nothing half-committed: the branch shows either
no commit of the put or all of it, and the put can simply be run again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import ROOT, Cluster, running, wait_until

FILES = 20_000
KILLED = 5_000  # files of the puts that are killed midway (5 batches)
DIRS = 20
SAMPLE = 400


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A short lease: a put whose stream died gives its commit up quickly.
    yield from running(tmp_path_factory.mktemp("bulk") / "data", PACH_PUT_LEASE_MS="2000")


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        yield pfs_pb2_grpc.APIStub(channel)


def _tree(top: Path, files: int) -> Path:
    """``files`` files of up to 1 KiB, each with bytes of its own (its index)."""
    for d in range(DIRS):
        (top / f"d{d:02}").mkdir(parents=True)
    for i in range(files):
        (top / f"d{i % DIRS:02}" / f"f{i:05}").write_bytes(_content(i))
    return top


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("src") / "tree", FILES)


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tree(tmp_path_factory.mktemp("src") / "tree", KILLED)


def _content(i: int) -> bytes:
    return f"file {i}\n".encode() * (i % 100)


def _env(cluster: Cluster) -> dict[str, str]:
    return {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
        "PYTHONPATH": str(ROOT),
    }


def _pachctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=_env(cluster),
        capture_output=True,
        timeout=600,
    )


def _commit(repo: str, ref: str = "master") -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref)


def _files(api: pfs_pb2_grpc.APIStub, repo: str) -> dict[str, int]:
    glob = pfs.GlobFileRequest(commit=_commit(repo), pattern="/in/*/*")
    return {i.file.path: i.size_bytes for i in api.GlobFileStream(glob, timeout=120)}


def _get(api: pfs_pb2_grpc.APIStub, repo: str, path: str) -> bytes:
    req = pfs.GetFileRequest(file=pfs.File(commit=_commit(repo), path=path))
    return b"".join(r.value for r in api.GetFile(req, timeout=60))


def _expected(files: int = FILES) -> dict[str, int]:
    return {f"/in/d{i % DIRS:02}/f{i:05}": len(_content(i)) for i in range(files)}


def _check_all(api: pfs_pb2_grpc.APIStub, repo: str, files: int = FILES) -> None:
    assert _files(api, repo) == _expected(files)
    for i in random.Random(repo).sample(range(files), SAMPLE):
        assert _get(api, repo, f"/in/d{i % DIRS:02}/f{i:05}") == _content(i), i


def _commits(api: pfs_pb2_grpc.APIStub, repo: str) -> list[pfs.CommitInfo]:
    return list(api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name=repo))).commit_info)


def test_put_file_r_of_many_small_files_round_trips(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, tree: Path
) -> None:
    assert _pachctl(cluster, "create-repo", "bulk").returncode == 0
    done = _pachctl(cluster, "put-file", "bulk", "master", "/in", "-r", "-f", str(tree))
    assert done.returncode == 0, done.stderr.decode()
    (commit,) = _commits(api, "bulk")
    assert commit.finished.seconds and commit.size_bytes == sum(_expected().values())
    _check_all(api, "bulk")
    # Into a commit the caller opened, then overwritten with -o: same files.
    assert _pachctl(cluster, "start-commit", "bulk", "master").returncode == 0
    again = _pachctl(cluster, "put-file", "bulk", "master", "/in", "-r", "-o", "-f", str(tree))
    assert again.returncode == 0, again.stderr.decode()
    assert _pachctl(cluster, "finish-commit", "bulk", "master").returncode == 0
    _check_all(api, "bulk")


def _put_and_kill(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, tree: Path, repo: str, who: str
) -> None:
    """Start a put-file -r of ``tree`` onto ``repo``'s master, and kill -9
    ``who`` (pachctl, or a cluster process) once the put's commit is open."""
    assert _pachctl(cluster, "create-repo", repo).returncode == 0
    put = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "programs.pachctl",
            "put-file",
            repo,
            "master",
            "/in",
            "-r",
            "-f",
            str(tree),
        ],
        cwd=ROOT,
        env=_env(cluster),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: bool(_commits(api, repo)), timeout=120)
        if who == "pachctl":
            put.send_signal(signal.SIGKILL)
        else:
            os.kill(cluster.state()["processes"][who]["pid"], signal.SIGKILL)
        put.wait(300)
    finally:
        if put.poll() is None:
            put.kill()
            put.wait()


@pytest.mark.parametrize("who", ["pachctl", "pfs-0"])
def test_a_put_killed_midway_leaves_nothing_half_committed(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, small_tree: Path, who: str
) -> None:
    tree = small_tree
    repo = f"killed-{who.replace('-0', '')}"
    _put_and_kill(cluster, api, tree, repo, who)

    def settled() -> bool:
        try:
            return all(c.finished.seconds for c in _commits(api, repo))
        except grpc.RpcError:
            return False  # pfs is being restarted

    # The put's commit is given up (abandoned, or its lease lapses), or it
    # was finished whole: no open commit is left behind.
    wait_until(settled, timeout=120)
    for commit in _commits(api, repo):
        assert commit.size_bytes == sum(_expected(KILLED).values())
        _check_all(api, repo, KILLED)
    # Run again, the put completes with every file.
    deadline = time.monotonic() + 120
    while True:
        done = _pachctl(cluster, "put-file", repo, "master", "/in", "-r", "-o", "-f", str(tree))
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)  # pfs coming back
    assert done.returncode == 0, done.stderr.decode()
    _check_all(api, repo, KILLED)
