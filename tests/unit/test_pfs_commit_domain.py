"""Commits and branches on the repo aggregate, without any I/O."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.pfs.domain import ancestry, branches, commits, repo

A, B, C = "a" * 32, "b" * 32, "c" * 32


def run(state: repo.Repo, decide: repo.Decide) -> tuple[repo.Repo, Sequence[Message]]:
    events = decide(state)
    for e in events:
        state = repo.evolve(state, e)
    return state, events


def created(name: str = "data") -> repo.Repo:
    return repo.evolve(repo.Repo(), ev.RepoCreated(name=name))


def chain(*ids: str, finish_last: bool = True) -> repo.Repo:
    """Repo ``data`` with commits ``ids`` on master, each the parent of the next."""
    s = created()
    for i, cid in enumerate(ids):
        s, _ = run(s, commits.start_commit("data", cid, "master"))
        if finish_last or i < len(ids) - 1:
            s, _ = run(s, commits.finish_commit("data", cid))
    return s


def test_start_commit_moves_the_branch_and_chains_parents() -> None:
    s, events = run(created(), commits.start_commit("data", A, "master", description="first"))
    assert events == [
        ev.CommitStarted(id=A, branch="master", description="first"),
        ev.BranchSet(name="master", head=A),
    ]
    assert s.branches["master"].head == A and not s.commits[A].finished
    s, _ = run(s, commits.finish_commit("data", "master"))
    assert s.commits[A].finished
    s, events = run(s, commits.start_commit("data", B, "master"))
    assert events[0] == ev.CommitStarted(id=B, branch="master", parent=A)
    assert s.branches["master"].head == B


def test_start_commit_without_branch_and_forks() -> None:
    s = chain(A)
    s, events = run(s, commits.start_commit("data", B))
    assert events == [ev.CommitStarted(id=B)]  # on no branch, no parent
    s, events = run(s, commits.start_commit("data", C, "patch", parent="master"))
    assert events[0] == ev.CommitStarted(id=C, branch="patch", parent=A)
    assert s.branches["patch"].head == C and s.branches["master"].head == A


def test_start_commit_refusals() -> None:
    with pytest.raises(NotFound, match="repo data not found"):
        commits.start_commit("data", A, "master")(repo.Repo())
    open_head = chain(A, finish_last=False)
    with pytest.raises(FailedPrecondition, match="has not been finished"):
        commits.start_commit("data", B, "master")(open_head)
    with pytest.raises(InvalidArgument, match="looks like a commit id"):
        commits.start_commit("data", B, A)
    for bad in ("a b", "a/b", "x.y"):
        with pytest.raises(InvalidArgument):
            commits.start_commit("data", B, bad)
    s, _ = run(chain(A), branches.create_branch("data", "out", provenance=[("data", "master")]))
    with pytest.raises(FailedPrecondition, match="output branch data/out"):
        commits.start_commit("data", B, "out")(s)
    with pytest.raises(NotFound, match="data/nope not found"):
        commits.start_commit("data", B, "master", parent="nope")(s)


def test_finish_commit_refusals_and_description() -> None:
    s = chain(A, finish_last=False)
    s, events = run(s, commits.finish_commit("data", A, "desc"))
    assert events == [ev.CommitFinished(id=A, description_set=True, description="desc")]
    with pytest.raises(FailedPrecondition, match="already been finished"):
        commits.finish_commit("data", "master")(s)
    with pytest.raises(NotFound):
        commits.finish_commit("data", B)(s)
    with pytest.raises(NotFound, match="repo data not found"):
        commits.finish_commit("data", A)(repo.Repo())


def test_ancestry_references() -> None:
    assert ancestry.parse("master") == ("master", 0)
    assert ancestry.parse("master^") == ("master", 1)
    assert ancestry.parse("master^^") == ("master", 2)
    assert ancestry.parse("master~2") == ("master", 2)
    assert ancestry.parse("master^3~") == ("master", 4)
    for bad in ("^", "~2", "master^x", "master~2a"):
        with pytest.raises(InvalidArgument):
            ancestry.parse(bad)
    s = chain(A, B, C)
    assert commits.resolve(s, "data", "master").id == C
    assert commits.resolve(s, "data", "master^").id == B
    assert commits.resolve(s, "data", "master~2").id == A
    assert commits.resolve(s, "data", "master^^").id == A
    assert commits.resolve(s, "data", f"{C}^").id == B
    with pytest.raises(NotFound, match="has no parent"):
        commits.resolve(s, "data", "master~3")


def test_delete_commit_reparents_and_moves_branches() -> None:
    s = chain(A, B, C)
    s, events = run(s, commits.delete_commit("data", B))
    assert events == [ev.CommitDeleted(id=B, parent=A, children=[C])]
    assert s.commits[C].parent == A and B not in s.commits
    s, events = run(s, commits.delete_commit("data", "master"))
    assert events[1] == ev.BranchSet(name="master", head=A)
    s, _ = run(s, commits.delete_commit("data", "master"))
    assert s.branches["master"].head == "" and not s.commits
    with pytest.raises(NotFound, match="has no head"):
        commits.delete_commit("data", "master")(s)
    # A headless branch takes a new first commit.
    s, events = run(s, commits.start_commit("data", A, "master"))
    assert events[0] == ev.CommitStarted(id=A, branch="master")


def test_create_branch_head_and_set_branch() -> None:
    s = chain(A, B)
    s, events = run(s, branches.create_branch("data", "v1", head="master^"))
    assert events == [ev.BranchSet(name="v1", head=A)]
    assert run(s, branches.create_branch("data", "v1", head=A))[1] == []  # no change
    s, _ = run(s, branches.create_branch("data", "v1", head=B))
    assert s.branches["v1"].head == B
    s, _ = run(s, branches.create_branch("data", "empty"))
    assert s.branches["empty"].head == ""
    with pytest.raises(NotFound):
        branches.create_branch("data", "x", head="nope")(s)
    with pytest.raises(NotFound, match="repo other not found"):
        branches.create_branch("other", "x")(repo.Repo())
    for bad in ("a b", "a.b", "", A):
        with pytest.raises(InvalidArgument):
            branches.create_branch("data", bad)


def test_provenance_is_transitive_and_acyclic() -> None:
    s = chain(A)
    up = {("raw", "master"): [("src", "master")]}
    s, _ = run(
        s, branches.create_branch("data", "out", provenance=[("raw", "master")], upstream=up)
    )
    assert s.branches["out"].provenance == (("src", "master"), ("raw", "master"))
    assert s.branches["out"].direct == (("raw", "master"),)
    with pytest.raises(NotFound, match="raw/missing not found"):
        branches.create_branch("data", "x", provenance=[("raw", "missing")], upstream=up)(s)
    with pytest.raises(InvalidArgument, match="its own provenance"):
        branches.create_branch("data", "out", provenance=[("data", "out")])
    s, _ = run(s, branches.create_branch("data", "out2", provenance=[("data", "out")], upstream=up))
    assert ("src", "master") in s.branches["out2"].provenance
    with pytest.raises(InvalidArgument, match="cycle"):
        branches.create_branch("data", "out", provenance=[("data", "out2")], upstream=up)(s)
    cyc = {("raw", "master"): [("data", "master")]}
    with pytest.raises(InvalidArgument, match="cycle"):
        branches.create_branch("data", "master", provenance=[("raw", "master")], upstream=cyc)(s)


def test_delete_branch() -> None:
    s = chain(A)
    with pytest.raises(FailedPrecondition, match="provenance of other/x"):
        branches.delete_branch("data", "master", False, [("other", "x")])(s)
    s, events = run(s, branches.delete_branch("data", "master", True, [("other", "x")]))
    assert events == [ev.BranchDeleted(name="master")] and "master" not in s.branches
    assert A in s.commits  # the commits stay
    with pytest.raises(NotFound, match="branch data/master not found"):
        branches.delete_branch("data", "master", False)(s)


def test_delete_repo_with_dependents_needs_force() -> None:
    s = created()
    with pytest.raises(FailedPrecondition, match="provenance of out/master"):
        repo.delete_repo("data", False, [("out", "master")])(s)
    assert repo.delete_repo("data", True, [("out", "master")])(s) == [ev.RepoDeleted(forced=True)]


def test_evolve_shares_nothing() -> None:
    before = chain(A)
    after, _ = run(before, commits.start_commit("data", B, "master"))
    assert B not in before.commits and before.branches["master"].head == A
    assert after.branches["master"].head == B


def test_reaction_commits_are_idempotent_and_may_stack_on_open_ones() -> None:
    s, _ = run(
        created(),
        branches.create_branch(
            "data", "out", provenance=[("raw", "master")], upstream={("raw", "master"): []}
        ),
    )
    cid = commits.downstream_id(A, "data", "out")
    assert cid == commits.downstream_id(A, "data", "out") != commits.downstream_id(B, "data", "out")
    assert len(cid) == 32 and int(cid, 16) >= 0
    s, events = run(s, commits.start_commit("data", cid, "out", provenance=[("raw", A)]))
    with pytest.raises(FailedPrecondition, match="it has provenance"):
        commits.delete_commit("data", cid)(s)
    assert commits.delete_commit("data", cid, downstream=True)(s)[0] == ev.CommitDeleted(id=cid)
    assert events[0] == ev.CommitStarted(
        id=cid, branch="out", provenance=[ev.CommitRef(repo="raw", id=A)]
    )
    assert commits.start_commit("data", cid, "out", provenance=[("raw", A)])(s) == []
    nxt = commits.downstream_id(B, "data", "out")
    s, events = run(s, commits.start_commit("data", nxt, "out", provenance=[("raw", B)]))
    assert s.commits[nxt].parent == cid and not s.commits[cid].finished


def test_a_commit_repeating_the_heads_provenance_opens_only_again() -> None:
    up: dict[tuple[str, str], list[tuple[str, str]]] = {("raw", "master"): []}
    decide = branches.create_branch("data", "out", provenance=[("raw", "master")], upstream=up)
    s, _ = run(created(), decide)
    prov = [("raw", "c" * 32)]
    s, events = run(s, commits.start_commit("data", "1" * 32, "out", provenance=prov))
    assert len(events) == 2
    # The same provenance again is a duplicate (the reaction and
    # create-branch racing over one input commit)...
    s, events = run(s, commits.start_commit("data", "2" * 32, "out", provenance=prov))
    assert events == [] and "2" * 32 not in s.commits
    # ...unless asked for again (update-pipeline's new job), once per id.
    decide = commits.start_commit("data", "2" * 32, "out", provenance=prov, again=True)
    s, events = run(s, decide)
    assert s.branches["out"].head == "2" * 32
    assert s.commits["2" * 32].parent == "1" * 32
    assert run(s, decide)[1] == []


# --- put sessions ----------------------------------------------------------------


def test_a_put_session_opens_a_held_commit_only_on_a_branch_without_an_open_head() -> None:
    s, events = run(chain(A), commits.open_put_commit("data", "master", B, "s1"))
    assert events == [
        ev.CommitStarted(id=B, branch="master", parent=A, lease="s1"),
        ev.BranchSet(name="master", head=B),
    ]
    assert s.commits[B].lease == "s1"
    # the head is open (held by s1): another session decides nothing and waits
    s2, events = run(s, commits.open_put_commit("data", "master", C, "s2"))
    assert events == [] and s2 is s
    # a caller's open commit (start-commit) takes the writes: nothing to open
    user = chain(A, finish_last=False)
    assert run(user, commits.open_put_commit("data", "master", B, "s1"))[1] == []
    # a new branch gets one too
    _, events = run(created(), commits.open_put_commit("data", "dev", A, "s1"))
    assert events[0] == ev.CommitStarted(id=A, branch="dev", lease="s1")


def test_a_put_session_cannot_open_a_commit_on_an_output_branch() -> None:
    s, _ = run(chain(A), branches.create_branch("data", "out", provenance=[("data", "master")]))
    with pytest.raises(FailedPrecondition, match="output branch data/out"):
        run(s, commits.open_put_commit("data", "out", A, "s1"))


def test_an_explicit_start_commit_behind_a_held_commit_keeps_1_7s_rule() -> None:
    s, _ = run(chain(A), commits.open_put_commit("data", "master", B, "s1"))
    with pytest.raises(FailedPrecondition, match="has not been finished"):
        run(s, commits.start_commit("data", C, "master"))


def test_expiring_a_put_deletes_only_an_open_commit_its_session_holds() -> None:
    s, _ = run(chain(A), commits.open_put_commit("data", "master", B, "s1"))
    assert run(s, commits.expire_put("data", B, "s2"))[1] == []  # another session's
    gone, events = run(s, commits.expire_put("data", B, "s1"))
    assert events == [
        ev.CommitDeleted(id=B, parent=A),
        ev.BranchSet(name="master", head=A),
    ]
    assert B not in gone.commits and gone.branches["master"].head == A
    finished, _ = run(s, commits.finish_commit("data", B))
    assert run(finished, commits.expire_put("data", B, "s1"))[1] == []  # finished: stays
    user = chain(A, finish_last=False)  # a caller's commit is no session's
    assert run(user, commits.expire_put("data", A, ""))[1] == []
    assert run(created(), commits.expire_put("data", A, "s1"))[1] == []  # gone already


def test_put_commits_chains_finished_commits_on_the_branch_head() -> None:
    s = chain(A)
    made = [(B, "t" * 64, 3), (C, "u" * 64, 5)]
    s, events = run(s, commits.put_commits("data", "master", A, made))
    assert [type(e).__name__ for e in events] == [
        "CommitStarted",
        "CommitFinished",
        "BranchSet",
    ] * 2
    assert s.commits[B].parent == A and s.commits[C].parent == B
    assert s.commits[B].finished and s.commits[C].finished and not s.commits[C].lease
    assert s.branches["master"].head == C


def test_put_commits_on_a_new_branch_start_without_parent() -> None:
    s, _ = run(created(), commits.put_commits("data", "dev", "", [(A, "t" * 64, 1)]))
    assert s.branches["dev"].head == A and s.commits[A].parent == ""


def test_put_commits_decide_nothing_when_the_branch_moved_or_its_head_is_open() -> None:
    s = chain(A, B)
    assert commits.put_commits("data", "master", A, [(C, "t" * 64, 1)])(s) == []
    opened = chain(A, B, finish_last=False)
    assert commits.put_commits("data", "master", B, [(C, "t" * 64, 1)])(opened) == []


def test_put_commits_refuse_output_branches_bad_names_and_taken_ids() -> None:
    s, _ = run(chain(A), branches.create_branch("data", "out", provenance=[("data", "master")]))
    with pytest.raises(FailedPrecondition, match="output branch"):
        commits.put_commits("data", "out", s.branches["out"].head, [(C, "t" * 64, 1)])(s)
    with pytest.raises(InvalidArgument):
        commits.put_commits("data", "bad branch!", "", [])
    with pytest.raises(InvalidArgument):
        commits.put_commits("data", "master", A, [("not-an-id", "t" * 64, 1)])
    with pytest.raises(AlreadyExists):
        commits.put_commits("data", "master", A, [(A, "t" * 64, 1)])(chain(A))


def test_newer_on_chain_walks_from_both_ends() -> None:
    s = chain(A, B, C)
    assert commits.newer_on_chain(s, A, C) and commits.newer_on_chain(s, B, C)
    assert not commits.newer_on_chain(s, C, A) and not commits.newer_on_chain(s, B, B)
    s, _ = run(s, commits.start_commit("data", "d" * 32, "other", parent=A))
    assert not commits.newer_on_chain(s, B, "d" * 32)  # another line: neither is newer
    assert not commits.newer_on_chain(s, "e" * 32, C)  # unknown


def _downstream_over(*inputs: str) -> repo.Repo:
    """Repo ``out`` whose master got one commit over each of ``inputs`` (of
    data/master), in that order, as the downstream reaction opens them."""
    s = created("out")
    for n, cid in enumerate(inputs):
        opened = f"{n:x}".rjust(32, "f")
        s, _ = run(s, commits.start_commit("out", opened, "master", provenance=[("data", cid)]))
    return s


def test_a_late_reaction_does_not_stack_older_data_on_newer() -> None:
    upstream = chain(A, B, C)
    # A's reaction came back after B's and C's had opened their commits (a
    # redelivery after a crash): A is older than the head's input C.
    out = _downstream_over(B, C)
    assert commits.superseded(upstream, A, out, "master")
    assert commits.superseded(upstream, B, out, "master")
    assert not commits.superseded(upstream, C, out, "master")  # the same: start_commit's no-op
    # In order, each input is newer than the head's: opened.
    assert not commits.superseded(upstream, B, _downstream_over(A), "master")
    assert not commits.superseded(upstream, A, created("out"), "master")  # no head yet


def test_superseded_looks_only_at_the_same_branch_of_the_input() -> None:
    upstream = chain(A, B)
    upstream, _ = run(upstream, commits.start_commit("data", C, "side", parent=B))
    upstream, _ = run(upstream, commits.finish_commit("data", C))
    # A pipeline over data@side: its head is over C on another branch, so
    # master's A, older on C's line, says nothing about side's data.
    out = _downstream_over(C)
    assert not commits.superseded(upstream, A, out, "master")
