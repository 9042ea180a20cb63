"""Whole put-files onto one branch, made in batches (pfs's group commit),
through the real cluster: many concurrent one-file puts share appends yet
each gets its own finished commit; a put whose tree conflicts fails alone;
and kill -9 of pfs while batches are in flight loses no acknowledged put
and leaves no commit open."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import nats
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import Cluster, running, wait_until

LEASE_S = 3.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data = Path(tmp_path_factory.mktemp("put-batches")) / "data"
    yield from running(data, PACH_LOG_LEVEL="warning", PACH_PUT_LEASE_MS=str(int(LEASE_S * 1000)))


def _branch(repo: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id="master")


def _req(repo: str, path: str, data: bytes) -> pfs.PutFileRequest:
    return pfs.PutFileRequest(file=pfs.File(commit=_branch(repo), path=path), value=data)


def _serving(cluster: Cluster) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)

        def up() -> bool:
            try:
                api.ListRepo(pfs.ListRepoRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return True

        wait_until(up, 60)


async def _messages_on(cluster: Cluster, subject: str) -> int:
    nc = await nats.connect(cluster.state()["nats"]["url"])
    try:
        info = await nc.jetstream().stream_info("EVENTS", subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))
    finally:
        await nc.close()


def _commits(api: pfs_pb2_grpc.APIStub, repo: str) -> list[pfs.CommitInfo]:
    req = pfs.ListCommitRequest(repo=pfs.Repo(name=repo))
    return list(api.ListCommit(req, timeout=30).commit_info)


def _head_files(api: pfs_pb2_grpc.APIStub, repo: str) -> dict[str, bytes]:
    listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=_branch(repo), path="/")))
    out = {}
    for info in listed.file_info:
        req = pfs.GetFileRequest(file=pfs.File(commit=_branch(repo), path=info.file.path))
        out[info.file.path] = b"".join(r.value for r in api.GetFile(req, timeout=30))
    return out


async def test_32_concurrent_one_file_puts_share_appends_and_each_get_a_commit(
    cluster: Cluster,
) -> None:
    repo = "burst"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        await api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)))
        before = await _messages_on(cluster, f"ev.pfs.repo.{repo}")
        await asyncio.gather(
            *(
                api.PutFile(iter([_req(repo, f"/f{i:02d}", b"%d" % i)]), timeout=60)
                for i in range(32)
            )
        )
        after = await _messages_on(cluster, f"ev.pfs.repo.{repo}")
    # one message per batch, not several per put
    assert after - before < 32, (before, after)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        sync = pfs_pb2_grpc.APIStub(channel)
        made = _commits(sync, repo)
        assert len(made) == 32 and all(c.HasField("finished") for c in made)
        ids = {c.commit.id for c in made}
        assert len({c.parent_commit.id for c in made} & ids) == 31  # one line of commits
        assert _head_files(sync, repo) == {f"/f{i:02d}": b"%d" % i for i in range(32)}


def _objects(cluster: Cluster) -> set[Path]:
    return {p for p in (cluster.data_dir / "objects" / "chunks").rglob("*") if p.is_file()}


async def test_concurrent_one_file_puts_share_pack_writes_in_the_gateway(
    cluster: Cluster,
) -> None:
    repo = "packs"
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") for _ in range(32)]
    try:
        apis = [pfs_pb2_grpc.APIStub(c) for c in channels]
        await apis[0].CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)))
        before = _objects(cluster)
        await asyncio.gather(
            *(
                api.PutFile(iter([_req(repo, f"/f{i:02d}", b"pack %d" % i)]), timeout=60)
                for i, api in enumerate(apis)
            )
        )
        written = _objects(cluster) - before
    finally:
        for c in channels:
            await c.close()
    # 32 small files from 32 streams: shared packs, not one pack each (how
    # many share depends on how the streams arrive: a loaded machine spreads
    # them out)
    assert 0 < len(written) < 32, len(written)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        sync = pfs_pb2_grpc.APIStub(channel)
        assert len(_commits(sync, repo)) == 32
        assert _head_files(sync, repo) == {f"/f{i:02d}": b"pack %d" % i for i in range(32)}


async def test_a_put_whose_tree_conflicts_fails_alone(cluster: Cluster) -> None:
    repo = "conflict"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        await api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)))
        await api.PutFile(iter([_req(repo, "/a", b"file")]), timeout=60)
        puts = [_req(repo, f"/ok{i}", b"ok") for i in range(10)]
        puts.insert(5, _req(repo, "/a/under-a-file", b"no"))
        results = await asyncio.gather(
            *(api.PutFile(iter([p]), timeout=60) for p in puts), return_exceptions=True
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1
    assert isinstance(failed[0], grpc.aio.AioRpcError)
    assert failed[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "file/directory conflict" in (failed[0].details() or "")
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        sync = pfs_pb2_grpc.APIStub(channel)
        made = _commits(sync, repo)
        assert len(made) == 11 and all(c.HasField("finished") for c in made)
        assert set(_head_files(sync, repo)) == {"/a", *(f"/ok{i}" for i in range(10))}


def _kill_pfs(cluster: Cluster) -> None:
    pid = cluster.state()["processes"]["pfs-0"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: cluster.state()["processes"]["pfs-0"]["pid"] not in (pid, None), 60)


def _more_acked(acked: dict[str, bytes], more: int) -> None:
    then = len(acked)
    wait_until(lambda: len(acked) >= then + more, 60)


def test_kill_9_of_pfs_during_batches_loses_no_acknowledged_put(cluster: Cluster) -> None:
    repo = "killed"
    _serving(cluster)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        pfs_pb2_grpc.APIStub(channel).CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)))
    stop = threading.Event()
    acked: dict[str, bytes] = {}
    failed = [0]

    def client(c: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
            api = pfs_pb2_grpc.APIStub(channel)
            n = 0
            while not stop.is_set():
                path, data = f"/c{c:02d}-{n:04d}", b"client %d put %d\n" % (c, n)
                try:
                    api.PutFile(iter([_req(repo, path, data)]), timeout=20)
                except grpc.RpcError:
                    failed[0] += 1
                    time.sleep(0.1)
                else:
                    acked[path] = data
                n += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(12)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            wait_until(lambda: len(acked) >= 40, 60)
            _kill_pfs(cluster)
            _serving(cluster)
            _more_acked(acked, 20)  # puts go on after the restart
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failed[0] > 0  # the kills did hit puts in flight
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        deadline = time.monotonic() + LEASE_S + 5
        while time.monotonic() < deadline:
            left = [c.commit.id for c in _commits(api, repo) if not c.HasField("finished")]
            if not left:
                break
            time.sleep(0.2)
        assert left == [], f"open commits left: {left}"
        head = _head_files(api, repo)
    missing = sorted(p for p in acked if p not in head)
    assert not missing, f"{len(missing)} acknowledged puts lost, e.g. {missing[:5]}"
    assert all(head[p] == data for p, data in acked.items())
