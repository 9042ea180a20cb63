"""The commit aggregate (``ev.pfs.commit.<id>``): the writes of one open
commit, in order, and what the file commands decide. Pure: no I/O.

Writes are ``FilePut`` / ``FileDeleted``; ``CommitWritesSealed`` marks where
finish-commit built the tree, after which no write is accepted (a write that
raced the finish fails on the aggregate's expected position and then sees
the seal)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from libs import trees
from libs.api.events import pfs_pb2 as ev
from libs.errors import FailedPrecondition, InvalidArgument
from libs.events import AggregateRef


@dataclass(frozen=True)
class CommitWrites:
    writes: int = 0
    sealed: bool = False


Decide = Callable[[CommitWrites], Sequence[Message]]


def ref(commit_id: str) -> AggregateRef:
    return AggregateRef("pfs", "commit", commit_id)


def evolve(state: CommitWrites, event: Message) -> CommitWrites:
    if isinstance(event, (ev.FilePut, ev.FileDeleted)):
        return CommitWrites(state.writes + 1, state.sealed)
    if isinstance(event, ev.CommitWritesSealed):
        return CommitWrites(state.writes, True)
    return state


def file_path(path: str) -> str:
    """A path a file may be written at (InvalidArgument naming it otherwise)."""
    normalized = trees.normalize(path)
    if normalized == "/":
        raise InvalidArgument("cannot put a file at /: it is the root directory", path=path)
    return normalized


def _require_open(state: CommitWrites, repo: str, commit_id: str) -> None:
    if state.sealed:
        raise FailedPrecondition(
            f"commit {repo}/{commit_id} has already been finished", repo=repo, commit=commit_id
        )


def write(repo: str, commit_id: str, events: Sequence[Message]) -> Decide:
    """Append already validated ``FilePut``/``FileDeleted`` events."""

    def decide(state: CommitWrites) -> Sequence[Message]:
        _require_open(state, repo, commit_id)
        return list(events)

    return decide


def put(path: str, refs: Sequence[trees.DataRef], append: bool) -> ev.FilePut:
    pb = [ev.DataRef(chunk=r.chunk, offset=r.offset, length=r.length) for r in refs]
    return ev.FilePut(path=file_path(path), refs=pb, append=append)


def delete(path: str) -> ev.FileDeleted:
    return ev.FileDeleted(path=trees.normalize(path))


def as_op(event: Message) -> trees.Op | None:
    """The tree op a commit event stands for (None for the seal)."""
    if isinstance(event, ev.FilePut):
        refs = tuple(trees.DataRef(r.chunk, r.offset, r.length) for r in event.refs)
        return trees.Put(event.path, refs, event.append)
    if isinstance(event, ev.FileDeleted):
        return trees.Delete(event.path)
    return None
