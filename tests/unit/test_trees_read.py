"""Glob, diff and listing over trees, with read counts to check pruning and skipping."""

from __future__ import annotations

import tracemalloc

import pytest

from libs.errors import InvalidArgument
from libs.trees import Delete, Put, build, diff, glob, list_dir, pages
from tests.unit.trees_support import CountingStore, apply, ref


@pytest.fixture
def store(tmp_path):
    return CountingStore(tmp_path / "objects")


CDEF = ["/c", "/c/d", "/c/d/e", "/c/d/e/f"]
TREE = ["/a/x", "/a/y/z", "/ab", "/b/x.txt", "/b/y.csv", "/c/d/e/f"]


async def _matches(store, root, pattern):
    return [p async for p, _ in glob(store, root, pattern)]


@pytest.mark.parametrize(
    ("pattern", "want"),
    [
        ("/", ["/"]),
        ("/*", ["/a", "/ab", "/b", "/c"]),
        ("*", ["/a", "/ab", "/b", "/c"]),
        ("/*/*", ["/a/x", "/a/y", "/b/x.txt", "/b/y.csv", "/c/d"]),
        ("/a*", ["/a", "/ab"]),
        ("/a?", ["/ab"]),
        ("/a/**", ["/a/x", "/a/y", "/a/y/z"]),
        (
            "/**",
            [
                "/",
                "/a",
                "/a/x",
                "/a/y",
                "/a/y/z",
                "/ab",
                "/b",
                "/b/x.txt",
                "/b/y.csv",
                "/c",
                "/c/d",
                "/c/d/e",
                "/c/d/e/f",
            ],
        ),
        ("/b/*.{txt,csv}", ["/b/x.txt", "/b/y.csv"]),
        ("/b/*.txt", ["/b/x.txt"]),
        ("/[ab]", ["/a", "/b"]),
        ("/[!a]", ["/b", "/c"]),
        ("/[a-b]*/x*", ["/a/x", "/b/x.txt"]),
        ("/{a/x,c/d}", ["/a/x", "/c/d"]),
        ("/c/**/f", ["/c/d/e/f"]),
        ("/a/", ["/a"]),
        ("/nope/*", []),
        ("/ab/*", []),
    ],
)
async def test_glob(store, pattern, want):
    root = await apply(store, None, *(Put(p, [ref(i)]) for i, p in enumerate(TREE)))
    assert await _matches(store, root.hash, pattern) == want


async def test_bad_glob_patterns(store):
    root = await apply(store, None, Put("/a", [ref(1)]))
    for bad in ("/[ab", "/{a,b", "/a\\"):
        with pytest.raises(InvalidArgument):
            await _matches(store, root.hash, bad)


async def test_glob_prunes_with_the_literal_prefix(store):
    ops = [Put(f"/big/f{i:05d}", [ref(i)]) for i in range(5000)]
    ops += [Put(f"/dir/f{i}", [ref(i)]) for i in range(3)] + [Put("/dir/sub/x", [ref(9)])]
    root = await apply(store, None, *ops)
    store.reset()
    assert await _matches(store, root.hash, "/dir/*") == [
        "/dir/f0",
        "/dir/f1",
        "/dir/f2",
        "/dir/sub",
    ]
    assert len(store.gets) == 2  # the root and /dir; nothing of /big
    store.reset()
    assert await _matches(store, root.hash, "/big/f0420*") == [f"/big/f0420{i}" for i in range(10)]
    assert len(store.gets) <= 5  # root, /big, and the page(s) holding f0420x
    store.reset()
    assert len(await _matches(store, root.hash, "/*")) == 2
    assert len(store.gets) == 1


async def test_diff_reports_adds_removes_changes(store):
    old = await apply(store, None, *(Put(p, [ref(i)]) for i, p in enumerate(TREE)))
    new = await apply(
        store,
        old.hash,
        Put("/a/x", [ref(100)]),
        Delete("/a/y"),
        Put("/new/file", [ref(101)]),
        Delete("/ab"),
        Put("/ab/now-a-dir", [ref(102)]),
    )
    changes = [
        (p, o is not None, n is not None) async for p, o, n in diff(store, old.hash, new.hash)
    ]
    assert changes == [
        ("/a/x", True, True),
        ("/a/y", True, False),
        ("/a/y/z", True, False),
        ("/ab", True, True),
        ("/ab/now-a-dir", False, True),
        ("/new", False, True),
        ("/new/file", False, True),
    ]
    shallow = [p async for p, _, _ in diff(store, old.hash, new.hash, shallow=True)]
    assert shallow == ["/a", "/ab", "/new"]
    under = [p async for p, _, _ in diff(store, old.hash, new.hash, prefix="/a")]
    assert under == ["/a/x", "/a/y", "/a/y/z"]
    assert [c async for c in diff(store, new.hash, new.hash)] == []


async def test_diff_skips_equal_subtrees_and_pages(store):
    ops = [Put(f"/big/f{i:05d}", [ref(i)]) for i in range(20000)]
    ops += [Put(f"/other/{i}/f", [ref(i)]) for i in range(200)]
    old = await apply(store, None, *ops)
    new = await apply(store, old.hash, Put("/big/f10000", [ref(-5 % 2**31)]))
    store.reset()
    changes = [p async for p, _, _ in diff(store, old.hash, new.hash)]
    assert changes == ["/big/f10000"]
    # two roots, two /big nodes, and per side the page path down to the change
    assert len(store.gets) <= 4 + 2 * 3


@pytest.mark.scale
@pytest.mark.slow
async def test_200k_files_in_one_directory_with_bounded_memory(store, tmp_path):
    n = 200_000

    async def ops():
        for i in range(n):
            yield Put(f"/dir/file-{i:07d}", [ref(i)])

    tracemalloc.start()
    try:
        root = await build(store, None, ops(), spill_dir=tmp_path, run_bytes=4 << 20)
        _, build_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count, last = 0, ""
        async for node in list_dir(store, root.hash, "/dir"):
            assert node.name > last
            last = node.name
            count += 1
        _, list_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    globbed = 0
    async for _ in glob(store, root.hash, "/dir/file-01*"):
        globbed += 1
    big = await apply(store, root.hash, Put("/dir/file-0100000", [ref(-1 % 2**31)]))
    diffs = [p async for p, _, _ in diff(store, root.hash, big.hash)]
    assert (root.files, count, globbed) == (n, n, 100_000)
    assert diffs == ["/dir/file-0100000"]
    # Holding the entries alone would take > 200k * 100 bytes = 20 MB.
    assert build_peak < 12 << 20, build_peak
    assert list_peak < 6 << 20, list_peak  # what build left behind counts too
    assert pages.MAX_ITEMS >= pages.TARGET
