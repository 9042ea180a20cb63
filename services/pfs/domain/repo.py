"""The repo aggregate: its state, how events change it, and what the repo
commands decide. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import AlreadyExists, NotFound
from libs.events import AggregateRef
from services.pfs.domain.names import validate_repo_name


@dataclass(frozen=True)
class Repo:
    exists: bool = False
    name: str = ""
    description: str = ""


def ref(name: str) -> AggregateRef:
    return AggregateRef("pfs", "repo", name)


def evolve(state: Repo, event: Message) -> Repo:
    if isinstance(event, ev.RepoCreated):
        return Repo(exists=True, name=event.name, description=event.description)
    if isinstance(event, ev.RepoDescriptionSet):
        return replace(state, description=event.description)
    if isinstance(event, ev.RepoDeleted):
        return Repo()
    return state


Decide = Callable[[Repo], Sequence[Message]]


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


def delete_repo(name: str, force: bool) -> Decide:
    validate_repo_name(name)

    def decide(state: Repo) -> Sequence[Message]:
        if not state.exists:
            raise NotFound(f"repo {name} not found", repo=name)
        return [ev.RepoDeleted(forced=force)]

    return decide
