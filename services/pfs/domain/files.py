"""The commit aggregate (``ev.pfs.commit.<id>``): the writes of one open
commit, in order, and what the file commands decide. Pure: no I/O.

Writes are ``FilePut`` (several in a row recorded as one ``FilesPut``),
``FileDeleted``, ``HeaderSet``, ``FooterSet``, ``SplitPiecePut`` and
``FileCopied``; ``CommitWritesSealed`` marks where
finish-commit built the tree, after which no write is accepted (a write that
raced the finish fails on the aggregate's expected position and then sees
the seal).

Split pieces are numbered per directory: the state keeps the next index of
every directory split into in this commit (a delete at or above it restarts
it at 0); a directory's first split write in the commit numbers on from the
pieces it has in the parent tree, which the caller looks up (``Base``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from libs.api.events import pfs_pb2 as ev
from libs.errors import FailedPrecondition, InvalidArgument
from libs.events.envelope import AggregateRef
from libs.trees import model as tree_model
from libs.trees import paths as tree_paths

# Split pieces are named by their index in 16 zero-padded hex digits.
PIECE_FORMAT = "{:016x}"


@dataclass(frozen=True)
class CommitWrites:
    writes: int = 0
    sealed: bool = False
    # Next piece index of each directory split into in this commit.
    splits: Mapping[str, int] = field(default_factory=dict)
    # FileDeleted events so far (a split directory's base must then be
    # checked against them: a delete restarts its numbering).
    deletes: int = 0


Decide = Callable[[CommitWrites], Sequence[Message]]


def ref(commit_id: str) -> AggregateRef:
    return AggregateRef("pfs", "commit", commit_id)


def is_at_or_below(path: str, top: str) -> bool:
    """Whether normalized ``path`` is ``top`` or inside it."""
    return top == "/" or path == top or path.startswith(top + "/")


def evolve(state: CommitWrites, event: Message) -> CommitWrites:
    if isinstance(event, (ev.FilePut, ev.HeaderSet, ev.FooterSet, ev.FileCopied)):
        return CommitWrites(state.writes + 1, state.sealed, state.splits, state.deletes)
    if isinstance(event, ev.FilesPut):
        return CommitWrites(
            state.writes + len(event.puts), state.sealed, state.splits, state.deletes
        )
    if isinstance(event, ev.SplitPiecePut):
        splits = {**state.splits, event.path: event.index + 1}
        return CommitWrites(state.writes + 1, state.sealed, splits, state.deletes)
    if isinstance(event, ev.FileDeleted):
        splits = {d: 0 if is_at_or_below(d, event.path) else n for d, n in state.splits.items()}
        return CommitWrites(state.writes + 1, state.sealed, splits, state.deletes + 1)
    if isinstance(event, ev.CommitWritesSealed):
        return CommitWrites(state.writes, True, state.splits, state.deletes)
    return state


def file_path(path: str) -> str:
    """A path a file may be written at (InvalidArgument naming it otherwise)."""
    normalized = tree_paths.normalize(path)
    if normalized == "/":
        raise InvalidArgument("cannot put a file at /: it is the root directory", path=path)
    return normalized


def _require_open(state: CommitWrites, repo: str, commit_id: str) -> None:
    if state.sealed:
        raise FailedPrecondition(
            f"commit {repo}/{commit_id} has already been finished", repo=repo, commit=commit_id
        )


@dataclass(frozen=True)
class Split:
    """A split write waiting for its piece index: the next piece of ``path``."""

    path: str
    refs: Sequence[ev.DataRef]


Write = Message | Split


def split(path: str, refs: Sequence[tree_model.DataRef]) -> Split:
    return Split(file_path(path), _refs(refs))


def write(
    repo: str, commit_id: str, writes: Sequence[Write], bases: Mapping[str, int] | None = None
) -> Decide:
    """Append already validated writes; a ``Split`` becomes a ``SplitPiecePut``
    numbered after the directory's pieces in this commit, or for a directory
    not split into yet in this commit, after ``bases[path]`` (its pieces in
    the parent tree, 0 if it was deleted in this commit)."""
    known = bases or {}

    def decide(state: CommitWrites) -> Sequence[Message]:
        _require_open(state, repo, commit_id)
        events: list[Message] = []
        following = dict(state.splits)
        for w in writes:
            if isinstance(w, Split):
                index = following.get(w.path)
                if index is None:
                    if w.path not in known:
                        raise FailedPrecondition(
                            f"no piece count known for split directory {w.path}", path=w.path
                        )
                    index = known[w.path]
                events.append(ev.SplitPiecePut(path=w.path, index=index, refs=w.refs))
                following[w.path] = index + 1
                continue
            if isinstance(w, ev.FileDeleted):
                # A delete restarts the numbering of split directories below it,
                # including ones this commit has not split into yet.
                following.update((d, 0) for d in known if is_at_or_below(d, w.path))
                following.update((d, 0) for d in list(following) if is_at_or_below(d, w.path))
            events.append(w)
        return _grouped(events)

    return decide


def _grouped(events: list[Message]) -> list[Message]:
    """Runs of several ``FilePut`` as one ``FilesPut`` each (same order, same
    writes): a batch of put-file -r is one event, not a thousand."""
    out: list[Message] = []
    run: list[ev.FilePut] = []

    def close() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            out.append(ev.FilesPut(puts=run))
        run.clear()

    for e in events:
        if isinstance(e, ev.FilePut):
            run.append(e)
            continue
        close()
        out.append(e)
    close()
    return out


def unnumbered(state: CommitWrites, writes: Sequence[Write]) -> list[str]:
    """The split directories of ``writes`` that this commit has no count for yet."""
    seen: list[str] = []
    for w in writes:
        if isinstance(w, Split) and w.path not in state.splits and w.path not in seen:
            seen.append(w.path)
    return seen


def base_count(path: str, node: tree_model.Node | None, deleted_in_commit: bool) -> int:
    """Where a directory's split numbering starts in this commit: after the
    pieces it has in the parent tree (``node``), or at 0 when it has none or
    was deleted in this commit. A file there is a FailedPrecondition."""
    if deleted_in_commit or node is None:
        return 0
    if not node.is_dir:
        raise FailedPrecondition(
            f"cannot split into {path}: it is a file, not a directory", path=path
        )
    return node.files


def piece_path(directory: str, index: int) -> str:
    return tree_paths.join(directory, PIECE_FORMAT.format(index))


def _refs(refs: Sequence[tree_model.DataRef]) -> list[ev.DataRef]:
    return [ev.DataRef(chunk=r.chunk, offset=r.offset, length=r.length) for r in refs]


def put(path: str, refs: Sequence[tree_model.DataRef], append: bool) -> ev.FilePut:
    return ev.FilePut(path=file_path(path), refs=_refs(refs), append=append)


def delete(path: str) -> ev.FileDeleted:
    return ev.FileDeleted(path=tree_paths.normalize(path))


def set_header(path: str, refs: Sequence[tree_model.DataRef]) -> ev.HeaderSet:
    return ev.HeaderSet(path=tree_paths.normalize(path), refs=_refs(refs))


def set_footer(path: str, refs: Sequence[tree_model.DataRef]) -> ev.FooterSet:
    return ev.FooterSet(path=tree_paths.normalize(path), refs=_refs(refs))


def copy(
    src_repo: str, src_commit: str, src_root: str, src_path: str, dst_path: str, overwrite: bool
) -> ev.FileCopied:
    """Copy the node at ``src_path`` of finished tree ``src_root`` to ``dst_path``.

    Copying a file onto / is an InvalidArgument (checked by the caller, who
    knows the source's kind)."""
    return ev.FileCopied(
        src_repo=src_repo,
        src_commit=src_commit,
        src_root=src_root,
        src_path=tree_paths.normalize(src_path),
        dst_path=tree_paths.normalize(dst_path),
        overwrite=overwrite,
    )


def _tree_refs(refs: Sequence[ev.DataRef]) -> tuple[tree_model.DataRef, ...]:
    return tuple(tree_model.DataRef(r.chunk, r.offset, r.length) for r in refs)


def as_ops(event: Message) -> list[tree_model.Op]:
    """The tree ops a commit event stands for, except a non-overwriting copy
    (``copy_appends``), which needs the source tree read."""
    if isinstance(event, ev.FilePut):
        return [tree_model.Put(event.path, _tree_refs(event.refs), event.append)]
    if isinstance(event, ev.FilesPut):
        return [tree_model.Put(p.path, _tree_refs(p.refs), p.append) for p in event.puts]
    if isinstance(event, ev.FileDeleted):
        return [tree_model.Delete(event.path)]
    if isinstance(event, ev.HeaderSet):
        return [tree_model.SetHeader(event.path, _tree_refs(event.refs))]
    if isinstance(event, ev.FooterSet):
        return [tree_model.SetFooter(event.path, _tree_refs(event.refs))]
    if isinstance(event, ev.SplitPiecePut):
        return [tree_model.Put(piece_path(event.path, event.index), _tree_refs(event.refs))]
    if isinstance(event, ev.FileCopied) and event.overwrite:
        return [
            tree_model.Delete(event.dst_path),
            tree_model.Copy(event.src_root, event.src_path, event.dst_path),
        ]
    return []


def copy_append_ops(
    event: ev.FileCopied,
    path: str,
    node: tree_model.Node,
    content: Sequence[tree_model.DataRef],
    header: Sequence[tree_model.DataRef],
    footer: Sequence[tree_model.DataRef],
) -> list[tree_model.Op]:
    """What a non-overwriting copy does for one source node at ``path`` (in
    the source tree): a file's content is appended to the file at its
    destination; a directory's header and footer, when it has them, replace
    the destination directory's (Pachyderm 1.7's copy-file)."""
    if path == event.src_path:
        rel = ""
    else:
        rel = path if event.src_path == "/" else path[len(event.src_path) :]
    dst = event.dst_path if not rel else (rel if event.dst_path == "/" else event.dst_path + rel)
    if not node.is_dir:
        return [tree_model.Put(dst, tuple(content), append=True)]
    ops: list[tree_model.Op] = []
    if header:
        ops.append(tree_model.SetHeader(dst, tuple(header)))
    if footer:
        ops.append(tree_model.SetFooter(dst, tuple(footer)))
    return ops
