"""put-file and get-file on the gateway: the bytes go between the gRPC
stream and the object store here, and only data refs go to pfs over the bus
(docs/decisions/0007-pfs-model.md, "Files: bytes never travel through NATS").

``put_files`` reads a ``PutFile`` stream: a message with ``file`` set starts
a file (``overwrite_index`` set: replace it, else append to it), ``value``
carries its bytes across messages. Writes are stored with one ``FileWriter``
per stream and sent to pfs in batches, each after ``flush()``. A branch whose
head is missing or finished gets a commit for the stream, finished at its
end (Pachyderm 1.7). ``read_file`` streams a byte range of a file."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.internal import tree_pb2
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument, NotFound
from libs.filedata import FileWriter, read_refs
from libs.objects import ObjectStore

R = TypeVar("R", bound=Message)


class Ask(Protocol):
    """A pfs bus call on behalf of the gRPC caller."""

    async def __call__(
        self, name: str, request: Message, response_type: type[R], kind: str
    ) -> R: ...


# File writes per PutFileRefs command.
BATCH = 1000
# Largest BytesValue a GetFile reply carries.
REPLY_BYTES = 512 * 1024


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


def _check_supported(req: pfs.PutFileRequest) -> None:
    if req.url or req.recursive:
        raise InvalidArgument("put-file from a URL is not supported; send the bytes")
    if req.delimiter != pfs.NONE or req.HasField("header") or req.HasField("footer"):
        raise InvalidArgument("put-file --split, headers and footers are not supported yet")


@dataclass
class _Target:
    commit: pfs.Commit  # by id
    started: bool  # opened for this stream: finish it at the end


@dataclass
class _Batch:
    commit: pfs.Commit
    writes: list[internal.FileWrite] = field(default_factory=list)


async def put_files(
    store: ObjectStore, ask: Ask, stream: AsyncIterable[pfs.PutFileRequest]
) -> Empty:
    requests = _Requests(stream)
    writer = FileWriter(store)
    targets: dict[tuple[str, str], _Target] = {}
    batch: _Batch | None = None

    async def send(b: _Batch) -> None:
        await writer.flush()
        req = internal.PutFileRefsRequest(commit=b.commit, writes=b.writes)
        await ask("PutFileRefs", req, Empty, "cmd")

    while (first := await requests.next()) is not None:
        if not first.HasField("file"):
            raise InvalidArgument("a put-file stream must start each file with its name")
        _check_supported(first)
        path = trees.normalize(first.file.path)
        if path == "/":
            raise InvalidArgument("cannot put a file at /: it is the root directory", path=path)
        key = (first.file.commit.repo.name, first.file.commit.id)
        if key not in targets:
            targets[key] = await _target(ask, first.file.commit)
        commit = targets[key].commit
        refs = await writer.write_file(requests.blocks(first))
        write = internal.FileWrite(
            path=path,
            refs=[tree_pb2.DataRef(chunk=r.chunk, offset=r.offset, length=r.length) for r in refs],
            append=not first.HasField("overwrite_index"),
        )
        if batch is not None and (batch.commit != commit or len(batch.writes) >= BATCH):
            await send(batch)
            batch = None
        if batch is None:
            batch = _Batch(commit)
        batch.writes.append(write)
    if batch is not None:
        await send(batch)
    for target in targets.values():
        if target.started:
            await ask("FinishCommit", pfs.FinishCommitRequest(commit=target.commit), Empty, "cmd")
    return Empty()


async def _target(ask: Ask, commit: pfs.Commit) -> _Target:
    """The commit to write to: the named one, or for a branch whose head is
    missing or finished, a new commit on it."""
    branch = pfs.InspectBranchRequest(branch=pfs.Branch(repo=commit.repo, name=commit.id))
    try:
        info = await ask("InspectBranch", branch, pfs.BranchInfo, "qry")
    except NotFound:
        info = None
    if info is not None and info.head.id:
        head = pfs.InspectCommitRequest(commit=pfs.Commit(repo=commit.repo, id=info.head.id))
        found = await ask("InspectCommit", head, pfs.CommitInfo, "qry")
        if not found.HasField("finished"):
            return _Target(found.commit, False)
    if info is None:
        try:
            named = pfs.InspectCommitRequest(commit=commit)
            return _Target((await ask("InspectCommit", named, pfs.CommitInfo, "qry")).commit, False)
        except NotFound:
            pass  # neither a branch nor a commit: a new branch
    start = pfs.StartCommitRequest(parent=pfs.Commit(repo=commit.repo), branch=commit.id)
    started = await ask("StartCommit", start, pfs.Commit, "cmd")
    return _Target(pfs.Commit(repo=commit.repo, id=started.id), True)


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
