"""pfs's GlobFileRefs pages (services.pfs.app.file_reads): whatever the page
size, the pages together are the matching files in path order, each
directory's header once before its files and its footer after; a file longer
than a page is cut and resumed; nothing matching is NotFound. Over a real
tree in a local object store (the commit lookup is the only stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs import trees
from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import FailedPrecondition, NotFound
from libs.trees import Put, SetFooter, SetHeader
from services.pfs.app import file_reads
from services.pfs.app.commit_trees import CommitTree
from tests.unit.trees_support import CountingStore, apply, ref

COMMIT = pfs.Commit(repo=pfs.Repo(name="r"), id="c" * 32)


def refs(*ns: int) -> tuple[trees.DataRef, ...]:
    return tuple(ref(n) for n in ns)


async def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> file_reads.FileReads:
    store = CountingStore(tmp_path)
    root = await apply(
        store,
        None,
        Put("/a/1", refs(10, 11, 12, 13, 14)),
        Put("/a/2", refs(20)),
        Put("/b/1", refs(30, 31)),
        Put("/b/c/1", refs(40)),
        Put("/z", refs(50)),
        Put("/d/e", refs(60)),
        SetHeader("/a", refs(1)),
        SetFooter("/a", refs(2, 3)),
        SetHeader("/b", refs(4)),
        SetFooter("/b/c", refs(5)),
    )

    async def commit_tree(docs: Any, commit: pfs.Commit) -> CommitTree:
        return CommitTree(COMMIT, {}, root.hash)

    monkeypatch.setattr(file_reads, "commit_tree", commit_tree)
    return file_reads.FileReads(docs=None, store=store)  # type: ignore[arg-type]


async def read_all(reads: file_reads.FileReads, pattern: str) -> tuple[list[str], int]:
    req = internal.GlobFileRefsRequest(file=pfs.File(commit=COMMIT, path=pattern))
    out: list[str] = []
    pages = 0
    while True:
        got = await reads.glob_file_refs(req, None)  # type: ignore[arg-type]
        pages += 1
        out.extend(r.chunk for r in got.refs)
        if not got.more:
            return out, pages
        req.after, req.first, req.matched = got.after, got.first, got.matched
        req.refs_sent = got.refs_sent
        del req.open[:]
        req.open.extend(got.open)


def chunks(*ns: int) -> list[str]:
    return [r.chunk for r in refs(*ns)]


CASES = {
    "/a/*": chunks(1, 10, 11, 12, 13, 14, 20, 2, 3),
    "/*/1": chunks(1, 10, 11, 12, 13, 14, 2, 3, 4, 30, 31),
    "/b/**": chunks(4, 30, 31, 40, 5),
    "/**": chunks(1, 10, 11, 12, 13, 14, 20, 2, 3, 4, 30, 31, 40, 5, 60, 50),
    "/a": chunks(1, 2, 3),
    "/{z,a/2}": chunks(1, 20, 2, 3, 50),
}


@pytest.mark.parametrize("page", [1, 2, 3, 4096])
@pytest.mark.parametrize("pattern", sorted(CASES))
async def test_pages_join_to_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str, page: int
) -> None:
    reads = await built(tmp_path, monkeypatch)
    monkeypatch.setattr(file_reads, "REFS_PAGE", page)
    got, pages = await read_all(reads, pattern)
    assert got == CASES[pattern]
    if page == 1 and pattern != "/a":
        assert pages >= 2  # really cut


async def test_nothing_matching(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = await built(tmp_path, monkeypatch)
    with pytest.raises(NotFound, match="no file"):
        await read_all(reads, "/nope*")


async def test_only_a_bare_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = await built(tmp_path, monkeypatch)
    with pytest.raises(FailedPrecondition, match="only directories"):
        await read_all(reads, "/[d]")
