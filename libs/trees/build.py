"""Build a commit's tree: fold its writes, in write order, into its parent's tree.

Ops are validated, numbered and externally sorted by (path, number) (see
``spill``), then the base tree is rewritten in one depth-first pass that
visits only directories and pages on changed paths. Within one path the ops
apply in write order; a delete or copy of a directory also drops the earlier
writes below it. The root object is written last, so a build that fails
(a file/directory conflict, a bad copy source, an error from the caller's op
stream) returns no root; the objects it wrote are unreferenced garbage.
Its objects are written without waiting for the disk and made durable
together before the root is returned (``libs.objects.grouped``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from libs.api.internal import tree_pb2
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.objects import ObjectStore
from libs.objects.grouped import GroupedWrites
from libs.trees.codec import (
    EMPTY_DIR_DATA,
    EMPTY_DIR_HASH,
    encode,
    file_object,
    load_dir,
    load_file,
    load_page,
    put_once,
)
from libs.trees.model import Copy, Delete, Op, Put, SetFooter, SetHeader, TreeRoot, refs_to_pb
from libs.trees.pages import DirWriter, Item, page_items, top_items
from libs.trees.paths import ROOT, normalize, sort_key
from libs.trees.read import check_root, get_child, root_child
from libs.trees.spill import DEFAULT_RUN_BYTES, OpSorter, Record
from libs.trees.stackless import Call, Return, Step, run

INLINE_REFS = 8  # files with more refs get their own object
_ROOT_KEY = sort_key(ROOT)
_DIR_MAKING = ("put", "copy", "set_header", "set_footer")


async def build(
    store: ObjectStore,
    base_root: str | None,
    ops: AsyncIterable[Op],
    *,
    spill_dir: Path | None = None,
    run_bytes: int = DEFAULT_RUN_BYTES,
) -> TreeRoot:
    """Apply ``ops`` in order to the tree ``base_root`` (None: empty) and store the result.

    FailedPrecondition on a file/directory conflict; InvalidArgument on a bad
    path; NotFound for a copy whose source does not exist."""
    sorter = OpSorter(spill_dir, run_bytes)
    # The objects the build writes become durable together, once, before
    # the root is returned (group fsync): the caller records the root only
    # after this returns.
    grouped = GroupedWrites(store)
    try:
        seq = 0
        async for op in ops:
            key, data = _encode_op(op)
            await sorter.add(key, seq, data)
            seq += 1
        base = await root_child(store, check_root(base_root)) if base_root else None
        builder = _Builder(grouped, sorter.merged())
        child, _ = await run(builder.node(_ROOT_KEY, "", base, -1))
        if child is None or child.hash == EMPTY_DIR_HASH:
            await put_once(grouped, EMPTY_DIR_HASH, EMPTY_DIR_DATA)
        await grouped.sync()
    finally:
        sorter.close()
        await grouped.discard()
    if child is None:
        return TreeRoot(EMPTY_DIR_HASH, 0, 0)
    return TreeRoot(child.hash, child.size, child.files)


def _encode_op(op: Op) -> tuple[bytes, bytes]:
    if isinstance(op, Put):
        path = normalize(op.path)
        if path == ROOT:
            raise InvalidArgument("cannot put a file at /: it is the root directory", path=path)
        pb = tree_pb2.TreeOp(put=tree_pb2.PutOp(refs=refs_to_pb(op.refs), append=op.append))
    elif isinstance(op, Delete):
        path = normalize(op.path)
        pb = tree_pb2.TreeOp(delete=tree_pb2.DeleteOp())
    elif isinstance(op, SetHeader):
        path = normalize(op.path)
        pb = tree_pb2.TreeOp(set_header=tree_pb2.HeaderOp(refs=refs_to_pb(op.refs)))
    elif isinstance(op, SetFooter):
        path = normalize(op.path)
        pb = tree_pb2.TreeOp(set_footer=tree_pb2.HeaderOp(refs=refs_to_pb(op.refs)))
    elif isinstance(op, Copy):
        path = normalize(op.dst_path)
        src = tree_pb2.CopyOp(src_root=check_root(op.src_root), src_path=normalize(op.src_path))
        pb = tree_pb2.TreeOp(copy=src)
    else:
        raise InvalidArgument(f"unknown tree op {type(op).__name__}", type=type(op).__name__)
    return sort_key(path), pb.SerializeToString()


def _path(key: bytes) -> str:
    return key.replace(b"\x00", b"/").decode("ascii")


def _below(key: bytes) -> bytes:
    """The key prefix of everything below ``key``."""
    return key if key == _ROOT_KEY else key + b"\x00"


def _conflict(file_key: bytes, other_key: bytes) -> FailedPrecondition:
    f, o = _path(file_key), _path(other_key)
    return FailedPrecondition(
        f"file/directory conflict: {f} is a file, so {o} cannot be created under it",
        path=f,
        other=o,
    )


@dataclass
class _State:
    """What a path holds while its own ops are applied in order."""

    kind: int  # tree_pb2.FILE, tree_pb2.DIR, or 0 for nothing
    child: tree_pb2.Child | None  # the existing entry this state still equals
    refs: list[tree_pb2.DataRef] | None = None  # a file's new content
    header: list[tree_pb2.DataRef] | None = None  # a directory's new header
    footer: list[tree_pb2.DataRef] | None = None


@dataclass
class _Pending:
    """A directory whose own ops are applied and whose entries are still to merge."""

    below: bytes
    name: str
    st: _State
    made: int
    reset: int


class _Builder:
    def __init__(self, store: ObjectStore, records: Iterator[Record]) -> None:
        self._store = store
        self._records = records
        self._next: Record | None = next(records, None)

    def _pop(self) -> tuple[bytes, int, tree_pb2.TreeOp]:
        assert self._next is not None
        key, seq, data = self._next
        self._next = next(self._records, None)
        return key, seq, tree_pb2.TreeOp.FromString(data)

    def _next_name(self, below: bytes) -> str | None:
        """The name of the next child of the directory whose keys start with ``below``."""
        if self._next is None or not self._next[0].startswith(below):
            return None
        rest = self._next[0][len(below) :]
        end = rest.find(b"\x00")
        return (rest if end < 0 else rest[:end]).decode("ascii")

    async def node(self, key: bytes, name: str, old: tree_pb2.Child | None, cutoff: int) -> Step:
        """Returns the new entry at ``key`` and the last sequence number that
        needs it to exist (a ``stackless`` step: paths nest deeper than Python's
        stack).

        Consumes every op at and below ``key``; ops numbered below ``cutoff``
        were undone by a delete or copy of an ancestor."""
        done = await self._own(key, name, old, cutoff)
        if isinstance(done, _Pending):
            done = yield Call(self._dir(done))
        yield Return(done)

    async def _own(
        self, key: bytes, name: str, old: tree_pb2.Child | None, cutoff: int
    ) -> tuple[tree_pb2.Child | None, int] | _Pending:
        """Apply the ops at ``key`` itself: the entry when that settles it (a
        file, an untouched directory), else the directory still to rebuild."""
        st = _State(old.kind if old is not None else 0, old)
        made, reset = -1, cutoff
        while self._next is not None and self._next[0] == key:
            _, seq, op = self._pop()
            which = op.WhichOneof("op")
            if which in _DIR_MAKING:
                made = max(made, seq)
            if seq > cutoff:
                await self._apply_own(key, name, st, seq, op)
                if which in ("delete", "copy"):
                    reset = seq
        below = _below(key)
        if st.kind == tree_pb2.FILE:
            while (nxt := self._next) is not None and nxt[0].startswith(below):
                okey, seq, op = self._pop()
                if op.WhichOneof("op") in _DIR_MAKING:
                    made = max(made, seq)
                    if seq > reset:
                        raise _conflict(key, okey)
            return await self._file_child(name, st), made
        unchanged = st.kind == tree_pb2.DIR and st.header is None and st.footer is None
        if unchanged and st.child is not None and self._next_name(below) is None:
            return st.child, made
        return _Pending(below, name, st, made, reset)

    async def _dir(self, p: _Pending) -> Step:
        """Rebuild a directory whose entries change (a step: it recurses)."""
        st = p.st
        base = await load_dir(self._store, st.child.hash) if st.child is not None else None
        writer = DirWriter(self._store)
        sub_made = yield Call(self._merge(writer, p.below, base, p.reset))
        made = max(p.made, sub_made)
        if st.kind == 0 and sub_made <= p.reset:
            yield Return((None, made))
            return
        dnode = await writer.finish()
        header = st.header if st.header is not None else (base.header if base else [])
        footer = st.footer if st.footer is not None else (base.footer if base else [])
        dnode.header.extend(header)
        dnode.footer.extend(footer)
        digest, data = encode(tree_pb2.TreeObject(dir=dnode))
        if st.child is None or digest != st.child.hash:
            await put_once(self._store, digest, data)
        entry = tree_pb2.Child(
            name=p.name, kind=tree_pb2.DIR, hash=digest, size=dnode.size, files=dnode.files
        )
        yield Return((entry, made))

    async def _apply_own(
        self, key: bytes, name: str, st: _State, seq: int, op: tree_pb2.TreeOp
    ) -> None:
        which = op.WhichOneof("op")
        if which == "delete":
            st.kind, st.child, st.refs, st.header, st.footer = 0, None, None, None, None
        elif which == "copy":
            src = await get_child(self._store, op.copy.src_root, op.copy.src_path)
            if src is None:
                raise NotFound(
                    f"copy source {op.copy.src_path} not found in tree {op.copy.src_root}",
                    path=op.copy.src_path,
                    root=op.copy.src_root,
                )
            if key == _ROOT_KEY and src.kind != tree_pb2.DIR:
                raise InvalidArgument(
                    f"cannot copy file {op.copy.src_path} to /: it is the root directory",
                    path=op.copy.src_path,
                )
            src.name = name
            st.kind, st.child, st.refs, st.header, st.footer = src.kind, src, None, None, None
        elif which == "put":
            if st.kind == tree_pb2.DIR:
                path = _path(key)
                raise FailedPrecondition(
                    f"file/directory conflict: {path} is a directory, so a file cannot be "
                    f"put there",
                    path=path,
                )
            refs = await self._current_refs(st) if op.put.append else []
            refs.extend(op.put.refs)
            st.kind, st.child, st.refs = tree_pb2.FILE, None, refs
        else:
            if st.kind == tree_pb2.FILE:
                path = _path(key)
                raise FailedPrecondition(
                    f"file/directory conflict: {path} is a file, so it cannot have a {which}",
                    path=path,
                )
            st.kind = tree_pb2.DIR
            refs = list(op.set_header.refs if which == "set_header" else op.set_footer.refs)
            if which == "set_header":
                st.header = refs
            else:
                st.footer = refs

    async def _current_refs(self, st: _State) -> list[tree_pb2.DataRef]:
        if st.kind != tree_pb2.FILE:
            return []
        if st.refs is not None:
            return st.refs
        assert st.child is not None
        if not st.child.stored:
            return list(st.child.refs)
        return list((await load_file(self._store, st.child.hash)).refs)

    async def _file_child(self, name: str, st: _State) -> tree_pb2.Child:
        if st.refs is None:
            assert st.child is not None
            return st.child
        size = sum(r.length for r in st.refs)
        digest, data = encode(file_object(st.refs, size))
        child = tree_pb2.Child(name=name, kind=tree_pb2.FILE, hash=digest, size=size, files=1)
        if len(st.refs) > INLINE_REFS:
            await put_once(self._store, digest, data)
            child.stored = True
        else:
            child.refs.extend(st.refs)
        return child

    async def _merge(
        self, w: DirWriter, below: bytes, base: tree_pb2.DirNode | None, cutoff: int
    ) -> Step:
        """Feed a directory's entries, changed ones rebuilt, into ``w``; returns ``made``."""
        made = -1
        if base is not None:
            made = yield Call(self._walk(w, below, base.height, top_items(base), None, cutoff))
        while (name := self._next_name(below)) is not None:
            got = await self._change(w, below, name, None, cutoff)
            if isinstance(got, _Pending):
                got = await self._added(w, (yield Call(self._dir(got))))
            made = max(made, got)
        yield Return(made)

    async def _walk(
        self,
        w: DirWriter,
        below: bytes,
        level: int,
        items: Sequence[Item],
        hi: str | None,
        cutoff: int,
    ) -> Step:
        """Feed the entries under ``items`` (a level of the old page tree) into ``w``.

        A page with no change in its name range is passed on whole when the
        writer is at a page boundary below it; otherwise it is read and merged."""
        made = -1
        if level == 0:
            for child in items:
                assert isinstance(child, tree_pb2.Child)
                name = self._next_name(below)
                while name is not None and name < child.name:
                    got = await self._change(w, below, name, None, cutoff)
                    if isinstance(got, _Pending):
                        got = await self._added(w, (yield Call(self._dir(got))))
                    made = max(made, got)
                    name = self._next_name(below)
                if name == child.name:
                    got = await self._change(w, below, name, child, cutoff)
                    if isinstance(got, _Pending):
                        got = await self._added(w, (yield Call(self._dir(got))))
                    made = max(made, got)
                else:
                    await w.add_child(child)
            yield Return(made)
            return
        for i, ref in enumerate(items):
            assert isinstance(ref, tree_pb2.PageRef)
            nxt = items[i + 1] if i + 1 < len(items) else None
            ref_hi = nxt.first if isinstance(nxt, tree_pb2.PageRef) else hi
            name = self._next_name(below)
            untouched = name is None or (ref_hi is not None and name >= ref_hi)
            if untouched and w.empty_below(level):
                await w.pass_page(level - 1, ref)
                continue
            page = await load_page(self._store, ref.hash)
            sub = yield Call(self._walk(w, below, level - 1, page_items(page), ref_hi, cutoff))
            made = max(made, sub)
        yield Return(made)

    async def _change(
        self, w: DirWriter, below: bytes, name: str, old: tree_pb2.Child | None, cutoff: int
    ) -> int | _Pending:
        """Add the new entry ``name`` to ``w`` and return ``made``; a directory
        to rebuild is handed back (the caller ``Call``s ``_dir`` and ``_added``):
        a file costs no step, so wide directories stay fast."""
        done = await self._own(below + name.encode("ascii"), name, old, cutoff)
        if isinstance(done, _Pending):
            return done
        return await self._added(w, done)

    async def _added(self, w: DirWriter, done: tuple[tree_pb2.Child | None, int]) -> int:
        child, made = done
        if child is not None:
            await w.add_child(child)
        return made
