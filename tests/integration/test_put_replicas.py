"""Whole put-files onto one branch through two pfs replicas at once: each
replica decides its batches on the repo state it holds (no round trip to
the log), so the other's appends make that state stale; a stale batch must
lose its append and be built again on the log's state. Every put still
gets its own finished commit, on one line, and every file is on the head."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.support.cluster import Cluster, running

ROUNDS = 4
CLIENTS = 16


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data = Path(tmp_path_factory.mktemp("put-replicas")) / "data"
    yield from running(data, PACH_LOG_LEVEL="warning", PACH_REPLICAS="pfs=2")


def _req(repo: str, path: str, data: bytes) -> pfs.PutFileRequest:
    commit = pfs.Commit(repo=pfs.Repo(name=repo), id="master")
    return pfs.PutFileRequest(file=pfs.File(commit=commit, path=path), value=data)


async def test_two_replicas_putting_onto_one_branch_make_one_line_of_commits(
    cluster: Cluster,
) -> None:
    assert {"pfs-0", "pfs-1"} <= set(cluster.state()["processes"])
    repo = "both"
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") for _ in range(CLIENTS)]
    try:
        apis = [pfs_pb2_grpc.APIStub(c) for c in channels]
        await apis[0].CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)), timeout=60)
        for r in range(ROUNDS):
            await asyncio.gather(
                *(
                    api.PutFile(iter([_req(repo, f"/r{r}-c{i}", b"%d.%d" % (r, i))]), timeout=60)
                    for i, api in enumerate(apis)
                )
            )
    finally:
        for c in channels:
            await c.close()
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        made = api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name=repo)), timeout=30)
        infos = list(made.commit_info)
        assert len(infos) == ROUNDS * CLIENTS
        assert all(c.HasField("finished") for c in infos)
        ids = {c.commit.id for c in infos}
        assert len({c.parent_commit.id for c in infos} & ids) == len(ids) - 1  # one line
        head = pfs.Commit(repo=pfs.Repo(name=repo), id="master")
        listed = api.ListFile(pfs.ListFileRequest(file=pfs.File(commit=head, path="/")))
        names = {f.file.path for f in listed.file_info}
        assert names == {f"/r{r}-c{i}" for r in range(ROUNDS) for i in range(CLIENTS)}
