"""Commit decisions on the repo aggregate: start, finish, delete, and how a
commit reference (a branch, an id, with ``^``/``~`` ancestry) resolves."""

from __future__ import annotations

from collections.abc import Sequence

from blake3 import blake3
from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.pfs.domain import ancestry
from services.pfs.domain.names import is_commit_id, validate_branch_name
from services.pfs.domain.repo import Commit, Decide, Key, Repo, require


def resolve(state: Repo, repo: str, reference: str) -> Commit:
    """The commit a reference names in this repo (NotFound when none)."""
    if not reference:
        raise InvalidArgument("a commit id or branch name is required", repo=repo)
    base, back = ancestry.parse(reference)
    branch = state.branches.get(base)
    if branch is not None:
        if not branch.head:
            raise NotFound(f"branch {repo}/{base} has no head", repo=repo, branch=base)
        start = branch.head
    elif base in state.commits:
        start = base
    else:
        raise NotFound(f"commit {repo}/{reference} not found", repo=repo, ref=reference)
    found = ancestry.walk(repo, reference, start, back, lambda c: state.commits[c].parent)
    return state.commits[found]


def _branch_set(state: Repo, name: str, head: str) -> ev.BranchSet:
    old = state.branches.get(name)
    prov = old.provenance if old else ()
    direct = old.direct if old else ()
    return ev.BranchSet(
        name=name,
        head=head,
        provenance=[ev.BranchRef(repo=r, name=b) for r, b in prov],
        direct_provenance=[ev.BranchRef(repo=r, name=b) for r, b in direct],
    )


def start_commit(
    repo: str,
    commit_id: str,
    branch: str = "",
    parent: str = "",
    description: str = "",
    provenance: Sequence[Key] = (),
    again: bool = False,
) -> Decide:
    """Open commit ``commit_id`` (chosen by the caller so that a retried
    decision keeps it) on ``branch`` (may be empty: on no branch), with
    ``parent`` (a reference; default: the branch's head), moving the branch
    head to it. ``provenance`` is set only by pfs's own propagation (the
    downstream reaction, create-branch): users cannot start commits on output
    branches, and only propagation may stack a commit on an open one (the
    output commits of a pipeline queue up). An id that already exists makes
    this a no-op: the reaction delivered twice opens its commit once. So does
    a ``provenance`` equal to that of the branch's head (Pachyderm 1.7: such
    a commit would be a duplicate), which is how the reaction and
    create-branch, racing over the same input commits, open one commit;
    ``again`` opens it all the same (update-pipeline's new job)."""
    if branch:
        validate_branch_name(branch)

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        if commit_id in state.commits:
            return []
        old = state.branches.get(branch) if branch else None
        if provenance and not again and old is not None and old.head:
            head = state.commits.get(old.head)
            if head is not None and set(head.provenance) == set(provenance):
                return []
        if old is not None and old.provenance and not provenance:
            raise FailedPrecondition(
                f"cannot start a commit on output branch {repo}/{branch}",
                repo=repo,
                branch=branch,
            )
        if parent:
            parent_id = resolve(state, repo, parent).id
        else:
            parent_id = old.head if old is not None else ""
        if parent_id and not state.commits[parent_id].finished and not provenance:
            raise FailedPrecondition(
                f"parent commit {repo}/{parent_id} has not been finished",
                repo=repo,
                commit=parent_id,
            )
        started = ev.CommitStarted(
            id=commit_id,
            branch=branch,
            parent=parent_id,
            description=description,
            provenance=[ev.CommitRef(repo=r, id=c) for r, c in provenance],
        )
        if not branch:
            return [started]
        return [started, _branch_set(state, branch, commit_id)]

    return decide


def finish_commit(
    repo: str, reference: str, description: str | None = None, tree: str = "", size: int = 0
) -> Decide:
    """Finish an open commit with its built ``tree`` (root hash) and ``size``;
    a ``description`` replaces the one given at start."""

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        commit = resolve(state, repo, reference)
        if commit.finished:
            raise FailedPrecondition(
                f"commit {repo}/{commit.id} has already been finished",
                repo=repo,
                commit=commit.id,
            )
        return [
            ev.CommitFinished(
                id=commit.id,
                description_set=description is not None,
                description=description or "",
                tree=tree,
                size_bytes=size,
            )
        ]

    return decide


def delete_commit(repo: str, reference: str, downstream: bool = False) -> Decide:
    """Delete a commit: its children get its parent, and branches whose head
    it was move to its parent (headless when it had none). Only input
    commits may be deleted by users; output commits (with provenance) go
    with the input commit they came from (``downstream``)."""

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        commit = resolve(state, repo, reference)
        if commit.provenance and not downstream:
            raise FailedPrecondition(
                f"cannot delete commit {repo}/{commit.id}: it has provenance "
                "(delete the input commit it came from)",
                repo=repo,
                commit=commit.id,
            )
        return _deleted(state, commit)

    return decide


def _deleted(state: Repo, commit: Commit) -> list[Message]:
    """Delete ``commit``: its children get its parent, branches whose head it
    was move to its parent."""
    children = sorted(c.id for c in state.commits.values() if c.parent == commit.id)
    events: list[Message] = [
        ev.CommitDeleted(id=commit.id, parent=commit.parent, children=children)
    ]
    for name in sorted(state.branches):
        if state.branches[name].head == commit.id:
            events.append(_branch_set(state, name, commit.parent))
    return events


def open_put_commit(repo: str, branch: str, commit_id: str, session: str) -> Decide:
    """The commit an auto-commit put-file (put session ``session``) writes
    to on ``branch``: when the branch has no open head, open ``commit_id`` on
    it, held by the session; otherwise decide nothing, and the caller reads
    the head: the session's own commit, a caller's open commit (the put
    writes into it, as in 1.7), or another session's (the put waits its
    turn)."""
    validate_branch_name(branch)

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        old = state.branches.get(branch)
        if old is not None and old.head and not state.commits[old.head].finished:
            return []
        if old is not None and old.provenance:
            raise FailedPrecondition(
                f"cannot start a commit on output branch {repo}/{branch}",
                repo=repo,
                branch=branch,
            )
        started = ev.CommitStarted(
            id=commit_id, branch=branch, parent=old.head if old else "", lease=session
        )
        return [started, _branch_set(state, branch, commit_id)]

    return decide


def expire_put(repo: str, commit_id: str, session: str) -> Decide:
    """Delete ``commit_id`` if put session ``session`` still holds it open
    (its put failed, or its lease lapsed); a commit that finished meanwhile,
    or that no session holds, stays."""

    def decide(state: Repo) -> Sequence[Message]:
        commit = state.commits.get(commit_id) if state.exists else None
        if commit is None or commit.finished or not session or commit.lease != session:
            return []
        return _deleted(state, commit)

    return decide


def downstream_id(upstream_commit: str, repo: str, branch: str) -> str:
    """The id of the commit that ``upstream_commit`` finishing opens on
    ``repo``/``branch``: the same every time the reaction runs."""
    return blake3(f"{upstream_commit}\0{repo}\0{branch}".encode()).hexdigest()[:32]


def newer_on_chain(upstream: Repo, commit_id: str, other: str) -> bool:
    """Whether ``other`` comes after ``commit_id`` on the same line of
    commits of ``upstream`` (``commit_id`` is one of ``other``'s ancestors).
    Walks back from both at once, so it costs the distance between them, not
    the length of the history; False when neither is the other's ancestor."""
    if commit_id == other:
        return False
    a, b = upstream.commits.get(commit_id), upstream.commits.get(other)
    while a is not None or b is not None:
        if b is not None:
            if b.parent == commit_id:
                return True
            b = upstream.commits.get(b.parent) if b.parent else None
        if a is not None:
            if a.parent == other:
                return False
            a = upstream.commits.get(a.parent) if a.parent else None
    return False


def superseded(upstream: Repo, finished: str, downstream: Repo, branch: str) -> bool:
    """Whether the downstream ``branch`` already has a commit over a NEWER
    commit of ``finished``'s branch than ``finished``: the reaction to
    ``finished`` comes late (redelivered after a crash, while later ones were
    handled), and opening its commit now would put older data on top of newer
    (Pachyderm 1.7 opens the downstream commits in the same transaction as
    the input commit, so they never come out of order)."""
    line = upstream.commits.get(finished)
    head = downstream.branches.get(branch)
    if line is None or head is None or not head.head or head.head not in downstream.commits:
        return False
    for repo_name, commit_id in downstream.commits[head.head].provenance:
        over = upstream.commits.get(commit_id) if repo_name == upstream.name else None
        on_line = over is not None and over.branch == line.branch
        if on_line and newer_on_chain(upstream, finished, commit_id):
            return True
    return False


def propagated_id(repo: str, branch: str, head: str, provenance: Sequence[Key]) -> str:
    """The id of the commit that creating (or re-pointing) a branch opens on
    ``repo``/``branch`` (whose head is ``head``) over the commits
    ``provenance``: the same however often the command is retried, and new
    once the branch has moved on."""
    heads = "\0".join(sorted(f"{r}/{c}" for r, c in provenance))
    return blake3(f"branch\0{repo}\0{branch}\0{head}\0{heads}".encode()).hexdigest()[:32]


def build_commit(
    repo: str,
    commit_id: str,
    branch: str,
    parent: str,
    tree: str,
    size: int,
    provenance: Sequence[Key] = (),
) -> Decide:
    """BuildCommit (Pachyderm 1.7): a finished commit whose tree is already
    built (``tree``, ``size``), on ``branch`` (which moves to it) with
    ``parent`` (a reference; default: the branch's head, which must be
    finished). Allowed on output branches, as in 1.7."""
    if branch:
        validate_branch_name(branch)
    if not is_commit_id(commit_id):
        raise InvalidArgument(
            f"commit id {commit_id!r} is invalid: 32 lowercase hex characters expected",
            commit=commit_id,
        )

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        if commit_id in state.commits:
            raise AlreadyExists(f"commit {repo}/{commit_id} already exists", commit=commit_id)
        old = state.branches.get(branch) if branch else None
        if parent:
            parent_id = resolve(state, repo, parent).id
        else:
            parent_id = old.head if old is not None else ""
        if parent_id and not state.commits[parent_id].finished:
            raise FailedPrecondition(
                f"parent commit {repo}/{parent_id} has not been finished",
                repo=repo,
                commit=parent_id,
            )
        events: list[Message] = [
            ev.CommitStarted(
                id=commit_id,
                branch=branch,
                parent=parent_id,
                provenance=[ev.CommitRef(repo=r, id=c) for r, c in provenance],
            ),
            ev.CommitFinished(id=commit_id, tree=tree, size_bytes=size),
        ]
        if branch:
            events.append(_branch_set(state, branch, commit_id))
        return events

    return decide


def put_commits(repo: str, branch: str, head: str, made: Sequence[tuple[str, str, int]]) -> Decide:
    """The commits of whole auto-commit puts (each arrived in one request),
    made at once: for each ``(commit id, tree, size)`` in order a finished
    commit on ``branch``, on top of the one before, the first on ``head``
    (the branch's head the trees were built on; "" for none). Nothing is
    decided when the branch has moved on or its head is open meanwhile: the
    caller looks again (its trees were built on a head that is no longer
    the branch's). Output branches take no puts."""
    validate_branch_name(branch)
    for commit_id, _, _ in made:
        if not is_commit_id(commit_id):
            raise InvalidArgument(f"commit id {commit_id!r} is invalid", commit=commit_id)

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        old = state.branches.get(branch)
        if old is not None and old.provenance:
            raise FailedPrecondition(
                f"cannot start a commit on output branch {repo}/{branch}",
                repo=repo,
                branch=branch,
            )
        current = old.head if old is not None else ""
        if current != head or (current and not state.commits[current].finished):
            return []
        events: list[Message] = []
        parent = head
        for commit_id, tree, size in made:
            if commit_id in state.commits:
                raise AlreadyExists(f"commit {repo}/{commit_id} already exists", commit=commit_id)
            events += [
                ev.CommitStarted(id=commit_id, branch=branch, parent=parent),
                ev.CommitFinished(id=commit_id, tree=tree, size_bytes=size),
                _branch_set(state, branch, commit_id),
            ]
            parent = commit_id
        return events

    return decide
