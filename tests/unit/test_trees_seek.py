"""Reading from a cursor (libs.trees.seek): every cursor gives exactly the
rest of the full listing or glob, and a late cursor skips the pages before it."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.trees import Put, build, glob
from libs.trees.seek import list_dir_after
from tests.unit.trees_support import CountingStore, ref, stream

PATHS = [
    "/a/x",
    "/a/y/z",
    "/a-b",
    "/ab",
    "/b/x.txt",
    "/b/y.csv",
    "/b/y/q.csv",
    "/c/d/e/f",
    "/c/d/e0",
    "/f",
    "/f0",
]
PATTERNS = ["/", "*", "/*/*", "/a*", "/b/*.csv", "**", "/c/**", "/**/*.csv", "/{a,b}/*", "/c/d/e"]


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


async def test_glob_after_any_cursor_is_the_rest_of_the_glob(store: CountingStore) -> None:
    root = await build(store, None, stream(Put(p, (ref(i),)) for i, p in enumerate(PATHS)))
    for pattern in PATTERNS:
        whole = [p async for p, _ in glob(store, root.hash, pattern)]
        assert whole, pattern  # (what a glob matches: tests/unit/test_trees.py)
        for i, cursor in enumerate(whole):
            rest = [p async for p, _ in glob(store, root.hash, pattern, cursor)]
            assert rest == whole[i + 1 :], (pattern, cursor)


async def test_a_late_cursor_reads_few_pages(store: CountingStore) -> None:
    names = [f"/big/f{i:06d}" for i in range(20_000)]
    root = await build(store, None, stream(Put(p, (ref(i),)) for i, p in enumerate(names)))
    store.reset()
    late = [p async for p, _ in glob(store, root.hash, "/big/f*", names[-3])]
    assert late == names[-2:]
    assert len(store.gets) <= 6
    store.reset()
    listed = [n.name async for n in list_dir_after(store, root.hash, "/big", "f019997")]
    assert listed == ["f019998", "f019999"]
    assert len(store.gets) <= 6
