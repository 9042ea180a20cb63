"""The gateway's assembly of pfs's file pages: cursors and pinned commits
between pages, and the unary reply's size cap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.protobuf.message import Message

from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from services.gateway.app import file_pages
from services.gateway.app.replies import TooLarge

PINNED = pfs.Commit(repo=pfs.Repo(name="data"), id="c" * 32)


def info(path: str) -> pfs.FileInfo:
    return pfs.FileInfo(file=pfs.File(commit=PINNED, path=path))


class PagedListing:
    """pfs's ListFilePage over 5 entries, 2 a page; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[internal.ListFilePageRequest] = []
        self.paths = [f"/d/{i}" for i in range(5)]

    async def __call__(self, name: str, request: Message, response_type: Any, kind: str) -> Any:
        assert name == "ListFilePage" and kind == "qry"
        assert isinstance(request, internal.ListFilePageRequest)
        self.asked.append(internal.ListFilePageRequest.FromString(request.SerializeToString()))
        rest = [p for p in self.paths if not request.after or p > request.after]
        page = rest[:2]
        return internal.FileInfoPage(
            file_info=[info(p) for p in page], more=len(rest) > 2, commit=PINNED
        )


async def collect(infos: AsyncIterator[pfs.FileInfo]) -> list[str]:
    return [i.file.path async for i in infos]


async def test_list_file_follows_the_cursor_on_the_pinned_commit() -> None:
    ask = PagedListing()
    req = pfs.ListFileRequest(file=pfs.File(commit=pfs.Commit(repo=PINNED.repo, id="master")))
    assert await collect(file_pages.list_file(ask, req)) == ask.paths
    assert [a.after for a in ask.asked] == ["", "/d/1", "/d/3"]
    assert [a.request.file.commit.id for a in ask.asked] == ["master", PINNED.id, PINNED.id]


async def test_gather_refuses_a_reply_over_the_limit_naming_the_stream() -> None:
    req = pfs.ListFileRequest(file=pfs.File(commit=PINNED, path="/d"))
    whole = await file_pages.gather(file_pages.list_file(PagedListing(), req), "ListFile", 10_000)
    assert len(whole.file_info) == 5
    with pytest.raises(TooLarge, match="use ListFileStream"):
        await file_pages.gather(file_pages.list_file(PagedListing(), req), "ListFile", 200)
