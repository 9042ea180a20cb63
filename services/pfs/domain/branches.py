"""Branch decisions on the repo aggregate: create (or update, or point at a
commit) and delete, with provenance checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from services.pfs.domain.commits import resolve
from services.pfs.domain.names import validate_branch_name, validate_repo_name
from services.pfs.domain.repo import Decide, Key, Repo, require

# The transitive provenance of branches in other repos, by (repo, branch);
# a branch missing from it does not exist.
Upstream = Mapping[Key, Sequence[Key]]


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def create_branch(
    repo: str,
    name: str,
    head: str = "",
    provenance: Sequence[Key] = (),
    upstream: Upstream | None = None,
) -> Decide:
    """Create or update branch ``name``: ``head`` (a commit reference; empty
    keeps the current head) and ``provenance`` (replaces the old one)."""
    validate_branch_name(name)
    me = (repo, name)
    direct: list[Key] = []
    for key in provenance:
        validate_repo_name(key[0])
        validate_branch_name(key[1])
        if key == me:
            raise InvalidArgument(f"branch {_name(me)} cannot be its own provenance", branch=name)
        if key not in direct:
            direct.append(key)
    others = upstream or {}

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        closure: list[Key] = []
        made: list[Message] = []
        for key in direct:
            if key[0] == repo:
                local = state.branches.get(key[1])
                # A missing provenance branch of this repo is created headless
                # with it (Pachyderm 1.7).
                above: Sequence[Key] = local.provenance if local is not None else ()
                if local is None and key[1] != name:
                    made.append(ev.BranchSet(name=key[1]))
            elif key in others:
                above = others[key]
            else:
                raise NotFound(f"branch {_name(key)} not found", branch=_name(key))
            for k in (*above, key):
                if k not in closure:
                    closure.append(k)
        if me in closure:
            raise InvalidArgument(
                f"branch {_name(me)} cannot be in its own provenance (a cycle)", branch=name
            )
        old = state.branches.get(name)
        head_id = resolve(state, repo, head).id if head else (old.head if old else "")
        event = ev.BranchSet(
            name=name,
            head=head_id,
            provenance=[ev.BranchRef(repo=r, name=b) for r, b in closure],
            direct_provenance=[ev.BranchRef(repo=r, name=b) for r, b in direct],
        )
        if old is not None and (old.head, old.provenance, old.direct) == (
            head_id,
            tuple(closure),
            tuple(direct),
        ):
            return made
        return [*made, event]

    return decide


def ensure_branch(repo: str, name: str) -> Decide:
    """Create branch ``name`` headless and without provenance unless it
    exists (a provenance branch named before it had commits)."""
    validate_branch_name(name)

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        return [] if name in state.branches else [ev.BranchSet(name=name)]

    return decide


def delete_branch(repo: str, name: str, force: bool, subvenance: Sequence[Key] = ()) -> Decide:
    """Delete a branch (its commits stay); refused while other branches have
    it as provenance, unless ``force``."""

    def decide(state: Repo) -> Sequence[Message]:
        require(state, repo)
        if name not in state.branches:
            raise NotFound(f"branch {repo}/{name} not found", repo=repo, branch=name)
        if subvenance and not force:
            names = ", ".join(_name(k) for k in subvenance)
            raise FailedPrecondition(
                f"cannot delete branch {repo}/{name}: it is provenance of {names} (use --force)",
                repo=repo,
                branch=name,
            )
        return [ev.BranchDeleted(name=name)]

    return decide
