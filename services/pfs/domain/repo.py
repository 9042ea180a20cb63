"""The repo aggregate: its state (the repo, its branches and the lifecycle of
its commits), how events change it, and what the repo commands decide. Pure:
no I/O.

State is immutable and shared (``AggregateCache``): ``evolve`` returns a new
``Repo`` whose maps are copies, never changing the old one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import AlreadyExists, FailedPrecondition, NotFound
from libs.events.envelope import AggregateRef
from services.pfs.domain.names import validate_repo_name

# A branch or commit anywhere: (repo, branch name) or (repo, commit id).
Key = tuple[str, str]
V = TypeVar("V")


@dataclass(frozen=True)
class Branch:
    name: str
    head: str = ""
    provenance: tuple[Key, ...] = ()  # transitive
    direct: tuple[Key, ...] = ()  # as given by the user


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str = ""
    branch: str = ""
    finished: bool = False
    provenance: tuple[Key, ...] = ()
    lease: str = ""  # the put session holding it (pfs opened it for an auto-commit put)


@dataclass(frozen=True)
class Repo:
    exists: bool = False
    name: str = ""
    description: str = ""
    branches: Mapping[str, Branch] = field(default_factory=lambda: MappingProxyType({}))
    commits: Mapping[str, Commit] = field(default_factory=lambda: MappingProxyType({}))


def ref(name: str) -> AggregateRef:
    return AggregateRef("pfs", "repo", name)


def keys(refs: Sequence[ev.BranchRef] | Sequence[ev.CommitRef]) -> tuple[Key, ...]:
    return tuple((r.repo, r.name if isinstance(r, ev.BranchRef) else r.id) for r in refs)


def _with(m: Mapping[str, V], key: str, value: V | None) -> Mapping[str, V]:
    copy = dict(m)
    if value is None:
        copy.pop(key, None)
    else:
        copy[key] = value
    return MappingProxyType(copy)


def evolve(state: Repo, event: Message) -> Repo:
    if isinstance(event, ev.RepoCreated):
        return Repo(exists=True, name=event.name, description=event.description)
    if isinstance(event, ev.RepoDescriptionSet):
        return replace(state, description=event.description)
    if isinstance(event, ev.RepoDeleted):
        return Repo()
    if isinstance(event, ev.BranchSet):
        branch = Branch(
            event.name, event.head, keys(event.provenance), keys(event.direct_provenance)
        )
        return replace(state, branches=_with(state.branches, event.name, branch))
    if isinstance(event, ev.BranchDeleted):
        return replace(state, branches=_with(state.branches, event.name, None))
    return _evolve_commit(state, event)


def _evolve_commit(state: Repo, event: Message) -> Repo:
    commits = state.commits
    if isinstance(event, ev.CommitStarted):
        commit = Commit(
            event.id, event.parent, event.branch, False, keys(event.provenance), event.lease
        )
        return replace(state, commits=_with(commits, event.id, commit))
    if isinstance(event, ev.CommitFinished) and event.id in commits:
        done = replace(commits[event.id], finished=True)
        return replace(state, commits=_with(commits, event.id, done))
    if isinstance(event, ev.CommitDeleted):
        copy = dict(commits)
        copy.pop(event.id, None)
        for child in event.children:
            if child in copy:
                copy[child] = replace(copy[child], parent=event.parent)
        return replace(state, commits=MappingProxyType(copy))
    return state


Decide = Callable[[Repo], Sequence[Message]]


def require(state: Repo, name: str) -> None:
    if not state.exists:
        raise NotFound(f"repo {name} not found", repo=name)


def create_repo(name: str, description: str, update: bool) -> Decide:
    """CreateRepo; with ``update`` an existing repo gets the new description."""
    validate_repo_name(name)

    def decide(state: Repo) -> Sequence[Message]:
        if not state.exists:
            return [ev.RepoCreated(name=name, description=description)]
        if not update:
            raise AlreadyExists(f"repo {name} already exists", repo=name)
        if state.description == description:
            return []
        return [ev.RepoDescriptionSet(description=description)]

    return decide


def delete_repo(name: str, force: bool, dependents: Sequence[Key] = ()) -> Decide:
    """DeleteRepo; ``dependents`` are the other repos' branches whose
    provenance includes this repo (refused unless ``force``)."""
    validate_repo_name(name)

    def decide(state: Repo) -> Sequence[Message]:
        require(state, name)
        if dependents and not force:
            names = ", ".join(f"{r}/{b}" for r, b in dependents)
            raise FailedPrecondition(
                f"cannot delete repo {name}: it is provenance of {names} (use --force)",
                repo=name,
            )
        return [ev.RepoDeleted(forced=force)]

    return decide
