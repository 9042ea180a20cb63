"""ListFile, GlobFile and DiffFile from pfs's pages (a bus reply is at most
1 MiB): the streams send each page's FileInfos as they come; the unary RPCs
gather pages up to the gRPC message limit and beyond it answer
RESOURCE_EXHAUSTED (``TooLarge``) naming the streaming RPC to use instead.
``list_dir`` is a directory's entries, as the HTTP download's JSON listing
and the dashboard's file browser show them.

``read_file`` is GetFile: one file (or a directory's header and footer),
or with a glob pattern the matching files concatenated in path order,
read a page of refs at a time (never the whole list of refs or bytes).

Each next page is asked of the commit the first page resolved to (by id),
so a branch that moves meanwhile does not mix two commits in one answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import InvalidArgument
from libs.filedata import read_refs, segments
from libs.objects import ObjectStore
from libs.trees.glob import is_glob
from services.gateway.app.replies import TooLarge
from services.gateway.principal import Ask


async def list_file(ask: Ask, request: pfs.ListFileRequest) -> AsyncIterator[pfs.FileInfo]:
    page = internal.ListFilePageRequest(request=request)
    while True:
        got = await ask("ListFilePage", page, internal.FileInfoPage, "qry")
        for info in got.file_info:
            yield info
        if not got.more or not got.file_info:
            return
        page.request.file.commit.CopyFrom(got.commit)
        page.after = got.file_info[-1].file.path


def list_dir(ask: Ask, file: pfs.File) -> AsyncIterator[pfs.FileInfo]:
    """A directory's entries (a file: itself), a page per bus request."""
    return list_file(ask, pfs.ListFileRequest(file=file))


async def glob_file(ask: Ask, request: pfs.GlobFileRequest) -> AsyncIterator[pfs.FileInfo]:
    page = internal.GlobFilePageRequest(request=request)
    while True:
        got = await ask("GlobFilePage", page, internal.FileInfoPage, "qry")
        for info in got.file_info:
            yield info
        if not got.more or not got.file_info:
            return
        page.request.commit.CopyFrom(got.commit)
        page.after = got.file_info[-1].file.path


async def gather(infos: AsyncIterator[pfs.FileInfo], rpc: str, limit: int) -> pfs.FileInfos:
    out = pfs.FileInfos()
    size = 0
    async for info in infos:
        size += info.ByteSize() + 6
        if size > limit:
            raise TooLarge(rpc, rpc + "Stream", limit)
        out.file_info.append(info)
    return out


async def diff_file(ask: Ask, request: pfs.DiffFileRequest, limit: int) -> pfs.DiffFileResponse:
    """The whole diff, page by page (there is no streaming DiffFile in 1.7)."""
    page = internal.DiffFilePageRequest(request=request)
    out = pfs.DiffFileResponse()
    size = 0
    while True:
        got = await ask("DiffFilePage", page, internal.DiffFilePage, "qry")
        size += got.ByteSize()
        if size > limit:
            raise TooLarge("DiffFile", "a narrower path or shallow", limit)
        out.new_files.extend(got.new_files)
        out.old_files.extend(got.old_files)
        if not got.more or not got.last:
            return out
        page.request.new_file.commit.CopyFrom(got.new_commit)
        if got.old_commit.id:
            if not request.old_file.commit.repo.name:  # the parent: same path
                page.request.old_file.path = page.request.new_file.path
            page.request.old_file.commit.CopyFrom(got.old_commit)
        page.after = got.last


# Largest BytesValue a GetFile reply carries: under the 4 MiB a gRPC client
# accepts by default; 2 MiB rather than 512 KiB took pachctl get-file of
# 1 GiB from ~600-660 to ~720-780 MB/s (fewer messages, fewer thread hops).
REPLY_BYTES = 2 * 1024 * 1024


async def read_file(
    store: ObjectStore, ask: Ask, req: pfs.GetFileRequest
) -> AsyncIterator[bytes | memoryview]:
    """Bytes ``[offset_bytes, offset_bytes + size_bytes)`` of what reading
    ``req.file`` returns (to its end when ``size_bytes`` is 0), in pieces of
    at most ``REPLY_BYTES`` (views into the blocks read, not copies). A path
    with glob characters reads every match."""
    if req.offset_bytes < 0 or req.size_bytes < 0:
        raise InvalidArgument("get-file offset and size must not be negative")
    pages = _glob_refs(ask, req.file) if is_glob(req.file.path) else _file_refs(ask, req.file)
    skip = req.offset_bytes
    left = req.size_bytes or None
    async for refs in pages:
        length = sum(r.length for r in refs)
        if skip >= length:
            skip -= length
            continue
        async for block in read_refs(store, refs, skip, left):
            if left is not None:
                left -= len(block)
            if len(block) <= REPLY_BYTES:
                yield block
                continue
            view = memoryview(block)
            for start in range(0, len(block), REPLY_BYTES):
                yield view[start : start + REPLY_BYTES]
        skip = 0
        if left is not None and left <= 0:
            return


async def file_ranges(
    ask: Ask, file: pfs.File, offset: int, length: int
) -> AsyncIterator[tuple[str, int, int]]:
    """Where bytes ``[offset, offset+length)`` of one file (no glob) lie:
    (chunk, offset in the chunk, length) in order, a page of refs at a time
    (the zero-copy download sends these ranges of the chunk files)."""
    skip, left = offset, length
    async for refs in _file_refs(ask, file):
        size = sum(r.length for r in refs)
        if skip >= size:
            skip -= size
            continue
        for chunk, start, n in segments(refs, skip, min(left, size - skip)):
            left -= n
            yield chunk, start, n
        skip = 0
        if left <= 0:
            return


async def _file_refs(ask: Ask, file: pfs.File) -> AsyncIterator[list[trees.DataRef]]:
    page = internal.FileRefsRequest(file=file)
    while True:
        got = await ask("FileRefs", page, internal.FileRefsResponse, "qry")
        yield [trees.DataRef(r.chunk, r.offset, r.length) for r in got.refs]
        if not got.more:
            return
        page.first += len(got.refs)


async def _glob_refs(ask: Ask, file: pfs.File) -> AsyncIterator[list[trees.DataRef]]:
    page = internal.GlobFileRefsRequest(file=file)
    while True:
        got = await ask("GlobFileRefs", page, internal.GlobFileRefsResponse, "qry")
        yield [trees.DataRef(r.chunk, r.offset, r.length) for r in got.refs]
        if not got.more:
            return
        page.file.commit.CopyFrom(got.commit)  # later pages: the same commit
        page.after, page.first, page.matched = got.after, got.first, got.matched
        page.refs_sent = got.refs_sent
        del page.open[:]
        page.open.extend(got.open)
