"""put-file and get-file on the gateway: the bytes go between the gRPC
stream and the object store here, and only data refs go to pfs over the bus
(docs/decisions/0007-pfs-model.md, "Files: bytes never travel through NATS").

``put_files`` reads a ``PutFile`` stream. A message with ``file`` set starts
a file; its bytes are ``value`` across messages, or what its ``url`` names
(``services.gateway.app.sources``). ``overwrite_index`` set replaces the file,
else the bytes are appended. ``delimiter`` splits the bytes into pieces in
the directory ``file.path`` (``services.gateway.app.splitting``), and
``header`` / ``footer`` set that directory's header / footer (empty: clear).

Writes are stored with one ``FileWriter`` per stream and their refs sent to
pfs in batches of ``BATCH``, each after ``flush()``, so a stream's state
does not grow with its files. pfs owns the stream's put session
(``services/pfs/app/put_sessions.py``): it picks the commit (the branch's
open head, or one it opens for the session, queued behind other sessions'),
finishes what it opened when the stream ends, and deletes it when the
stream fails or its lease lapses. ``read_file`` streams a byte range of a
file."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from typing import Any, TypeVar

import structlog
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument
from libs.filedata import SMALL_FILE, FileWriter
from libs.objects import ObjectStore
from services.gateway.app.packs import PackGroups
from services.gateway.app.sources import url_files
from services.gateway.app.splitting import as_pb, delimiter_name, metadata_write, split_writes
from services.gateway.principal import Ask

R = TypeVar("R", bound=Message)

_log = structlog.get_logger("gateway.files")


# File writes per PutFileRefs command.
BATCH = 1000
# How long a failed stream waits for its batch in flight before giving up
# its commits.
IN_FLIGHT_GRACE_S = 5.0


class _Requests:
    """A PutFile stream that a file's reader can hand its next message back
    to. A message with ``batch`` (many small files in one gRPC message, which
    pachctl sends) is read as its entries, one after another."""

    def __init__(self, stream: AsyncIterable[pfs.PutFileRequest]) -> None:
        self._it = stream.__aiter__()
        self._pending: deque[pfs.PutFileRequest] = deque()
        self._ended = False

    @property
    def ended(self) -> bool:
        """Every message of the stream was read (the client closed it)."""
        return self._ended and not self._pending

    async def next(self) -> pfs.PutFileRequest | None:
        if self._pending:
            return self._pending.popleft()
        if self._ended:
            return None
        try:
            msg = await self._it.__anext__()
        except StopAsyncIteration:
            self._ended = True
            return None
        if not msg.batch:
            return msg
        _check_batch(msg)
        self._pending.extend(msg.batch)
        return self._pending.popleft()

    def push_back(self, msg: pfs.PutFileRequest) -> None:
        self._pending.appendleft(msg)

    def file_follows(self) -> bool:
        """Whether the next message is already here and starts a file (so
        the one just read is whole: nothing after it adds to its bytes)."""
        return bool(self._pending) and self._pending[0].HasField("file")

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


def _check_batch(msg: pfs.PutFileRequest) -> None:
    """A batch sets nothing else, and its entries hold no batch."""
    if len(msg.ListFields()) != 1:
        raise InvalidArgument("put-file: a message with a batch of files must set nothing else")
    for entry in msg.batch:
        if entry.batch:
            path = entry.file.path or "/"
            raise InvalidArgument(
                f"put-file {path}: a batch entry must not hold a batch of its own", path=path
            )


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


class _Session:
    """One PutFile (or CopyFile) stream's put session: pfs decides which
    commit each target (the commit or branch a file names) writes into,
    opening one held by this session when the branch has no open head.

    Writes go to pfs in batches of ``BATCH``, each after the writer's flush
    (every ref they carry is durable), when the target changes, and at the
    end, whose last request tells pfs to finish what it opened. While the
    stream lives, the session renews the leases of the commits pfs holds for
    it; a failed stream gives them up (``abandon``), and if even that cannot
    reach pfs, the leases lapse and pfs deletes them."""

    def __init__(self, store: ObjectStore, ask: Ask) -> None:
        self.id = uuid.uuid4().hex
        self._ask = ask
        self.writer = FileWriter(store)
        # (repo, reference) -> the commit id pfs chose ("" until it has)
        self._targets: dict[tuple[str, str], str] = {}
        self._held: set[tuple[str, str]] = set()  # targets whose commit pfs holds for us
        self._target: tuple[str, str] | None = None
        self._writes: list[internal.FileWrite] = []
        self._lease_s = 0.0
        self._renewing: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None  # the batch pfs is being sent

    async def add(self, target: pfs.Commit, write: internal.FileWrite) -> None:
        key = (target.repo.name, target.id)
        if self._target is not None and self._target != key:
            await self.send()
        self._target = key
        self._targets.setdefault(key, "")
        self._writes.append(write)
        if len(self._writes) >= BATCH:
            await self._send_behind()

    async def _send_behind(self) -> None:
        """Send the full batch while the stream goes on being read and
        packed: its pack is written and pfs records it in the background.
        At most one batch is in flight, so pfs gets them in order; the
        next send (and every other request, and the end) waits for it, and
        raises its error."""
        await self._sent()
        if not self._writes or self._target is None:
            return
        writes, self._writes = self._writes, []
        self._sending = asyncio.ensure_future(self._flush_and_send(self._target, writes))

    async def _flush_and_send(
        self, target: tuple[str, str], writes: list[internal.FileWrite]
    ) -> None:
        await self.writer.flush()
        await self._refs(target, writes, end=False)

    async def _sent(self) -> None:
        """Wait for the batch in flight, if any (its error is raised)."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await sending

    async def commit(self, target: pfs.Commit) -> pfs.Commit:
        """The commit ``target`` writes into, by id (asking pfs the first time)."""
        key = (target.repo.name, target.id)
        if not self._targets.get(key):
            await self.send()  # writes before this point go first
        if not self._targets.get(key):
            self._targets[key] = ""
            await self._refs(key, [], end=False)
        return pfs.Commit(repo=target.repo, id=self._targets[key])

    async def send(self) -> None:
        await self._sent()
        if not self._writes or self._target is None:
            return
        await self.writer.flush()
        writes, self._writes = self._writes, []
        await self._refs(self._target, writes, end=False)

    async def finish(self) -> None:
        """Send what is left and end every target: pfs finishes the commits
        it opened for the session."""
        await self._sent()
        await self.writer.flush()
        for key in list(self._targets):
            writes: list[internal.FileWrite] = []
            if key == self._target:
                writes, self._writes = self._writes, []
            await self._refs(key, writes, end=True)
            self._held.discard(key)
        self._stop_renewing()

    async def abandon(self, why: BaseException) -> None:
        """Give up the commits pfs holds for the session (best effort: a
        failure is logged, and the leases lapse instead). Unsent writes are
        dropped."""
        self._stop_renewing()
        if self._sending is not None:
            # A batch in flight gets a moment to land, so that pfs is told
            # which commit to give up by id; then it is stopped.
            sending, self._sending = self._sending, None
            await asyncio.wait([sending], timeout=IN_FLIGHT_GRACE_S)
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        if not self._targets:
            return
        named = [self._named(key) for key in self._targets]
        req = internal.AbandonPutRequest(session=self.id, commits=named)
        fields = {"session": self.id, "cause": repr(why)}
        try:
            await self._ask("AbandonPut", req, Empty, "cmd")
        except Exception as exc:  # best effort: the stream's own error wins
            _log.warning("put_file_abandon_failed", error=repr(exc), **fields)
        else:
            _log.info("put_file_abandoned", **fields)

    def _named(self, key: tuple[str, str]) -> pfs.Commit:
        return pfs.Commit(repo=pfs.Repo(name=key[0]), id=self._targets.get(key) or key[1])

    async def _refs(
        self, key: tuple[str, str], writes: list[internal.FileWrite], *, end: bool
    ) -> None:
        req = internal.PutFileRefsRequest(commit=self._named(key), writes=writes, session=self.id)
        name = "EndPut" if end else "PutFileRefs"
        while True:
            got = await self._ask(name, req, internal.PutFileRefsResponse, "cmd")
            if not got.queued:
                break
            # the branch is held by other sessions' commits: our place is kept
        self._targets[key] = got.commit.id
        if got.lease_ms:
            self._held.add(key)
            self._lease_s = got.lease_ms / 1000
            if self._renewing is None:
                self._renewing = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self._lease_s / 3)
            held = [self._named(key) for key in self._held]
            try:
                req = internal.RenewPutRequest(session=self.id, commits=held)
                await self._ask("RenewPut", req, Empty, "cmd")
            except Exception as exc:  # the next renewal may get through
                _log.warning("put_file_lease_renewal_failed", session=self.id, error=repr(exc))

    def _stop_renewing(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            self._renewing = None


class _PutStream:
    """One PutFile stream's writes: ``run``, then ``session.finish()``, or
    on failure ``session.abandon()``. With ``packs``, a stream whose only
    file is small stores it in ``owner``'s shared pack (``app.packs``)."""

    def __init__(
        self, store: ObjectStore, ask: Ask, packs: PackGroups | None = None, owner: str = ""
    ) -> None:
        self._ask = ask
        self.session = _Session(store, ask)
        self._writer = self.session.writer
        self._packs = packs
        self._owner = owner

    async def run(self, requests: _Requests) -> None:
        only = True  # the first file, so far the stream's only one
        while (first := await requests.next()) is not None:
            if not first.HasField("file"):
                raise InvalidArgument("a put-file stream must start each file with its name")
            if requests.file_follows() and await self._put_whole(first):
                continue
            _check(first)
            commit = _target(first.file.commit)
            path = trees.normalize(first.file.path)
            if not first.url and only and self._packs is not None and _plain(first, path):
                await self._put_alone(commit, first, path, requests, self._packs)
                only = False
                continue
            only = False
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

    async def _put_whole(self, req: pfs.PutFileRequest) -> bool:
        """A small file whose bytes are all in ``req`` (a batch entry that
        another file follows), put as ``_put`` would put it but without its
        per-file machinery; False (nothing done) when ``req`` asks for more
        than that (split, header, url, ...) or is malformed: ``_put`` then
        takes it, or refuses it."""
        commit = req.file.commit
        if (
            req.url
            or req.recursive
            or req.delimiter != pfs.NONE
            or req.target_file_datums
            or req.target_file_bytes
            or req.HasField("header")
            or req.HasField("footer")
            or len(req.value) >= self._writer.small_file
            or not commit.repo.name
            or not commit.id
        ):
            return False
        path = trees.normalize(req.file.path)
        if path == "/":
            return False
        refs = await self._writer.write_small(req.value)
        append = not req.HasField("overwrite_index")
        await self.session.add(
            commit, internal.FileWrite(path=path, refs=as_pb(refs), append=append)
        )
        return True

    async def copy(self, req: pfs.CopyFileRequest) -> None:
        """CopyFile into the commit its destination names (a branch: the open
        head, or a commit pfs opens for the copy)."""
        # The source is pinned first: on the same branch, its head is what
        # the copy reads, not the commit opened for the copy.
        found = pfs.InspectCommitRequest(commit=req.src.commit)
        src = pfs.File(path=req.src.path)
        src.commit.CopyFrom((await self._ask("InspectCommit", found, pfs.CommitInfo, "qry")).commit)
        dst = pfs.File(path=req.dst.path)
        dst.commit.CopyFrom(await self.session.commit(_target(req.dst.commit)))
        copy = pfs.CopyFileRequest(src=src, dst=dst, overwrite=req.overwrite)
        await self._ask("CopyFile", copy, Empty, "cmd")

    async def _put_alone(
        self,
        commit: pfs.Commit,
        req: pfs.PutFileRequest,
        path: str,
        requests: _Requests,
        packs: PackGroups,
    ) -> None:
        """A plain file at the start of the stream: when it is small and the
        stream ends with it, its bytes go into the owner's shared pack
        (durable when ``write`` returns); otherwise as any file."""
        blocks = requests.blocks(req)
        head: list[bytes] = []
        size = 0
        async for block in blocks:
            head.append(bytes(block))
            size += len(block)
            if size >= SMALL_FILE:
                break
        if 0 < size < SMALL_FILE and requests.ended:
            refs = [await packs.write(self._owner, b"".join(head))]
        else:
            refs = await self._writer.write_file(_chain(head, blocks))
        write = internal.FileWrite(
            path=path, refs=as_pb(refs), append=not req.HasField("overwrite_index")
        )
        await self.session.add(commit, write)

    async def _put(
        self, commit: pfs.Commit, req: pfs.PutFileRequest, path: str, blocks: AsyncIterator[bytes]
    ) -> None:
        """Write one file's bytes (``blocks``) as ``req`` says, at ``path``."""
        overwrite = req.HasField("overwrite_index")
        session = self.session
        if req.HasField("header"):
            write = await metadata_write(self._writer, path, internal.HEADER, req.header.value)
            await session.add(commit, write)
        if req.HasField("footer"):
            write = await metadata_write(self._writer, path, internal.FOOTER, req.footer.value)
            await session.add(commit, write)
        if req.delimiter != pfs.NONE:
            if overwrite:  # the pieces replace the directory
                target = await session.commit(commit)
                delete = pfs.DeleteFileRequest(file=pfs.File(commit=target, path=path))
                await self._ask("DeleteFile", delete, Empty, "cmd")
            splitter = delimiter_name(req.delimiter)
            writes = split_writes(
                self._writer, path, blocks, splitter, req.target_file_datums, req.target_file_bytes
            )
            async for write in writes:
                await session.add(commit, write)
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
            await session.add(commit, write)


def _plain(req: pfs.PutFileRequest, path: str) -> bool:
    """A file message that puts its bytes as one file (no split, header or
    footer)."""
    return (
        req.delimiter == pfs.NONE
        and not req.HasField("header")
        and not req.HasField("footer")
        and path != "/"
    )


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for block in head:
        yield block
    async for block in rest:
        yield block


def _target(named: pfs.Commit) -> pfs.Commit:
    """A file's commit as the client named it (a branch or a commit id)."""
    if not named.repo.name:
        raise InvalidArgument("put-file: a repo name is required")
    if not named.id:
        raise InvalidArgument(f"put-file to repo {named.repo.name}: a branch or commit is required")
    return pfs.Commit(repo=pfs.Repo(name=named.repo.name), id=named.id)


async def put_files(
    store: ObjectStore,
    ask: Ask,
    stream: AsyncIterable[pfs.PutFileRequest],
    packs: PackGroups | None = None,
    owner: str = "",
) -> Empty:
    """Store a PutFile stream's files and have pfs commit them; with
    ``packs``, a stream of one small file shares ``owner``'s pack writes
    with other streams."""
    put = _PutStream(store, ask, packs, owner)
    try:
        await put.run(_Requests(stream))
        await put.session.finish()
    except BaseException as exc:  # a failed or cancelled stream: clean up, then fail
        await _even_if_cancelled(put.session.abandon(exc))
        raise
    return Empty()


async def copy_file(store: ObjectStore, ask: Ask, req: pfs.CopyFileRequest) -> Empty:
    """CopyFile as put-file writes: onto a branch whose head is finished (or
    missing) it makes its own commit and finishes it (Pachyderm 1.7); a
    failed copy deletes that commit."""
    put = _PutStream(store, ask)
    try:
        await put.copy(req)
        await put.session.finish()
    except BaseException as exc:
        await _even_if_cancelled(put.session.abandon(exc))
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
