"""kill -9 in the middle of a put-file stream, against the real cluster.

A repo has finished commits; the user starts a commit and streams files into
it (small packed files and multi-chunk ones, each over several messages);
pfs, or in the other test nats-server, is killed with SIGKILL mid-stream.
The client must get an error. Once the launcher has restarted the dead
child: the open commit holds only whole files (each either absent or with
exactly its bytes), the finished commits are unchanged, and the open commit
takes more files and finishes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import Cluster, alive, running, wait_until

KiB = 1 << 10
MESSAGE = 256 * KiB
# Sent before the kill: past a few of the gateway's batches of 1000 writes.
BEFORE_KILL = 3000
# How long the stream goes on after the kill before it would end by itself
# (a failed request fails within the bus's 10 s timeout).
AFTER_KILL_S = 20.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("crash")) / "data", PACH_LOG_LEVEL="warning")


def _content(tag: str, i: int) -> bytes:
    """File i's bytes: every 50th is 1.5 MiB (cut into chunks, not packed)."""
    size = 1536 * KiB if i % 50 == 7 else 3 * KiB + i % 977
    line = f"{tag} file {i}\n".encode()
    return (line * (size // len(line) + 1))[:size]


def _path(tag: str, i: int) -> str:
    return f"/{tag}/dir{i % 7}/file{i:06}"


def _messages(commit: pfs.Commit, tag: str, i: int) -> Iterator[pfs.PutFileRequest]:
    data = _content(tag, i)
    yield pfs.PutFileRequest(file=pfs.File(commit=commit, path=_path(tag, i)), value=data[:MESSAGE])
    for start in range(MESSAGE, len(data), MESSAGE):
        yield pfs.PutFileRequest(value=data[start : start + MESSAGE])


def _read(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit, path: str) -> bytes:
    req = pfs.GetFileRequest(file=pfs.File(commit=commit, path=path))
    return b"".join(r.value for r in api.GetFile(req, timeout=60))


def _snapshot(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit) -> dict[str, bytes]:
    """Every file of a finished commit with its bytes."""
    infos = api.GlobFileStream(pfs.GlobFileRequest(commit=commit, pattern="/**"), timeout=300)
    return {i.file.path: _read(api, commit, i.file.path) for i in infos if i.file_type == pfs.FILE}


def _put(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit, tag: str, ids: range) -> None:
    api.PutFile((m for i in ids for m in _messages(commit, tag, i)), timeout=120)


def _commit(api: pfs_pb2_grpc.APIStub, repo: pfs.Repo) -> pfs.Commit:
    req = pfs.StartCommitRequest(parent=pfs.Commit(repo=repo), branch="master")
    commit: pfs.Commit = api.StartCommit(req, timeout=30)
    return commit


def _wait_serving(api: pfs_pb2_grpc.APIStub, commit: pfs.Commit) -> None:
    def answers() -> bool:
        try:
            api.InspectCommit(pfs.InspectCommitRequest(commit=commit), timeout=5)
        except grpc.RpcError:
            return False
        return True

    wait_until(answers, 60)


def _crash_mid_stream(cluster: Cluster, repo_name: str, pid_of: Callable[[], int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        repo = pfs.Repo(name=repo_name)
        api.CreateRepo(pfs.CreateRepoRequest(repo=repo), timeout=30)
        finished: list[tuple[pfs.Commit, dict[str, bytes]]] = []
        for n, ids in enumerate((range(0, 60), range(40, 130))):
            commit = _commit(api, repo)
            _put(api, commit, f"c{n}", ids)
            api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
            finished.append((commit, _snapshot(api, commit)))
        assert len(finished[0][1]) == 60 and len(finished[1][1]) == 60 + 90

        open_commit = _commit(api, repo)
        sent = threading.Event()
        killed = threading.Event()

        streamed = [0]  # files whose every message was handed to gRPC

        def stream() -> Iterator[pfs.PutFileRequest]:
            i = 0
            deadline = None
            while deadline is None or time.monotonic() < deadline:
                yield from _messages(open_commit, "open", i)
                i += 1
                streamed[0] = i
                if i == BEFORE_KILL:
                    sent.set()
                if killed.is_set() and deadline is None:
                    deadline = time.monotonic() + AFTER_KILL_S
                if killed.is_set():
                    time.sleep(0.01)  # a slow client after the kill

        errors: list[grpc.RpcError] = []

        def call() -> None:
            try:
                api.PutFile(stream(), timeout=300)
            except grpc.RpcError as err:
                errors.append(err)

        client = threading.Thread(target=call)
        client.start()
        assert sent.wait(120), "the stream did not get going"
        victim = pid_of()
        os.kill(victim, signal.SIGKILL)
        killed.set()
        client.join(AFTER_KILL_S + 60)
        assert not client.is_alive()
        # Either the client got an error, or (nats-server only: it is back
        # within milliseconds and nats-py reconnects and resends, so no
        # request of the stream may have failed) the stream completed, and
        # then every file it sent must be in the commit (checked below).
        if errors:
            print(f"client error: {errors[0].code()} {errors[0].details()}")
        else:
            print(f"no client error: the stream survived the kill ({streamed[0]} files)")

        wait_until(lambda: not alive(victim) and pid_of() not in (0, victim), 60)
        _wait_serving(api, open_commit)

        for commit, files in finished:
            assert _snapshot(api, commit) == files

        # The open commit still takes writes, and finishes with whole files.
        _put(api, open_commit, "after", range(5))
        api.FinishCommit(pfs.FinishCommitRequest(commit=open_commit), timeout=120)
        got = _snapshot(api, open_commit)
        parent = finished[1][1]
        assert {p: got[p] for p in parent if p in got} == parent  # untouched
        new = {p: data for p, data in got.items() if p not in parent}
        for path, data in new.items():
            tag, i = path.split("/")[1], int(path.rsplit("file", 1)[1])
            assert tag in ("open", "after") and data == _content(tag, i), path
        assert all(_path("after", i) in new for i in range(5))
        whole = len(new) - 5
        # What pfs acknowledged before the kill (in the gateway's batches of
        # 1000 writes) is there; after a stream that did not fail, all of it.
        assert whole >= 1000, whole
        if not errors:
            assert whole == streamed[0], (whole, streamed[0])
        print(f"open commit after the crash: {whole} files from before the kill, whole")


@pytest.mark.timeout(600)
def test_kill_pfs_mid_put_file(cluster: Cluster) -> None:
    def pfs_pid() -> int:
        return int(cluster.state()["processes"]["pfs-0"]["pid"] or 0)

    _crash_mid_stream(cluster, "crash-pfs", pfs_pid)


@pytest.mark.timeout(600)
def test_kill_nats_mid_put_file(cluster: Cluster) -> None:
    def nats_pid() -> int:
        return int(cluster.state()["nats"]["pid"] or 0)

    _crash_mid_stream(cluster, "crash-nats", nats_pid)
