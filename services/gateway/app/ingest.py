"""put-file and get-file on the gateway: the bytes go between the gRPC
stream and the object store here, and only data refs go to pfs over the bus
(docs/decisions/0007-pfs-model.md, "Files: bytes never travel through NATS").

``put_files`` reads a ``PutFile`` stream. A message with ``file`` set starts
a file; its bytes are ``value`` across messages, or what its ``url`` names
(``services.gateway.app.sources``). ``overwrite_index`` set replaces the file,
else the bytes are appended. ``delimiter`` splits the bytes into pieces in
the directory ``file.path`` (``services.gateway.app.splitting``), and
``header`` / ``footer`` set that directory's header / footer (empty: clear).

Writes are stored with one ``FileWriter`` per stream and sent to pfs in
batches of ``BATCH``, each after ``flush()``, so a stream's state does not
grow with its files. A branch whose head is missing or finished gets a
commit for the stream, finished at its end (Pachyderm 1.7); if the stream
fails, that commit is deleted, while a commit the caller opened keeps the
writes already sent (whole files only). ``read_file`` streams a byte range
of a file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from typing import Any, TypeVar

import structlog
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument, NotFound
from libs.filedata import FileWriter, read_refs
from libs.objects import ObjectStore
from services.gateway.app.sources import url_files
from services.gateway.app.splitting import as_pb, delimiter_name, metadata_write, split_writes
from services.gateway.principal import Ask

R = TypeVar("R", bound=Message)

_log = structlog.get_logger("gateway.files")


# File writes per PutFileRefs command.
BATCH = 1000
# Largest BytesValue a GetFile reply carries: under the 4 MiB a gRPC client
# accepts by default; 2 MiB rather than 512 KiB took pachctl get-file of
# 1 GiB from ~600-660 to ~720-780 MB/s (fewer messages, fewer thread hops).
REPLY_BYTES = 2 * 1024 * 1024


class _Requests:
    """A PutFile stream that a file's reader can hand its next message back to."""

    def __init__(self, stream: AsyncIterable[pfs.PutFileRequest]) -> None:
        self._it = stream.__aiter__()
        self._pending: pfs.PutFileRequest | None = None

    async def next(self) -> pfs.PutFileRequest | None:
        if self._pending is not None:
            msg, self._pending = self._pending, None
            return msg
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            return None

    def push_back(self, msg: pfs.PutFileRequest) -> None:
        self._pending = msg

    async def blocks(self, first: pfs.PutFileRequest) -> AsyncIterator[bytes]:
        """The bytes of the file ``first`` starts, up to the next file."""
        if first.value:
            yield first.value
        while (msg := await self.next()) is not None:
            if msg.HasField("file"):
                self.push_back(msg)
                return
            if msg.value:
                yield msg.value


def _check(req: pfs.PutFileRequest) -> None:
    """Refuse a file message whose fields do not go together."""
    where = req.file.path or "/"
    if req.recursive and not req.url:
        raise InvalidArgument(f"put-file {where}: --recursive needs a url", path=where)
    if req.url and req.value:
        raise InvalidArgument(
            f"put-file {where}: a message with a url must not carry bytes", path=where
        )
    if req.target_file_datums < 0 or req.target_file_bytes < 0:
        raise InvalidArgument(
            f"put-file {where}: target_file_datums and target_file_bytes must be >= 0, got "
            f"{req.target_file_datums} and {req.target_file_bytes}",
            path=where,
        )
    if req.delimiter == pfs.NONE:
        if req.target_file_datums or req.target_file_bytes:
            raise InvalidArgument(
                f"put-file {where}: target_file_datums and target_file_bytes need --split",
                path=where,
            )
        if (req.HasField("header") or req.HasField("footer")) and req.url:
            raise InvalidArgument(
                f"put-file {where}: a header or footer is set on a directory, "
                "not put from a url (unless with --split)",
                path=where,
            )
    else:
        delimiter_name(req.delimiter)


class _Batch:
    """File writes for one commit, sent to pfs every ``BATCH`` writes, when
    the commit changes, and on ``send()`` — each time after the writer's
    flush, so every ref they carry is durable."""

    def __init__(self, writer: FileWriter, ask: Ask) -> None:
        self._writer = writer
        self._ask = ask
        self._commit: pfs.Commit | None = None
        self._writes: list[internal.FileWrite] = []

    async def add(self, commit: pfs.Commit, write: internal.FileWrite) -> None:
        if self._commit is not None and self._commit != commit:
            await self.send()
        self._commit = commit
        self._writes.append(write)
        if len(self._writes) >= BATCH:
            await self.send()

    async def send(self) -> None:
        if not self._writes:
            return
        assert self._commit is not None
        await self._writer.flush()
        req = internal.PutFileRefsRequest(commit=self._commit, writes=self._writes)
        await self._ask("PutFileRefs", req, Empty, "cmd")
        self._writes = []


class _PutStream:
    """One PutFile stream's writes: ``run``, then ``finish``, or on failure
    ``abandon``.

    StartCommit and FinishCommit run as tasks the stream's cancellation does
    not cancel, so ``abandon`` always knows which commits it opened and
    whether they finished."""

    def __init__(self, store: ObjectStore, ask: Ask) -> None:
        self._ask = ask
        self._writer = FileWriter(store)
        self._batch = _Batch(self._writer, ask)
        self._commits: dict[tuple[str, str], pfs.Commit] = {}  # (repo, ref) -> commit by id
        self._started: list[asyncio.Task[pfs.Commit]] = []
        self._finishing: dict[str, asyncio.Task[Empty]] = {}

    async def run(self, requests: _Requests) -> None:
        while (first := await requests.next()) is not None:
            if not first.HasField("file"):
                raise InvalidArgument("a put-file stream must start each file with its name")
            _check(first)
            commit = await self._commit(first.file.commit)
            path = trees.normalize(first.file.path)
            if not first.url:
                await self._put(commit, first, path, requests.blocks(first))
                continue
            if (after := await requests.next()) is not None:
                if not after.HasField("file"):
                    raise InvalidArgument(
                        f"put-file {path}: bytes follow a message with a url", path=path
                    )
                requests.push_back(after)
            async with contextlib.aclosing(url_files(first.url, first.recursive)) as files:
                async for name, blocks in files:
                    async with contextlib.aclosing(blocks):
                        where = trees.normalize(f"{path}/{name}")
                        await self._put(commit, first, where, blocks)

    async def copy(self, req: pfs.CopyFileRequest) -> None:
        """CopyFile into the commit its destination names (a branch: the open
        head, or a commit opened for the copy)."""
        # The source is pinned first: on the same branch, its head is what
        # the copy reads, not the commit opened for the copy.
        found = pfs.InspectCommitRequest(commit=req.src.commit)
        src = pfs.File(path=req.src.path)
        src.commit.CopyFrom((await self._ask("InspectCommit", found, pfs.CommitInfo, "qry")).commit)
        dst = pfs.File(path=req.dst.path)
        dst.commit.CopyFrom(await self._commit(req.dst.commit))
        copy = pfs.CopyFileRequest(src=src, dst=dst, overwrite=req.overwrite)
        await self._ask("CopyFile", copy, Empty, "cmd")

    async def _put(
        self, commit: pfs.Commit, req: pfs.PutFileRequest, path: str, blocks: AsyncIterator[bytes]
    ) -> None:
        """Write one file's bytes (``blocks``) as ``req`` says, at ``path``."""
        overwrite = req.HasField("overwrite_index")
        if req.HasField("header"):
            write = await metadata_write(self._writer, path, internal.HEADER, req.header.value)
            await self._batch.add(commit, write)
        if req.HasField("footer"):
            write = await metadata_write(self._writer, path, internal.FOOTER, req.footer.value)
            await self._batch.add(commit, write)
        if req.delimiter != pfs.NONE:
            if overwrite:  # the pieces replace the directory
                await self._batch.send()
                delete = pfs.DeleteFileRequest(file=pfs.File(commit=commit, path=path))
                await self._ask("DeleteFile", delete, Empty, "cmd")
            splitter = delimiter_name(req.delimiter)
            writes = split_writes(
                self._writer, path, blocks, splitter, req.target_file_datums, req.target_file_bytes
            )
            async for write in writes:
                await self._batch.add(commit, write)
        elif req.HasField("header") or req.HasField("footer"):
            async for block in blocks:
                if block:
                    raise InvalidArgument(
                        f"put-file {path}: a message that sets a header or footer carries no "
                        "file bytes (send the files in their own messages, or use --split)",
                        path=path,
                    )
        else:
            if path == "/":
                raise InvalidArgument("cannot put a file at /: it is the root directory", path=path)
            refs = await self._writer.write_file(blocks)
            write = internal.FileWrite(path=path, refs=as_pb(refs), append=not overwrite)
            await self._batch.add(commit, write)

    async def _commit(self, named: pfs.Commit) -> pfs.Commit:
        key = (named.repo.name, named.id)
        if (commit := self._commits.get(key)) is None:
            commit = await _open_commit(self._ask, named) or await self._start(named)
            self._commits[key] = commit
        return commit

    async def _start(self, named: pfs.Commit) -> pfs.Commit:
        """A new commit on the branch ``named.id``, for this stream."""
        req = pfs.StartCommitRequest(parent=pfs.Commit(repo=named.repo), branch=named.id)
        task = asyncio.ensure_future(self._ask("StartCommit", req, pfs.Commit, "cmd"))
        self._started.append(task)
        started = await asyncio.shield(task)
        return pfs.Commit(repo=named.repo, id=started.id)

    async def finish(self) -> None:
        """Send what is left and finish the commits opened for the stream."""
        await self._batch.send()
        for task in self._started:
            commit = task.result()
            req = pfs.FinishCommitRequest(commit=commit)
            finishing = asyncio.ensure_future(self._ask("FinishCommit", req, Empty, "cmd"))
            self._finishing[commit.id] = finishing
            await asyncio.shield(finishing)

    async def abandon(self, why: BaseException) -> None:
        """Delete the commits opened for the stream that did not finish (best
        effort: a failure is logged). Unsent writes are dropped."""
        for task in self._started:
            try:
                commit = await task
            except Exception:  # never started: nothing to delete
                continue
            finishing = self._finishing.get(commit.id)
            if finishing is not None:
                try:
                    await finishing
                except Exception:
                    pass  # the finish failed: delete it like an unfinished one
                else:
                    continue  # finished: it stays
            await self._delete(commit, why)

    async def _delete(self, commit: pfs.Commit, why: BaseException) -> None:
        fields = {"repo": commit.repo.name, "commit": commit.id, "cause": repr(why)}
        try:
            await self._ask("DeleteCommit", pfs.DeleteCommitRequest(commit=commit), Empty, "cmd")
        except Exception as exc:  # best effort: the stream's own error wins
            _log.warning("put_file_cleanup_failed", error=repr(exc), **fields)
        else:
            _log.info("put_file_commit_deleted", **fields)


async def put_files(
    store: ObjectStore, ask: Ask, stream: AsyncIterable[pfs.PutFileRequest]
) -> Empty:
    put = _PutStream(store, ask)
    try:
        await put.run(_Requests(stream))
        await put.finish()
    except BaseException as exc:  # a failed or cancelled stream: clean up, then fail
        await _even_if_cancelled(put.abandon(exc))
        raise
    return Empty()


async def copy_file(store: ObjectStore, ask: Ask, req: pfs.CopyFileRequest) -> Empty:
    """CopyFile as put-file writes: onto a branch whose head is finished (or
    missing) it makes its own commit and finishes it (Pachyderm 1.7); a
    failed copy deletes that commit."""
    put = _PutStream(store, ask)
    try:
        await put.copy(req)
        await put.finish()
    except BaseException as exc:
        await _even_if_cancelled(put.abandon(exc))
        raise
    return Empty()


# Cleanups still running after their stream was cancelled again.
_cleanups: set[asyncio.Task[None]] = set()


async def _even_if_cancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(work)
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


async def _open_commit(ask: Ask, commit: pfs.Commit) -> pfs.Commit | None:
    """The commit to write to, by id: the named one, or the open head of the
    named branch; None for a branch whose head is missing or finished (the
    stream gets a new commit on it)."""
    branch = pfs.InspectBranchRequest(branch=pfs.Branch(repo=commit.repo, name=commit.id))
    try:
        info = await ask("InspectBranch", branch, pfs.BranchInfo, "qry")
    except NotFound:
        info = None
    if info is not None and info.head.id:
        head = pfs.InspectCommitRequest(commit=pfs.Commit(repo=commit.repo, id=info.head.id))
        found = await ask("InspectCommit", head, pfs.CommitInfo, "qry")
        if not found.HasField("finished"):
            return found.commit
    if info is None:
        try:
            named = pfs.InspectCommitRequest(commit=commit)
            return (await ask("InspectCommit", named, pfs.CommitInfo, "qry")).commit
        except NotFound:
            pass  # neither a branch nor a commit: a new branch
    return None


async def read_file(store: ObjectStore, ask: Ask, req: pfs.GetFileRequest) -> AsyncIterator[bytes]:
    """Bytes ``[offset_bytes, offset_bytes + size_bytes)`` of a file (to its
    end when ``size_bytes`` is 0), in pieces of at most ``REPLY_BYTES``."""
    if req.offset_bytes < 0 or req.size_bytes < 0:
        raise InvalidArgument("get-file offset and size must not be negative")
    refs: list[trees.DataRef] = []
    while True:
        page = internal.FileRefsRequest(file=req.file, first=len(refs))
        got = await ask("FileRefs", page, internal.FileRefsResponse, "qry")
        refs.extend(trees.DataRef(r.chunk, r.offset, r.length) for r in got.refs)
        if not got.more:
            break
    async for block in read_refs(store, refs, req.offset_bytes, req.size_bytes or None):
        for start in range(0, len(block), REPLY_BYTES):
            yield block[start : start + REPLY_BYTES]
