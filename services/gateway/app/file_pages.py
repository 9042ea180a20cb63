"""ListFile, GlobFile and DiffFile from pfs's pages (a bus reply is at most
1 MiB): the streams send each page's FileInfos as they come; the unary RPCs
gather pages up to the gRPC message limit and beyond it answer
RESOURCE_EXHAUSTED (``TooLarge``) naming the streaming RPC to use instead.
``list_dir`` is a directory's entries, as the HTTP download's JSON listing
and the dashboard's file browser show them.

Each next page is asked of the commit the first page resolved to (by id),
so a branch that moves meanwhile does not mix two commits in one answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
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
