"""Put sessions through the real cluster: pfs decides which commit a
put-file writes to, queues auto-commit puts on one branch, and deletes the
commit of a put whose stream is gone (abandoned at once, or when its lease
lapses) — with kill -9 of the gateway and of pfs in the middle of a put,
32 concurrent puts on one branch, and 20 cancelled streams in a row."""

from __future__ import annotations

import asyncio
import filecmp
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import nats
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import Bus
from libs.errors import FailedPrecondition, InvalidArgument
from tests.support.cluster import ROOT, Cluster, running, wait_until

LEASE_S = 3.0
REPO = "puts"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data = tmp_path_factory.mktemp("put-sessions") / "data"
    yield from running(data, PACH_PUT_LEASE_MS=str(int(LEASE_S * 1000)))


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pfs_pb2_grpc.APIStub(channel)
        wait_for_gateway(stub)
        stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=30)
        stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=REPO)), timeout=30)
        yield stub


def wait_for_gateway(stub: pfs_pb2_grpc.APIStub, timeout: float = 60) -> None:
    def up() -> bool:
        try:
            stub.ListRepo(pfs.ListRepoRequest(), timeout=2)
        except grpc.RpcError:
            return False
        return True

    wait_until(up, timeout)


def pachctl(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )


def commits(api: pfs_pb2_grpc.APIStub) -> list[pfs.CommitInfo]:
    req = pfs.ListCommitRequest(repo=pfs.Repo(name=REPO))
    return list(api.ListCommit(req, timeout=30).commit_info)


def open_commits(api: pfs_pb2_grpc.APIStub) -> list[str]:
    return [c.commit.id for c in commits(api) if not c.HasField("finished")]


def file_msgs(root: Path, names: list[str]) -> Iterator[pfs.PutFileRequest]:
    for name in names:
        f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=REPO), id="master"), path=f"/{name}")
        yield pfs.PutFileRequest(file=f, value=(root / name).read_bytes())


def make_tree(root: Path, n: int) -> list[str]:
    root.mkdir()
    names = [f"f{i:05d}" for i in range(n)]
    for i, name in enumerate(names):
        (root / name).write_bytes(os.urandom(64 + i % 512))
    return names


def kill_and_wait_restart(cluster: Cluster, process: str) -> None:
    pid = cluster.state()["processes"][process]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: cluster.state()["processes"][process]["pid"] not in (pid, None), 60)


def assert_branch_holds(cluster: Cluster, api: pfs_pb2_grpc.APIStub, src: Path, tmp: Path) -> None:
    out = tmp / "got"
    done = pachctl(cluster, "get-file", REPO, "master", "/", "-r", "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    cmp = filecmp.dircmp(src, out)
    assert not cmp.left_only and not cmp.right_only, (cmp.left_only[:5], cmp.right_only[:5])
    _, mismatch, errors = filecmp.cmpfiles(src, out, sorted(os.listdir(src)), shallow=False)
    assert not mismatch and not errors, (mismatch[:5], errors[:5])


def no_open_commit_within_the_lease(api: pfs_pb2_grpc.APIStub) -> None:
    """Every commit is finished within the lease (plus the expiry tick)."""
    deadline = time.monotonic() + LEASE_S + 3
    while (left := open_commits(api)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == [], f"open commits left after the lease: {left}"


@pytest.mark.parametrize("victim", ["gateway-0", "pfs-0"])
def test_kill_9_mid_put_then_retry_leaves_every_file_on_the_branch_and_nothing_open(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub, tmp_path: Path, victim: str
) -> None:
    src = tmp_path / "src"
    names = make_tree(src, 4000)
    before = len(commits(api))
    killed = threading.Event()

    def stream() -> Iterator[pfs.PutFileRequest]:
        # enough files for pfs to open the session's commit (a batch is 1000)
        yield from file_msgs(src, names[:2500])
        killed.wait(60)  # the rest only after the kill
        yield from file_msgs(src, names[2500:])

    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        call = pfs_pb2_grpc.APIStub(channel).PutFile.future(stream(), timeout=120)
        wait_until(lambda: len(open_commits(api)) == 1, 60)  # the put is under way
        kill_and_wait_restart(cluster, victim)
        killed.set()
        try:
            call.result()
            first_put_failed = False
        except grpc.RpcError:
            first_put_failed = True
    wait_for_gateway(api)
    if victim == "gateway-0":
        assert first_put_failed  # the stream died with the gateway
    if first_put_failed:  # the client retries the same put-file
        done = pachctl(cluster, "put-file", REPO, "master", "/", "-r", "-f", str(src))
        assert done.returncode == 0, done.stderr.decode()
    no_open_commit_within_the_lease(api)
    assert len(commits(api)) == before + 1  # the orphan is gone, the retry is one commit
    assert_branch_holds(cluster, api, src, tmp_path)


async def test_32_concurrent_auto_commit_puts_each_get_their_own_commit(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    before = {c.commit.id for c in commits(api)}
    head = lambda c: pfs.Commit(repo=pfs.Repo(name=REPO), id=c)  # noqa: E731

    async def put(channel: grpc.aio.Channel, i: int) -> None:
        async def msgs() -> AsyncIterator[pfs.PutFileRequest]:
            for j in range(3):
                f = pfs.File(commit=head("master"), path=f"/client-{i:02d}/{j}")
                yield pfs.PutFileRequest(file=f, value=b"%d-%d\n" % (i, j))

        await pfs_pb2_grpc.APIStub(channel).PutFile(msgs(), timeout=120)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        results = await asyncio.gather(
            *(put(channel, i) for i in range(32)), return_exceptions=True
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert failed == [], failed[:3]
    new = [c for c in commits(api) if c.commit.id not in before]
    assert len(new) == 32 and all(c.HasField("finished") for c in new)
    # one line of commits, each on the one before
    new_ids = {c.commit.id for c in new}
    parents = [c.parent_commit.id for c in new]
    assert len(set(parents)) == 32 and len(set(parents) & new_ids) == 31
    # each commit added exactly one client's files
    for c in new:
        diff = api.DiffFile(
            pfs.DiffFileRequest(new_file=pfs.File(commit=c.commit, path="/"), shallow=True),
            timeout=30,
        )
        assert len(diff.new_files) == 1, [f.file.path for f in diff.new_files]
    listing = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=head("master"), path="/")))
    assert sorted(f.file.path for f in listing.file_info) == [f"/client-{i:02d}" for i in range(32)]
    for i in (0, 17, 31):
        path = f"/client-{i:02d}/2"
        got = api.GetFile(pfs.GetFileRequest(file=pfs.File(commit=head("master"), path=path)))
        assert b"".join(r.value for r in got) == b"%d-2\n" % i


class ClientGaveUp(Exception):
    """The client's stream fails in the middle of a file."""


async def _torn(
    commit: pfs.Commit, run: int, files: int, gives_up: bool, opened: asyncio.Event
) -> AsyncIterator[pfs.PutFileRequest]:
    """``files`` whole files, then half of one: the stream then fails
    (``gives_up``) or stays open until the call is cancelled."""
    for j in range(files):
        f = pfs.File(commit=commit, path=f"/run-{run:02d}/{j}")
        yield pfs.PutFileRequest(file=f, value=b"x")
    await opened.wait()
    yield pfs.PutFileRequest(value=b"half of a file")
    if gives_up:
        raise ClientGaveUp
    await asyncio.Event().wait()  # until cancelled


async def test_cancelled_put_streams_leave_no_commit_20_times_in_a_row(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    first = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=REPO), id="master"), path="/kept")
    api.PutFile(iter([pfs.PutFileRequest(file=first, value=b"kept\n")]), timeout=30)
    before = [c.commit.id for c in commits(api)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        stub = pfs_pb2_grpc.APIStub(channel)
        for run in range(20):
            # odd runs: after a batch, so pfs has opened the session's commit;
            # even runs: in the middle of the first file. Runs 0, 1 (mod 4):
            # the client's stream fails; 2, 3: the client cancels the call.
            files, gives_up = (1001 if run % 2 else 1), run % 4 < 2
            opened = asyncio.Event()
            call = stub.PutFile(_torn(first.commit, run, files, gives_up, opened), timeout=60)
            if run % 2:
                await asyncio.to_thread(wait_until, lambda: bool(open_commits(api)), 30)
            opened.set()
            if not gives_up:
                await asyncio.sleep(0.05)
                call.cancel()
            with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
                await call
            await asyncio.to_thread(no_open_commit_within_the_lease, api)
            assert [c.commit.id for c in commits(api)] == before, f"run {run}"
    listing = api.ListFile(pfs.ListFileRequest(file=first), timeout=30)
    assert [f.file.path for f in listing.file_info] == ["/kept"]


async def test_a_session_cannot_take_or_drop_what_another_holds(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    """Over pfs's own bus commands, as a confused or hostile gateway would
    send them: another session's AbandonPut, EndPut or writes leave a held
    commit alone; EndPut needs a session; an abandoned session is refused."""
    nc = await nats.connect(cluster.state()["nats"]["url"])
    bus = Bus(nc, service="test")
    master = pfs.Commit(repo=pfs.Repo(name=REPO), id="master")

    async def ask(name: str, session: str, commit: pfs.Commit) -> internal.PutFileRefsResponse:
        req = internal.PutFileRefsRequest(commit=commit, session=session)
        return await bus.request("pfs", name, req, internal.PutFileRefsResponse)

    def abandon_of(session: str, commit: pfs.Commit) -> internal.AbandonPutRequest:
        return internal.AbandonPutRequest(session=session, commits=[commit])

    try:
        held = (await ask("PutFileRefs", "s1", master)).commit
        assert open_commits(api) == [held.id]
        abandon = internal.AbandonPutRequest(session="s2", commits=[held, master])
        await bus.request("pfs", "AbandonPut", abandon, Empty)
        assert open_commits(api) == [held.id]  # not s2's to drop
        # s3 waits behind s1 (queued), it does not write into s1's commit
        assert (await ask("PutFileRefs", "s3", master)).queued
        with pytest.raises(InvalidArgument, match="EndPut ends a put session"):
            await ask("EndPut", "", held)
        await bus.request("pfs", "AbandonPut", abandon_of("s1", master), Empty)
        assert open_commits(api) == []
        with pytest.raises(FailedPrecondition, match="put session s1 was abandoned"):
            await ask("PutFileRefs", "s1", master)
        await bus.request("pfs", "AbandonPut", abandon_of("s3", master), Empty)
    finally:
        await nc.close()
