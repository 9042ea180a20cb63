"""Commits and branches through the real cluster: gRPC (pfs.API on the
gateway) and pachctl."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import grpc
import pytest

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from services.pfs.domain.commits import propagated_id
from tests.integration.test_pfs_repos import code_of, pachctl
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("pfs-commits") / "data")


@pytest.fixture
def api(cluster: Cluster) -> Iterator[pfs_pb2_grpc.APIStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pfs_pb2_grpc.APIStub(channel)
    stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    try:
        yield stub
    finally:
        channel.close()


def repo(name: str) -> pfs.Repo:
    return pfs.Repo(name=name)


def commit(r: str, ref: str) -> pfs.Commit:
    return pfs.Commit(repo=repo(r), id=ref)


def branch(r: str, name: str) -> pfs.Branch:
    return pfs.Branch(repo=repo(r), name=name)


def start(
    api: pfs_pb2_grpc.APIStub, r: str, br: str = "master", parent: str = "", description: str = ""
) -> str:
    req = pfs.StartCommitRequest(parent=commit(r, parent), branch=br, description=description)
    return str(api.StartCommit(req).id)


def finish(api: pfs_pb2_grpc.APIStub, r: str, ref: str) -> None:
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit(r, ref)))


def ids(api: pfs_pb2_grpc.APIStub, r: str, to: str = "", **kw: object) -> list[str]:
    req = pfs.ListCommitRequest(repo=repo(r), to=commit(r, to) if to else None, **kw)  # type: ignore[arg-type]
    return [i.commit.id for i in api.ListCommit(req).commit_info]


def inspect(api: pfs_pb2_grpc.APIStub, r: str, ref: str) -> pfs.CommitInfo:
    return api.InspectCommit(pfs.InspectCommitRequest(commit=commit(r, ref)))


def heads(api: pfs_pb2_grpc.APIStub, r: str) -> dict[str, str]:
    infos = api.ListBranch(pfs.ListBranchRequest(repo=repo(r))).branch_info
    return {i.branch.name: i.head.id for i in infos}


def test_commit_lifecycle_over_grpc(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")))
    first = start(api, "data", description="one")
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    info = inspect(api, "data", "master")
    assert info.commit.id == first and not info.HasField("finished")
    assert info.description == "one" and not info.HasField("parent_commit")
    finish(api, "data", "master")
    info = inspect(api, "data", first)
    assert (
        info.HasField("finished") and info.finished.ToNanoseconds() >= info.started.ToNanoseconds()
    )
    second = start(api, "data")
    api.FinishCommit(pfs.FinishCommitRequest(commit=commit("data", second), description="two"))
    third = start(api, "data")
    finish(api, "data", third)
    assert inspect(api, "data", "master").parent_commit.id == second
    assert inspect(api, "data", "master^").description == "two"
    assert inspect(api, "data", "master~2").commit.id == first
    assert inspect(api, "data", f"{third}^^").commit.id == first
    assert ids(api, "data") == [third, second, first]  # newest first
    assert ids(api, "data", "master") == [third, second, first]
    assert ids(api, "data", "master", number=2) == [third, second]
    assert ids(api, "data", "master", **{"from": commit("data", first)}) == [third, second]
    assert ids(api, "data", "master^") == [second, first]
    assert heads(api, "data") == {"master": third}
    repo_info = api.InspectRepo(pfs.InspectRepoRequest(repo=repo("data")))
    assert [b.name for b in repo_info.branches] == ["master"]

    # Delete the middle commit: the child takes its parent.
    api.DeleteCommit(pfs.DeleteCommitRequest(commit=commit("data", second)))
    assert inspect(api, "data", third).parent_commit.id == first
    assert ids(api, "data", "master") == [third, first]
    # Delete the head: the branch moves back; the last one leaves it headless.
    api.DeleteCommit(pfs.DeleteCommitRequest(commit=commit("data", "master")))
    assert heads(api, "data") == {"master": first}
    api.DeleteCommit(pfs.DeleteCommitRequest(commit=commit("data", "master")))
    assert heads(api, "data") == {"master": ""} and ids(api, "data") == []
    fresh = start(api, "data")
    assert not inspect(api, "data", fresh).HasField("parent_commit")


def test_forks_and_commits_on_no_branch(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")))
    base = start(api, "data")
    finish(api, "data", base)
    fork = start(api, "data", "patch", parent="master")
    assert inspect(api, "data", "patch").parent_commit.id == base
    loose = start(api, "data", "", parent=base)
    assert inspect(api, "data", loose).parent_commit.id == base
    assert heads(api, "data") == {"master": base, "patch": fork}
    # Newest branch first (moving a head keeps a branch's place).
    finish(api, "data", fork)
    start(api, "data")
    listed = api.ListBranch(pfs.ListBranchRequest(repo=repo("data"))).branch_info
    assert [i.branch.name for i in listed] == ["patch", "master"]


def test_commit_refusals_change_nothing(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")))
    head = start(api, "data")
    checks: list[tuple[Callable[[], object], grpc.StatusCode]] = [
        (lambda: start(api, "nope"), grpc.StatusCode.NOT_FOUND),
        (lambda: start(api, "data"), grpc.StatusCode.FAILED_PRECONDITION),  # head open
        (lambda: start(api, "data", "a" * 32), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: start(api, "data", "bad name"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: start(api, "data", "x", parent="nope"), grpc.StatusCode.NOT_FOUND),
        (lambda: inspect(api, "data", "master^"), grpc.StatusCode.NOT_FOUND),
        (lambda: inspect(api, "data", "master^x"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: inspect(api, "data", "b" * 32), grpc.StatusCode.NOT_FOUND),
        (lambda: inspect(api, "nope", "master"), grpc.StatusCode.NOT_FOUND),
        (lambda: finish(api, "data", "nope"), grpc.StatusCode.NOT_FOUND),
        (lambda: ids(api, "nope"), grpc.StatusCode.NOT_FOUND),
        (
            lambda: api.DeleteCommit(pfs.DeleteCommitRequest(commit=commit("data", "zz"))),
            grpc.StatusCode.NOT_FOUND,
        ),
    ]
    for call, code in checks:
        assert code_of(call) == code
    finish(api, "data", head)
    assert code_of(lambda: finish(api, "data", head)) == grpc.StatusCode.FAILED_PRECONDITION
    assert ids(api, "data") == [head] and heads(api, "data") == {"master": head}


def test_branches_and_provenance(api: pfs_pb2_grpc.APIStub) -> None:
    for name in ("raw", "clean", "model"):
        api.CreateRepo(pfs.CreateRepoRequest(repo=repo(name)))
    first = start(api, "raw")
    finish(api, "raw", first)
    second = start(api, "raw")
    finish(api, "raw", second)
    create = api.CreateBranch
    create(pfs.CreateBranchRequest(branch=branch("raw", "v1"), head=commit("raw", "master^")))
    assert heads(api, "raw") == {"master": second, "v1": first}
    # set-branch: point at another commit.
    create(pfs.CreateBranchRequest(branch=branch("raw", "v1"), head=commit("raw", second)))
    assert heads(api, "raw")["v1"] == second
    create(
        pfs.CreateBranchRequest(
            branch=branch("clean", "master"), provenance=[branch("raw", "master")]
        )
    )
    create(
        pfs.CreateBranchRequest(
            branch=branch("model", "master"), provenance=[branch("clean", "master")]
        )
    )
    info = api.InspectBranch(pfs.InspectBranchRequest(branch=branch("model", "master")))
    assert [(b.repo.name, b.name) for b in info.provenance] == [
        ("raw", "master"),
        ("clean", "master"),
    ]
    assert [(b.repo.name, b.name) for b in info.direct_provenance] == [("clean", "master")]
    # Created over existing data: clean/master got a commit over raw's head at
    # once (1.7), and model/master one over that.
    assert info.HasField("head")
    assert heads(api, "clean") == {
        "master": propagated_id("clean", "master", "", [("raw", second)])
    }
    raw_info = api.InspectBranch(pfs.InspectBranchRequest(branch=branch("raw", "master")))
    assert {(b.repo.name, b.name) for b in raw_info.subvenance} == {
        ("clean", "master"),
        ("model", "master"),
    }

    bad: list[tuple[pfs.CreateBranchRequest, grpc.StatusCode]] = [
        (  # cycle
            pfs.CreateBranchRequest(
                branch=branch("raw", "master"), provenance=[branch("model", "master")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (  # self
            pfs.CreateBranchRequest(branch=branch("raw", "x"), provenance=[branch("raw", "x")]),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pfs.CreateBranchRequest(branch=branch("raw", "c" * 32)),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (pfs.CreateBranchRequest(branch=branch("raw", "a.b")), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pfs.CreateBranchRequest(
                branch=branch("raw", "x"), provenance=[branch("nope", "master")]
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            pfs.CreateBranchRequest(branch=branch("raw", "x"), head=commit("raw", "master~5")),
            grpc.StatusCode.NOT_FOUND,
        ),
        (pfs.CreateBranchRequest(branch=branch("nope", "x")), grpc.StatusCode.NOT_FOUND),
    ]
    for req, code in bad:
        assert code_of(lambda r=req: create(r)) == code, req
    # No commits by hand on an output branch.
    assert code_of(lambda: start(api, "clean")) == grpc.StatusCode.FAILED_PRECONDITION
    # Upstream branches and repos cannot go without --force.
    delete = api.DeleteBranch
    assert code_of(lambda: delete(pfs.DeleteBranchRequest(branch=branch("raw", "master")))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code_of(lambda: api.DeleteRepo(pfs.DeleteRepoRequest(repo=repo("raw")))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert code_of(lambda: delete(pfs.DeleteBranchRequest(branch=branch("raw", "zz")))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert heads(api, "raw") == {"master": second, "v1": second}  # nothing changed
    assert set(heads(api, "model")) == {"master"}

    delete(pfs.DeleteBranchRequest(branch=branch("raw", "v1")))
    assert heads(api, "raw") == {"master": second}
    delete(pfs.DeleteBranchRequest(branch=branch("raw", "master"), force=True))
    assert heads(api, "raw") == {}
    assert ids(api, "raw") == [second, first]  # commits stay
    api.DeleteRepo(pfs.DeleteRepoRequest(repo=repo("model")))  # nothing downstream
    api.DeleteRepo(pfs.DeleteRepoRequest(repo=repo("raw"), force=True))
    names = [i.repo.name for i in api.ListRepo(pfs.ListRepoRequest()).repo_info]
    assert names == ["clean"]


def test_deleted_repo_takes_its_commits_and_branches(api: pfs_pb2_grpc.APIStub) -> None:
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("gone")))
    old = start(api, "gone")
    api.DeleteRepo(pfs.DeleteRepoRequest(repo=repo("gone")))
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("gone")))
    assert heads(api, "gone") == {} and ids(api, "gone") == []
    assert code_of(lambda: inspect(api, "gone", old)) == grpc.StatusCode.NOT_FOUND
    start(api, "gone")  # the old open head is gone too


def test_pachctl_commit_and_branch_commands(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    assert pachctl(cluster, "create-repo", "data").returncode == 0
    started = pachctl(cluster, "start-commit", "data", "master", "-m", "first")
    assert started.returncode == 0, started.stderr
    first = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    listing = pachctl(cluster, "list-commit", "data").stdout.splitlines()
    assert listing[0].split() == ["REPO", "ID", "PARENT", "STARTED", "DURATION", "SIZE"]
    assert re.fullmatch(rf"data +{first} +<none> +.+ ago +- +-", listing[1].rstrip()), listing
    assert pachctl(cluster, "finish-commit", "data", "master").returncode == 0
    second = pachctl(cluster, "start-commit", "data", "master").stdout.strip()
    assert pachctl(cluster, "finish-commit", "data", second, "--description", "d2").returncode == 0
    listing = pachctl(cluster, "list-commit", "data", "master").stdout.splitlines()
    assert len(listing) == 3 and listing[1].split()[1:3] == [second, first]
    assert listing[1].rstrip().endswith("0B")
    assert (
        len(pachctl(cluster, "list-commit", "data", "master", "-n", "1").stdout.splitlines()) == 2
    )
    since = pachctl(cluster, "list-commit", "data", "master", "--from", first).stdout
    assert [ln.split()[1] for ln in since.splitlines()[1:]] == [second]

    detail = pachctl(cluster, "inspect-commit", "data", "master").stdout
    assert detail.splitlines()[0] == f"Commit: data/{second}"
    assert "Description: d2" in detail and f"Parent: {first}" in detail
    assert "Finished:" in detail and "Size: 0B" in detail
    raw = json.loads(pachctl(cluster, "inspect-commit", "data", "master^", "--raw").stdout)
    assert raw["commit"]["id"] == first and raw["description"] == "first"

    assert pachctl(cluster, "create-branch", "data", "v1", "--head", "master^").returncode == 0
    assert pachctl(cluster, "create-repo", "out").returncode == 0
    made = pachctl(cluster, "create-branch", "out", "master", "-p", "data/master")
    assert made.returncode == 0, made.stderr
    branches = pachctl(cluster, "list-branch", "data").stdout.splitlines()
    assert branches[0].split() == ["BRANCH", "HEAD"]
    assert sorted(ln.split() for ln in branches[1:]) == [["master", second], ["v1", first]]
    assert pachctl(cluster, "list-branch", "out").stdout.splitlines()[1].split() == [
        "master",
        propagated_id("out", "master", "", [("data", second)]),
    ]
    assert pachctl(cluster, "set-branch", "data", second, "v1").returncode == 0
    assert heads(api, "data")["v1"] == second
    inspected = pachctl(cluster, "inspect-branch", "out", "master").stdout
    assert "Name: out/master" in inspected and "data/master" in inspected

    refused = pachctl(cluster, "delete-branch", "data", "master")
    assert refused.returncode == 1 and "out/master" in refused.stderr
    assert pachctl(cluster, "delete-branch", "data", "master", "-f").returncode == 0
    assert pachctl(cluster, "delete-commit", "data", second).returncode == 0
    assert heads(api, "data") == {"v1": first}
    bad = pachctl(cluster, "start-commit", "data", "no spaces")
    assert bad.returncode == 1 and "invalid" in bad.stderr


def test_finishing_an_input_commit_opens_commits_downstream(api: pfs_pb2_grpc.APIStub) -> None:
    from services.pfs.domain.commits import downstream_id
    from tests.support.cluster import wait_until

    for name in ("raw", "clean", "model"):
        api.CreateRepo(pfs.CreateRepoRequest(repo=repo(name)))
    create = api.CreateBranch
    create(pfs.CreateBranchRequest(branch=branch("raw", "master")))
    create(
        pfs.CreateBranchRequest(
            branch=branch("clean", "master"), provenance=[branch("raw", "master")]
        )
    )
    create(
        pfs.CreateBranchRequest(
            branch=branch("model", "master"),
            provenance=[branch("clean", "master"), branch("raw", "master")],
        )
    )
    first = start(api, "raw")
    assert heads(api, "clean") == {"master": ""}  # nothing until it finishes
    finish(api, "raw", first)
    clean_id = downstream_id(first, "clean", "master")
    model_id = downstream_id(first, "model", "master")
    wait_until(lambda: heads(api, "model") == {"master": model_id}, 20)
    assert heads(api, "clean") == {"master": clean_id}
    clean = inspect(api, "clean", "master")
    assert [(c.repo.name, c.id) for c in clean.provenance] == [("raw", first)]
    assert not clean.HasField("finished")
    model = inspect(api, "model", "master")
    assert {(c.repo.name, c.id) for c in model.provenance} == {("raw", first), ("clean", clean_id)}

    # The next input commit queues a second output commit on the open one.
    second = start(api, "raw")
    finish(api, "raw", second)
    wait_until(lambda: heads(api, "clean")["master"] == downstream_id(second, "clean", "master"))
    assert inspect(api, "clean", "master").parent_commit.id == clean_id
    # Finishing an output commit opens nothing more: once a later input
    # commit has come through (events are handled in order), each output
    # branch holds exactly one commit per input commit.
    finish(api, "clean", clean_id)
    third = start(api, "raw")
    finish(api, "raw", third)
    wait_until(lambda: heads(api, "model")["master"] == downstream_id(third, "model", "master"))
    assert len(ids(api, "clean")) == 3 and len(ids(api, "model")) == 3


def test_commits_and_branches_survive_a_pfs_restart(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    """The read models resume from their checkpoints, the aggregate is
    reloaded from the log: nothing is lost or doubled, and the rules hold."""
    import os
    import signal

    from tests.support.cluster import wait_until

    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("kept")))
    done = start(api, "kept")
    finish(api, "kept", done)
    open_one = start(api, "kept")
    api.CreateBranch(
        pfs.CreateBranchRequest(branch=branch("kept", "v1"), head=commit("kept", done))
    )
    old = cluster.state()["processes"]["pfs-0"]["pid"]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: cluster.state()["processes"]["pfs-0"]["pid"] not in (old, None), 30)

    def answers() -> bool:
        try:
            return heads(api, "kept") == {"master": open_one, "v1": done}
        except grpc.RpcError:
            return False

    wait_until(answers, 30)
    assert ids(api, "kept") == [open_one, done]
    assert code_of(lambda: start(api, "kept")) == grpc.StatusCode.FAILED_PRECONDITION
    finish(api, "kept", "master")
    assert inspect(api, "kept", "master").HasField("finished")


def test_inspect_commit_blocks_until_finished(api: pfs_pb2_grpc.APIStub) -> None:
    import threading

    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("data")))
    head = start(api, "data")
    blocking = pfs.InspectCommitRequest(commit=commit("data", "master"), block_state=pfs.FINISHED)
    with pytest.raises(grpc.RpcError) as info:
        api.InspectCommit(blocking, timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    timer = threading.Timer(0.3, lambda: finish(api, "data", head))
    timer.start()
    try:
        got = api.InspectCommit(blocking, timeout=10)
    finally:
        timer.join()
    assert got.commit.id == head and got.HasField("finished")
    ready = pfs.InspectCommitRequest(commit=commit("data", head), block_state=pfs.READY)
    assert api.InspectCommit(ready, timeout=5).commit.id == head


def test_list_commit_stream_pages_along_the_ancestry(api: pfs_pb2_grpc.APIStub) -> None:
    from services.gateway.app.commits import LIST_PAGE

    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("long")))
    made = []
    for _ in range(LIST_PAGE + 5):
        made.append(start(api, "long"))
        finish(api, "long", made[-1])
    newest_first = made[::-1]

    def streamed(**kw: object) -> list[str]:
        req = pfs.ListCommitRequest(repo=repo("long"), **kw)  # type: ignore[arg-type]
        return [i.commit.id for i in api.ListCommitStream(req, timeout=30)]

    assert streamed(to=commit("long", "master")) == newest_first
    assert streamed() == newest_first
    assert (
        streamed(to=commit("long", "master"), number=LIST_PAGE + 2) == newest_first[: LIST_PAGE + 2]
    )
    since = streamed(to=commit("long", "master"), **{"from": commit("long", made[1])})
    assert since == newest_first[:-2]
    assert streamed(to=commit("long", "master~3"), number=2) == newest_first[3:5]


def test_flush_commit_waits_for_downstream_commits(
    cluster: Cluster, api: pfs_pb2_grpc.APIStub
) -> None:
    import threading

    from services.pfs.domain.commits import downstream_id

    for name in ("raw", "clean", "model"):
        api.CreateRepo(pfs.CreateRepoRequest(repo=repo(name)))
    create = api.CreateBranch
    create(pfs.CreateBranchRequest(branch=branch("raw", "master")))
    create(
        pfs.CreateBranchRequest(
            branch=branch("clean", "master"), provenance=[branch("raw", "master")]
        )
    )
    create(
        pfs.CreateBranchRequest(
            branch=branch("model", "master"), provenance=[branch("clean", "master")]
        )
    )
    first = start(api, "raw")
    finish(api, "raw", first)
    clean_id = downstream_id(first, "clean", "master")
    model_id = downstream_id(first, "model", "master")

    def flush(*to: str) -> list[tuple[str, str]]:
        req = pfs.FlushCommitRequest(commits=[commit("raw", first)], to_repos=[repo(r) for r in to])
        return [(i.commit.repo.name, i.commit.id) for i in api.FlushCommit(req, timeout=10)]

    # Blocks while the downstream commits are open.
    req = pfs.FlushCommitRequest(commits=[commit("raw", first)])
    with pytest.raises(grpc.RpcError) as info:
        list(api.FlushCommit(req, timeout=0.5))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]

    def finish_outputs() -> None:
        finish(api, "clean", clean_id)
        finish(api, "model", model_id)

    timer = threading.Timer(0.3, finish_outputs)
    timer.start()
    try:
        assert flush() == sorted([("clean", clean_id), ("model", model_id)])
    finally:
        timer.join()
    assert flush("model") == [("model", model_id)]
    # An output commit's own downstream.
    down = pfs.FlushCommitRequest(commits=[commit("clean", clean_id)])
    assert [i.commit.id for i in api.FlushCommit(down, timeout=10)] == [model_id]
    # A branch created downstream later ...
    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("late")))
    create(
        pfs.CreateBranchRequest(
            branch=branch("late", "master"), provenance=[branch("raw", "master")]
        )
    )
    # ... and gets a commit over raw's head at once, which flush waits for.
    late_id = propagated_id("late", "master", "", [("raw", first)])
    finish(api, "late", late_id)
    assert flush("late") == [("late", late_id)]
    missing = pfs.FlushCommitRequest(commits=[commit("raw", "nope")])
    assert code_of(lambda: list(api.FlushCommit(missing, timeout=10))) == grpc.StatusCode.NOT_FOUND

    out = pachctl(cluster, "flush-commit", f"raw/{first}", "-r", "model")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[0] == "REPO" and lines[1].split()[:2] == ["model", model_id]
    bad = pachctl(cluster, "flush-commit", "raw")
    assert bad.returncode == 1 and "repo/commit" in bad.stderr


def test_provenance_changes_reach_downstream_branches(api: pfs_pb2_grpc.APIStub) -> None:
    from services.pfs.domain.commits import downstream_id
    from tests.support.cluster import wait_until

    for name in ("raw", "clean", "model"):
        api.CreateRepo(pfs.CreateRepoRequest(repo=repo(name)))
    create = api.CreateBranch
    create(pfs.CreateBranchRequest(branch=branch("raw", "master")))
    create(pfs.CreateBranchRequest(branch=branch("clean", "master")))
    create(
        pfs.CreateBranchRequest(
            branch=branch("model", "master"), provenance=[branch("clean", "master")]
        )
    )
    # clean gets an input after model already depends on it.
    create(
        pfs.CreateBranchRequest(
            branch=branch("clean", "master"), provenance=[branch("raw", "master")]
        )
    )

    def provenance(r: str) -> list[tuple[str, str]]:
        info = api.InspectBranch(pfs.InspectBranchRequest(branch=branch(r, "master")))
        return [(b.repo.name, b.name) for b in info.provenance]

    assert provenance("model") == [("raw", "master"), ("clean", "master")]
    first = start(api, "raw")
    finish(api, "raw", first)
    wait_until(lambda: heads(api, "model")["master"] == downstream_id(first, "model", "master"))
    # And away again.
    create(pfs.CreateBranchRequest(branch=branch("clean", "master")))
    assert provenance("model") == [("clean", "master")]
    raw_info = api.InspectBranch(pfs.InspectBranchRequest(branch=branch("raw", "master")))
    assert list(raw_info.subvenance) == []


def test_subscribe_commit_follows_a_branch(cluster: Cluster, api: pfs_pb2_grpc.APIStub) -> None:
    import os
    import subprocess
    import sys

    from tests.support.cluster import ROOT

    api.CreateRepo(pfs.CreateRepoRequest(repo=repo("feed")))
    first = start(api, "feed")
    finish(api, "feed", first)
    second = start(api, "feed")  # open: not sent in FINISHED mode until it finishes

    req = pfs.SubscribeCommitRequest(repo=repo("feed"), branch="master", state=pfs.FINISHED)
    stream = api.SubscribeCommit(req, timeout=20)
    assert next(stream).commit.id == first
    finish(api, "feed", second)
    assert next(stream).commit.id == second
    third = start(api, "feed")
    finish(api, "feed", third)
    assert next(stream).commit.id == third
    stream.cancel()

    since = pfs.SubscribeCommitRequest(repo=repo("feed"), branch="master")
    getattr(since, "from").CopyFrom(commit("feed", second))
    started = api.SubscribeCommit(since, timeout=20)
    assert next(started).commit.id == third
    fourth = start(api, "feed")
    assert next(started).commit.id == fourth  # STARTED: sent while still open
    started.cancel()
    missing = pfs.SubscribeCommitRequest(repo=repo("nope"), branch="master")
    assert (
        code_of(lambda: next(api.SubscribeCommit(missing, timeout=10))) == grpc.StatusCode.NOT_FOUND
    )

    finish(api, "feed", fourth)
    env = {**os.environ, "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "programs.pachctl", "subscribe-commit", "feed", "master", "--new"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == [
            "REPO",
            "ID",
            "PARENT",
            "STARTED",
            "DURATION",
            "SIZE",
        ]
        fifth = start(api, "feed")
        finish(api, "feed", fifth)
        assert proc.stdout.readline().split()[:3] == ["feed", fifth, fourth]
    finally:
        proc.kill()
        proc.wait()


def test_deleting_an_input_commit_deletes_its_downstream_commits(
    api: pfs_pb2_grpc.APIStub,
) -> None:
    from services.pfs.domain.commits import downstream_id
    from tests.support.cluster import wait_until

    for name in ("raw", "clean"):
        api.CreateRepo(pfs.CreateRepoRequest(repo=repo(name)))
    api.CreateBranch(pfs.CreateBranchRequest(branch=branch("raw", "master")))
    api.CreateBranch(
        pfs.CreateBranchRequest(
            branch=branch("clean", "master"), provenance=[branch("raw", "master")]
        )
    )
    first = start(api, "raw")
    finish(api, "raw", first)
    second = start(api, "raw")
    finish(api, "raw", second)
    out1, out2 = (downstream_id(c, "clean", "master") for c in (first, second))
    wait_until(lambda: ids(api, "clean") == [out2, out1])
    delete = api.DeleteCommit
    assert code_of(lambda: delete(pfs.DeleteCommitRequest(commit=commit("clean", out1)))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert ids(api, "clean") == [out2, out1]  # nothing changed
    delete(pfs.DeleteCommitRequest(commit=commit("raw", second)))
    assert ids(api, "raw") == [first] and ids(api, "clean") == [out1]
    assert heads(api, "clean") == {"master": out1}
