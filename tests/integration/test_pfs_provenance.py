"""Commit relations and the commands that make or remove many commits at
once, through the real cluster: child commits and subvenance on
InspectCommit/ListCommit, create-branch opening a commit over existing
heads, BuildCommit and DeleteAll (over the HTTP JSON API, which reaches the
same bus commands as gRPC)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import nats
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.events import pfs_pb2 as ev
from libs.api.internal import pfs_branches_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import Bus
from services.pfs.domain import branches, commits, repo
from services.pfs.domain.commits import downstream_id, propagated_id
from tests.integration.test_pfs_repos import code_of
from tests.support.cluster import Cluster, running, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pfs-provenance") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pfs_pb2_grpc.APIStub(channel)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    try:
        yield stub
    finally:
        channel.close()


def http(cluster: Cluster, method: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}/api/pfs/{method}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def commit(r: str, ref: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=r), id=ref)


def branch(r: str, name: str = "master") -> pfs.Branch:
    return pfs.Branch(repo=pfs.Repo(name=r), name=name)


def make_repos(api: pfs_pb2_grpc.APIStub, *names: str) -> None:
    for name in names:
        api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=name)))


def create_branch(
    api: pfs_pb2_grpc.APIStub, r: str, name: str = "master", *prov: pfs.Branch, head: str = ""
) -> None:
    req = pfs.CreateBranchRequest(branch=branch(r, name), provenance=list(prov))
    if head:
        req.head.CopyFrom(commit(r, head))
    api.CreateBranch(req)


def commit_on(api: pfs_pb2_grpc.APIStub, r: str, br: str = "master", parent: str = "") -> str:
    """Start and finish a commit."""
    cid = str(api.StartCommit(pfs.StartCommitRequest(parent=commit(r, parent), branch=br)).id)
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit(r, cid)))
    return cid


def inspect(api: pfs_pb2_grpc.APIStub, r: str, ref: str) -> pfs.CommitInfo:
    return api.InspectCommit(pfs.InspectCommitRequest(commit=commit(r, ref)))


def head(api: pfs_pb2_grpc.APIStub, r: str, name: str = "master") -> str:
    info = api.InspectBranch(pfs.InspectBranchRequest(branch=branch(r, name)))
    return str(info.head.id)


def ids(api: pfs_pb2_grpc.APIStub, r: str) -> list[str]:
    infos = api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name=r))).commit_info
    return [i.commit.id for i in infos]


def provenance(info: pfs.CommitInfo) -> set[tuple[str, str]]:
    return {(c.repo.name, c.id) for c in info.provenance}


def ranges(info: pfs.CommitInfo) -> list[tuple[str, str, str]]:
    return [(r.lower.repo.name, r.lower.id, r.upper.id) for r in info.subvenance]


def test_child_commits_follow_forks_and_deletes(api: pfs_pb2_grpc.APIStub) -> None:
    make_repos(api, "data")
    first = commit_on(api, "data")
    second = commit_on(api, "data")
    third = commit_on(api, "data")
    fork = commit_on(api, "data", "fork", parent=first)
    assert [c.id for c in inspect(api, "data", first).child_commits] == [second, fork]
    assert [c.id for c in inspect(api, "data", second).child_commits] == [third]
    assert list(inspect(api, "data", third).child_commits) == []
    listed = api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name="data"))).commit_info
    assert {i.commit.id: [c.id for c in i.child_commits] for i in listed}[first] == [second, fork]

    api.DeleteCommit(pfs.DeleteCommitRequest(commit=commit("data", second)))
    assert [c.id for c in inspect(api, "data", first).child_commits] == [third, fork]
    assert inspect(api, "data", third).parent_commit.id == first


def test_subvenance_ranges_extend_along_a_branch(api: pfs_pb2_grpc.APIStub) -> None:
    make_repos(api, "images", "params", "out")
    create_branch(api, "images")
    create_branch(api, "params")
    create_branch(api, "out", "master", branch("images"), branch("params"))
    p1 = commit_on(api, "params")
    o0 = downstream_id(p1, "out", "master")
    wait_until(lambda: head(api, "out") == o0)
    a1 = commit_on(api, "images")
    o1 = downstream_id(a1, "out", "master")
    wait_until(lambda: head(api, "out") == o1)
    a2 = commit_on(api, "images")
    o2 = downstream_id(a2, "out", "master")
    wait_until(lambda: head(api, "out") == o2)
    assert provenance(inspect(api, "out", o2)) == {("images", a2), ("params", p1)}
    # p1 is in the provenance of every out commit: one range, o0..o2.
    assert ranges(inspect(api, "params", p1)) == [("out", o0, o2)]
    assert ranges(inspect(api, "images", a1)) == [("out", o1, o1)]
    assert ranges(inspect(api, "out", o2)) == []

    # Deleting an input commit takes its output commit; the range shrinks...
    api.DeleteCommit(pfs.DeleteCommitRequest(commit=commit("images", a2)))
    assert ranges(inspect(api, "params", p1)) == [("out", o0, o1)]
    # ...and grows again on the re-parented branch.
    a3 = commit_on(api, "images")
    o3 = downstream_id(a3, "out", "master")
    wait_until(lambda: head(api, "out") == o3)
    assert inspect(api, "out", o3).parent_commit.id == o1
    assert ranges(inspect(api, "params", p1)) == [("out", o0, o3)]


def test_create_branch_opens_a_commit_over_existing_heads(api: pfs_pb2_grpc.APIStub) -> None:
    make_repos(api, "raw", "clean", "model")
    a1 = commit_on(api, "raw")
    create_branch(api, "clean", "master", branch("raw"))
    c1 = propagated_id("clean", "master", "", [("raw", a1)])
    assert head(api, "clean") == c1  # at once: the command returns after it
    info = inspect(api, "clean", c1)
    assert provenance(info) == {("raw", a1)} and not info.HasField("finished")
    assert ranges(inspect(api, "raw", a1)) == [("clean", c1, c1)]

    # Downstream of a downstream branch: the new upstream commit is its provenance.
    create_branch(api, "model", "master", branch("clean"))
    m1 = head(api, "model")
    assert m1 == propagated_id("model", "master", "", [("raw", a1), ("clean", c1)])
    assert provenance(inspect(api, "model", m1)) == {("raw", a1), ("clean", c1)}

    # The same request again changes nothing (and opens nothing).
    create_branch(api, "clean", "master", branch("raw"))
    create_branch(api, "model", "master", branch("clean"))
    assert ids(api, "clean") == [c1] and ids(api, "model") == [m1]

    # Re-pointing an input branch opens commits downstream of it too, even
    # over heads seen before.
    a2 = commit_on(api, "raw")
    c2 = downstream_id(a2, "clean", "master")
    m2 = downstream_id(a2, "model", "master")
    wait_until(lambda: head(api, "model") == m2)
    create_branch(api, "raw", "master", head=a1)
    c3 = propagated_id("clean", "master", c2, [("raw", a1)])
    assert head(api, "clean") == c3 and c3 != c1
    assert provenance(inspect(api, "clean", c3)) == {("raw", a1)}
    assert inspect(api, "clean", c3).parent_commit.id == c2
    m3 = head(api, "model")
    assert m3 == propagated_id("model", "master", m2, [("raw", a1), ("clean", c3)])
    assert ids(api, "clean") == [c3, c2, c1] and len(ids(api, "model")) == 3

    # An open input head waits: the commit opens when it finishes.
    make_repos(api, "late")
    create_branch(api, "raw", "v2", head=a2)
    pending = str(api.StartCommit(pfs.StartCommitRequest(parent=commit("raw", ""), branch="v2")).id)
    create_branch(api, "late", "master", branch("raw", "v2"))
    assert head(api, "late") == ""
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit("raw", pending)))
    wait_until(lambda: head(api, "late") == downstream_id(pending, "late", "master"))
    assert ids(api, "late") == [downstream_id(pending, "late", "master")]

    # A branch without provenance, or with headless provenance, gets nothing.
    make_repos(api, "empty", "down")
    create_branch(api, "empty")
    create_branch(api, "down", "master", branch("empty"))
    assert ids(api, "down") == []


def propagate(cluster: Cluster, r: str, commit_id: str, name: str = "master") -> None:
    """The internal PropagateBranch (update-pipeline's new job), over the bus."""

    async def run() -> None:
        nc = await nats.connect(cluster.state()["nats"]["url"])
        try:
            req = internal.PropagateBranchRequest(branch=branch(r, name), commit_id=commit_id)
            await Bus(nc, service="test", timeout=30.0).request(
                "pfs", "PropagateBranch", req, Empty
            )
        finally:
            await nc.close()

    asyncio.run(run())


def test_propagate_branch_opens_a_commit_on_everything_downstream(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    """Issue 17: PropagateBranch on u1 opens its new commit and, below it, a
    commit on every downstream branch (chain and cross) over that commit,
    upstream first; a retry opens nothing more."""
    make_repos(api, "src", "u1", "d1", "e1", "x")
    s1 = commit_on(api, "src")
    create_branch(api, "u1", "master", branch("src"))
    create_branch(api, "d1", "master", branch("u1"))
    create_branch(api, "e1", "master", branch("d1"))
    create_branch(api, "x", "master", branch("src"), branch("u1"))
    old = {r: head(api, r) for r in ("u1", "d1", "e1", "x")}

    again = "f" * 32
    for _ in range(2):  # the second time is a retry: a no-op
        propagate(cluster, "u1", again)
    d1, e1, x = (downstream_id(again, r, "master") for r in ("d1", "e1", "x"))
    assert [head(api, r) for r in ("u1", "d1", "e1", "x")] == [again, d1, e1, x]
    assert provenance(inspect(api, "u1", again)) == {("src", s1)}
    assert provenance(inspect(api, "d1", d1)) == {("src", s1), ("u1", again)}
    assert provenance(inspect(api, "e1", e1)) == {("src", s1), ("u1", again), ("d1", d1)}
    assert provenance(inspect(api, "x", x)) == {("src", s1), ("u1", again)}
    for r in ("u1", "d1", "e1", "x"):
        assert inspect(api, r, "master").parent_commit.id == old[r]
        assert len(ids(api, r)) == 2

    # An open input head holds it all back: the reaction opens the chain
    # when that commit finishes.
    pending = str(
        api.StartCommit(pfs.StartCommitRequest(branch="master", parent=commit("src", ""))).id
    )
    propagate(cluster, "u1", "e" * 32)
    assert [len(ids(api, r)) for r in ("u1", "d1", "e1", "x")] == [2, 2, 2, 2]
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit("src", pending)))
    wait_until(lambda: head(api, "e1") == downstream_id(pending, "e1", "master"))


def test_propagation_and_the_reaction_open_one_commit_for_the_same_heads() -> None:
    """Pure: create-branch and the reaction racing over the same input commit
    (different ids, same provenance) open one commit between them."""
    s = repo.evolve(repo.Repo(), ev.RepoCreated(name="out"))
    decide = branches.create_branch(
        "out", "master", provenance=[("raw", "master")], upstream={("raw", "master"): []}
    )
    for e in decide(s):
        s = repo.evolve(s, e)
    a = "a" * 32
    by_branch = propagated_id("out", "master", "", [("raw", a)])
    for e in commits.start_commit("out", by_branch, "master", provenance=[("raw", a)])(s):
        s = repo.evolve(s, e)
    by_reaction = downstream_id(a, "out", "master")
    assert commits.start_commit("out", by_reaction, "master", provenance=[("raw", a)])(s) == []
    other = commits.start_commit("out", by_reaction, "master", provenance=[("raw", "b" * 32)])
    assert [type(e).__name__ for e in other(s)] == ["CommitStarted", "BranchSet"]


def put(api: pfs_pb2_grpc.APIStub, r: str, ref: str, path: str, data: bytes) -> None:
    first = pfs.PutFileRequest(file=pfs.File(commit=commit(r, ref), path=path), value=data)
    api.PutFile(iter([first]), timeout=30)


def get(api: pfs_pb2_grpc.APIStub, r: str, ref: str, path: str) -> bytes:
    req = pfs.GetFileRequest(file=pfs.File(commit=commit(r, ref), path=path))
    return b"".join(m.value for m in api.GetFile(req, timeout=30))


def test_build_commit_from_an_existing_tree(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    make_repos(api, "src", "built", "after")
    put(api, "src", "master", "/a/b.txt", b"hello")
    put(api, "src", "master", "/c.txt", b"world!")
    src = inspect(api, "src", "master")
    tree = src.tree.hash
    assert tree and src.size_bytes == 11
    create_branch(api, "built")
    create_branch(api, "after", "master", branch("built"))

    status, made = http(
        cluster,
        "BuildCommit",
        {"parent": {"repo": {"name": "built"}}, "branch": "master", "tree": {"hash": tree}},
    )
    assert status == 200, made
    first = made["id"]
    info = inspect(api, "built", "master")
    assert info.commit.id == first and info.HasField("finished")
    assert info.tree.hash == tree and info.size_bytes == 11
    assert get(api, "built", "master", "/a/b.txt") == b"hello"
    assert api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="built"))).size_bytes == 11
    # A finished input commit: the downstream branch gets its commit.
    wait_until(lambda: head(api, "after") == downstream_id(first, "after", "master"))

    # The next one stacks on the branch head; an explicit id is kept.
    chosen = "0123456789abcdef0123456789abcdef"
    status, made = http(
        cluster,
        "BuildCommit",
        {
            "parent": {"repo": {"name": "built"}},
            "branch": "master",
            "tree": {"hash": tree},
            "ID": chosen,
        },
    )
    assert status == 200 and made["id"] == chosen
    assert inspect(api, "built", chosen).parent_commit.id == first

    # Bad requests change nothing.
    missing = "f" * 64
    bad: list[tuple[dict[str, Any], int, str]] = [
        ({"tree": {"hash": missing}}, 404, missing),
        ({"tree": {"hash": "nothex"}}, 400, "nothex"),
        ({}, 400, "tree"),
        ({"tree": {"hash": tree}, "ID": chosen}, 409, chosen),
        ({"tree": {"hash": tree}, "ID": "short"}, 400, "short"),
        ({"tree": {"hash": tree}, "branch": "a b"}, 400, "a b"),
    ]
    for extra, code, word in bad:
        body = {"parent": {"repo": {"name": "built"}}, "branch": "master", **extra}
        status, err = http(cluster, "BuildCommit", body)
        assert status == code and word in err["error"]["message"], (extra, status, err)
    status, err = http(
        cluster, "BuildCommit", {"parent": {"repo": {"name": "nope"}}, "tree": {"hash": tree}}
    )
    assert status == 404 and "nope" in err["error"]["message"]
    assert ids(api, "built") == [chosen, first]

    # The same over gRPC.
    req = pfs.BuildCommitRequest(parent=commit("built", ""), branch="master")
    req.tree.hash = tree
    third = api.BuildCommit(req).id
    assert inspect(api, "built", "master").parent_commit.id == chosen == ids(api, "built")[1]
    assert ids(api, "built")[0] == third
    req.tree.hash = missing
    assert code_of(lambda: api.BuildCommit(req)) == grpc.StatusCode.NOT_FOUND


def test_delete_all_removes_every_repo_branch_and_commit(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    make_repos(api, "one", "two")
    old = commit_on(api, "one")
    create_branch(api, "two", "master", branch("one"))
    assert head(api, "two")
    assert http(cluster, "DeleteAll", {}) == (200, {})
    assert list(api.ListRepo(pfs.ListRepoRequest()).repo_info) == []
    api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="one")))
    assert code_of(lambda: inspect(api, "one", old)) == grpc.StatusCode.NOT_FOUND
    assert ids(api, "one") == []
    assert list(api.ListBranch(pfs.ListBranchRequest(repo=pfs.Repo(name="one"))).branch_info) == []
    assert http(cluster, "DeleteAll", {}) == (200, {})  # nothing left: still fine
    api.DeleteAll(Empty())  # and over gRPC
    assert list(api.ListRepo(pfs.ListRepoRequest()).repo_info) == []
