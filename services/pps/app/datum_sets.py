"""A job's datums, enumerated from its input trees in datum order.

``enumerate_datums`` streams the ``DatumTask``s of a job's input spec: an
atom input gives one datum per glob match (file or directory) in its
commit's tree, glob ``/`` one datum for the whole tree; a cron input is an
atom with glob ``/`` over its cron repo; cross and union combine nested
inputs (order: ``services.pps.domain.datums``). An input whose branch has no
commit yet (``JobInputCommit.tree`` empty) has no datums.

Memory: an atom input and a union stream; a cross streams its first input
and holds the datums of its other inputs (they are read again for every
datum of the first): up to ``HOLD_IN_MEMORY`` per input in memory, the rest
spilled to a temporary file. Put the biggest input first.

``enumerate_new_datums`` is the datum set of an incremental pipeline: the
datums of a single atom input whose matched node is new or changed since the
previous job's commit.

``commits`` maps an input's key to the job's commit of it: its name, and
for a name used again (members of a union may share one, as in 1.7)
``<name>#<n>``, n counting the repeats in depth-first spec order
(``commit_map`` builds it from the job's inputs, which come in that order).
A repeated name's key (``DatumInput.key``) stands for the name in the
datum's id, so the same path and content in two members are two datums:
one id per datum of a job, which the skip index, the outputs reused, the
datums read model and the stats tree all rely on.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from libs.api.events.pps_pb2 import JobInputCommit
from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument
from libs.objects import ObjectStore
from libs.trees import Node, diff, get, glob
from libs.trees.glob import compile_pattern
from libs.trees.paths import ROOT, segments, sort_key
from services.pps.domain.datums import cross, cross_count, datum_id, union_count

Datum = tuple[pachinternal.DatumInput, ...]

HOLD_IN_MEMORY = 50_000  # datums of a non-first cross input kept in memory; the rest spill
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class _Atom:
    """What an atom (or cron) input reads: its name, glob and flags."""

    name: str
    glob: str
    lazy: bool
    empty_files: bool
    branch: str


def commit_map(inputs: Iterable[JobInputCommit]) -> dict[str, JobInputCommit]:
    """The job's input commits (in depth-first spec order) by input key."""
    out: dict[str, JobInputCommit] = {}
    seen: dict[str, int] = {}
    for i in inputs:
        n = seen.get(i.name, 0)
        seen[i.name] = n + 1
        out[input_key(i.name, n)] = i
    return out


def input_key(name: str, repeat: int) -> str:
    return name if repeat == 0 else f"{name}#{repeat}"


def _leaf_keys(input: pps_pb2.Input, path: str = "") -> dict[str, str]:
    """The key of every atom/cron input of the tree by its path (``""``: the
    root; ``.cross[i]`` / ``.union[i]`` below), depth-first in spec order."""
    keys: dict[str, str] = {}
    seen: dict[str, int] = {}

    def walk(node: pps_pb2.Input, at: str) -> None:
        if _is_leaf(node):
            name = _atom_view(node).name
            n = seen.get(name, 0)
            seen[name] = n + 1
            keys[at] = input_key(name, n)
        for i, child in enumerate(node.cross):
            walk(child, f"{at}.cross[{i}]")
        for i, child in enumerate(node.union):
            walk(child, f"{at}.union[{i}]")

    walk(input, path)
    return keys


async def enumerate_datums(
    store: ObjectStore,
    input: pps_pb2.Input,
    commits: Mapping[str, JobInputCommit],
    salt: str,
) -> AsyncIterator[pachinternal.DatumTask]:
    """The job's datums in datum order, ``index`` 0, 1, 2, ... and ``id`` salted.

    ``commits`` maps every atom/cron input's name to the job's commit of it.
    InvalidArgument for an input with no kind set, a git input, or an input
    ``commits`` has no entry for."""
    index = 0
    if _is_leaf(input):
        # The common case, without the layers a cross or union needs.
        atom, commit = _resolve(input, commits, input_key(_atom_view(input).name, 0))
        if not commit.tree:
            return
        template = _template(atom, commit)
        async with aclosing(glob(store, commit.tree, atom.glob or ROOT)) as matches:
            async for path, node in matches:
                ident = datum_id(((atom.name, path, node.hash),), salt)
                datum_input = _input(template, path, node)
                yield pachinternal.DatumTask(id=ident, index=index, inputs=(datum_input,))
                index += 1
        return
    async for datum in _datums(store, input, commits, _leaf_keys(input), ""):
        yield _task(datum, index, salt)
        index += 1


async def count_datums(
    store: ObjectStore,
    input: pps_pb2.Input,
    commits: Mapping[str, JobInputCommit],
    keys: Mapping[str, str] | None = None,
    path: str = "",
) -> int:
    """How many datums ``enumerate_datums`` yields, without building them."""
    keys = _leaf_keys(input) if keys is None else keys
    if _is_leaf(input):
        atom, commit = _resolve(input, commits, keys[path])
        if not commit.tree:
            return 0
        if atom.glob in ("/", ""):
            return 1
        count = 0
        async for _ in glob(store, commit.tree, atom.glob):
            count += 1
        return count
    if input.union:
        return union_count(
            [
                await count_datums(store, i, commits, keys, f"{path}.union[{n}]")
                for n, i in enumerate(input.union)
            ]
        )
    if input.cross:
        return cross_count(
            [
                await count_datums(store, i, commits, keys, f"{path}.cross[{n}]")
                for n, i in enumerate(input.cross)
            ]
        )
    raise _bad_input(input)


async def enumerate_new_datums(
    store: ObjectStore,
    input: pps_pb2.Input,
    commits: Mapping[str, JobInputCommit],
    previous: Mapping[str, JobInputCommit],
    salt: str,
    *,
    incremental: bool = True,
) -> AsyncIterator[pachinternal.DatumTask]:
    """The datums of a single atom (or cron) input whose matched node is new or
    changed relative to the previous job's commit of that input (``previous``,
    keyed by input name; no entry or an empty tree: every datum is new).
    ``incremental``: each datum input names the previous tree, so the worker
    lays out only what is new in it (an incremental pipeline); without it the
    tasks are those ``enumerate_datums`` gives for the same matches, but
    ``index`` counts the changed datums only.

    For a glob without ``**`` the trees are diffed, so the cost follows the
    changes; otherwise both trees are globbed and compared path by path.
    InvalidArgument for a cross, union or git input."""
    if not _is_leaf(input):
        raise InvalidArgument(
            "incremental datums need a single atom or cron input, not a cross, union or git"
        )
    atom, commit = _resolve(input, commits, input_key(_atom_view(input).name, 0))
    before = previous.get(atom.name)
    if not commit.tree:
        return
    if before is None or not before.tree:
        async for task in enumerate_datums(store, input, commits, salt):
            yield task
        return
    _, segs = compile_pattern(atom.glob or ROOT)
    if any(s.deep for s in segs):
        changed = _changed_by_glob(store, atom.glob, before.tree, commit.tree)
    else:
        changed = _changed_by_diff(store, atom.glob or ROOT, len(segs), before.tree, commit.tree)
    template = _template(atom, commit)
    if incremental:
        template.previous_tree = before.tree
    index = 0
    async for path, node in changed:
        yield _task((_input(template, path, node),), index, salt)
        index += 1


class HeldDatums:
    """The datums of a non-first cross input, iterated again for every datum
    of the inputs before it: the first ``HOLD_IN_MEMORY`` in memory, the rest
    in a temporary file (length-prefixed ``DatumTask``s) read back each time."""

    def __init__(self, spill_dir: Path | None = None) -> None:
        self._memory: list[Datum] = []
        self._count = 0
        self._spill_dir = spill_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._file: BinaryIO | None = None

    def add(self, datum: Datum) -> None:
        self._count += 1
        if self._file is None and len(self._memory) < HOLD_IN_MEMORY:
            self._memory.append(datum)
            return
        if self._file is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pps-cross-", dir=self._spill_dir)
            self._file = self._path().open("wb", buffering=1 << 16)
        data = pachinternal.DatumTask(inputs=datum).SerializeToString()
        self._file.write(_LEN.pack(len(data)) + data)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Datum]:
        yield from self._memory
        if self._file is None:
            return
        self._file.flush()
        with self._path().open("rb", buffering=1 << 16) as f:
            while head := f.read(_LEN.size):
                (size,) = _LEN.unpack(head)
                yield tuple(pachinternal.DatumTask.FromString(f.read(size)).inputs)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _path(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name) / "datums"


def _task(datum: Datum, index: int, salt: str) -> pachinternal.DatumTask:
    # A repeated name's key stands for the name: two union members' datums
    # with the same path and content stay two datums (two ids); an input of
    # a name used once keeps 1.7's id.
    ident = datum_id([(d.key or d.name, d.path, d.hash) for d in datum], salt)
    return pachinternal.DatumTask(id=ident, index=index, inputs=datum)


async def _datums(
    store: ObjectStore,
    input: pps_pb2.Input,
    commits: Mapping[str, JobInputCommit],
    keys: Mapping[str, str],
    path: str,
) -> AsyncIterator[Datum]:
    if _is_leaf(input):
        atom, commit = _resolve(input, commits, keys[path])
        async for datum in _atom_datums(store, atom, commit, keys[path]):
            yield datum
    elif input.union:
        for n, sub in enumerate(input.union):
            async for datum in _datums(store, sub, commits, keys, f"{path}.union[{n}]"):
                yield datum
    elif input.cross:
        rest: list[HeldDatums] = []
        try:
            for n, sub in enumerate(input.cross[1:], start=1):
                held = HeldDatums()
                rest.append(held)
                async for d in _datums(store, sub, commits, keys, f"{path}.cross[{n}]"):
                    held.add(d)
                if not held:
                    return
            first = _datums(store, input.cross[0], commits, keys, f"{path}.cross[0]")
            async for head in first:
                for datum in cross([head], rest):
                    yield datum
        finally:
            for held in rest:
                held.close()
    else:
        raise _bad_input(input)


async def _atom_datums(
    store: ObjectStore, atom: _Atom, commit: JobInputCommit, key: str
) -> AsyncIterator[Datum]:
    if not commit.tree:
        return
    template = _template(atom, commit)
    if key != atom.name:
        template.key = key
    async for path, node in glob(store, commit.tree, atom.glob or ROOT):
        yield (_input(template, path, node),)


def _template(atom: _Atom, commit: JobInputCommit) -> pachinternal.DatumInput:
    """The fields every datum input of one atom input shares."""
    return pachinternal.DatumInput(
        name=atom.name,
        repo=commit.repo,
        branch=commit.branch or atom.branch,
        commit=commit.commit,
        tree=commit.tree,
        lazy=atom.lazy,
        empty_files=atom.empty_files,
    )


def _input(template: pachinternal.DatumInput, path: str, node: Node) -> pachinternal.DatumInput:
    datum_input = pachinternal.DatumInput()
    datum_input.CopyFrom(template)
    datum_input.path = path
    datum_input.hash = node.hash
    datum_input.is_dir = node.is_dir
    return datum_input


def _is_leaf(input: pps_pb2.Input) -> bool:
    """An input that reads one repo: atom, cron or git."""
    return input.HasField("atom") or input.HasField("cron") or input.HasField("git")


def _atom_view(input: pps_pb2.Input) -> _Atom:
    """The atom view of an atom, cron or git input (a git input's repo holds
    the pushed tree; the whole tree is its one datum, as in 1.7)."""
    if input.HasField("atom"):
        a = input.atom
        return _Atom(a.name or a.repo, a.glob, a.lazy, a.empty_files, a.branch or "master")
    if input.HasField("git"):
        g = input.git
        return _Atom(g.name, ROOT, False, False, g.branch or "master")
    c = input.cron
    return _Atom(c.name or c.repo, ROOT, False, False, "master")


def _resolve(
    input: pps_pb2.Input, commits: Mapping[str, JobInputCommit], key: str
) -> tuple[_Atom, JobInputCommit]:
    """The atom view of an atom or cron input and the job's commit of it
    (by its key; a map with one commit per name serves every input of that
    name)."""
    atom = _atom_view(input)
    commit = commits.get(key)
    if commit is None:
        commit = commits.get(atom.name)
    if commit is None:
        raise InvalidArgument(f"the job has no commit for input {atom.name!r}", input=atom.name)
    return atom, commit


def _bad_input(input: pps_pb2.Input) -> InvalidArgument:
    return InvalidArgument("input has none of atom, cross, union or cron set")


async def _changed_by_diff(
    store: ObjectStore, pattern: str, depth: int, old_root: str, new_root: str
) -> AsyncIterator[tuple[str, Node]]:
    """Matches of a pattern whose matches are all ``depth`` deep that differ
    between the trees: a change at or below such a path makes it a candidate."""
    full, _ = compile_pattern(pattern)
    if depth == 0:
        root = await get(store, new_root, ROOT)
        if old_root != new_root and root is not None:
            yield ROOT, root
        return
    last: str | None = None
    async for path, _old, new in diff(store, old_root, new_root):
        names = segments(path)
        if len(names) < depth:
            continue
        cand = path if len(names) == depth else "/" + "/".join(names[:depth])
        if cand == last:
            continue
        last = cand
        if not full.match(cand):
            continue
        node = new if len(names) == depth else await get(store, new_root, cand)
        if node is not None:
            yield cand, node


async def _changed_by_glob(
    store: ObjectStore, pattern: str, old_root: str, new_root: str
) -> AsyncIterator[tuple[str, Node]]:
    """Matches in the new tree that the old tree has not at that path with that hash."""
    async with aclosing(glob(store, old_root, pattern)) as old:
        cur = await anext(old, None)
        async for path, node in glob(store, new_root, pattern):
            key = sort_key(path)
            while cur is not None and sort_key(cur[0]) < key:
                cur = await anext(old, None)
            if cur is None or cur[0] != path or cur[1].hash != node.hash:
                yield path, node
