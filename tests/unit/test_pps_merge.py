"""Merging datum outputs into a job's output tree (services.pps.app.merge), over
a real local object store."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TypeVar

import pytest

from libs.errors import FailedPrecondition, Internal
from libs.filedata import FileWriter, read_refs
from libs.trees import EMPTY_ROOT, Op, Put, SetHeader, file_refs, get, walk
from services.pps.app import merge
from services.pps.app.merge import merge_incremental, merge_outputs
from tests.unit.trees_support import CountingStore, apply, ref

T = TypeVar("T")


async def stream(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


@pytest.fixture
def store(tmp_path):
    return CountingStore(tmp_path / "objects")


async def output(store, files: Mapping[str, bytes], empty_dirs=()) -> str:
    """A datum output tree holding ``files`` (real bytes) and empty directories."""
    writer = FileWriter(store)
    ops: list[Op] = []
    for path, data in files.items():
        ops.append(Put(path, await writer.write_file(stream([data]))))
    await writer.flush()
    ops.extend(SetHeader(d, ()) for d in empty_dirs)
    return (await apply(store, None, *ops)).hash


async def content(store, root, path) -> bytes:
    node = await get(store, root, path)
    assert node is not None and not node.is_dir, path
    return b"".join([b async for b in read_refs(store, await file_refs(store, node))])


async def listing(store, root):
    return [(p, n.is_dir) async for p, n in walk(store, root)]


async def test_same_path_is_the_concatenation_in_datum_order(store):
    d0 = await output(store, {"/out.txt": b"zero\n", "/a": b"A"})
    d1 = await output(store, {"/out.txt": b"one\n"})
    d2 = await output(store, {"/out.txt": b"two\n", "/b/c": b"C"})
    root = await merge_outputs(store, stream([d0, d1, d2]))
    assert await content(store, root.hash, "/out.txt") == b"zero\none\ntwo\n"
    assert await content(store, root.hash, "/a") == b"A"
    assert await content(store, root.hash, "/b/c") == b"C"
    assert (root.files, root.size) == (3, 15)
    backwards = await merge_outputs(store, stream([d2, d1, d0]))
    assert await content(store, backwards.hash, "/out.txt") == b"two\none\nzero\n"


async def test_directories_merge_and_empty_directories_stay(store):
    d0 = await output(store, {"/dir/x": b"x"}, empty_dirs=["/empty"])
    d1 = await output(store, {"/dir/y": b"y", "/dir/sub/z": b"z"}, empty_dirs=["/e2/nested"])
    d2 = await output(store, {"/empty2": b""}, empty_dirs=["/dir/sub"])
    root = await merge_outputs(store, stream([d0, d1, d2]))
    assert await listing(store, root.hash) == [
        ("/", True),
        ("/dir", True),
        ("/dir/sub", True),
        ("/dir/sub/z", False),
        ("/dir/x", False),
        ("/dir/y", False),
        ("/e2", True),
        ("/e2/nested", True),
        ("/empty", True),
        ("/empty2", False),
    ]
    assert await content(store, root.hash, "/empty2") == b""


async def test_empty_outputs_are_skipped(store):
    d0 = await output(store, {"/f": b"data"})
    only = await merge_outputs(store, stream([d0]))
    mixed = await merge_outputs(store, stream(["", EMPTY_ROOT, d0, EMPTY_ROOT, ""]))
    assert mixed == only
    assert (await merge_outputs(store, stream([]))).hash == EMPTY_ROOT
    assert (await merge_outputs(store, stream(["", EMPTY_ROOT]))).hash == EMPTY_ROOT


async def test_a_file_in_one_datum_and_a_directory_in_another_conflict(store):
    d0 = await output(store, {"/a": b"file"})
    d1 = await output(store, {"/a/b": b"under"})
    with pytest.raises(FailedPrecondition, match="/a"):
        await merge_outputs(store, stream([d0, d1]))


async def test_merge_reads_no_file_bytes(store):
    big = bytes(range(256)) * 5000
    d0 = await output(store, {"/big": big})
    d1 = await output(store, {"/big": b"tail"})
    store.reset()
    root = await merge_outputs(store, stream([d0, d1]))
    assert all(key.startswith("trees/") for key in store.gets)
    assert await content(store, root.hash, "/big") == big + b"tail"


def random_outputs(rng: random.Random, n: int, pool: list[str], counter: list[int]):
    """Datum outputs as path -> ref lists (no bytes needed: only refs move)."""
    outs = []
    for _ in range(n):
        files = {}
        for p in rng.sample(pool, rng.randint(0, 3)):
            counter[0] += 1
            files[p] = [ref(counter[0], rng.randint(1, 9))]
        outs.append(files)
    return outs


async def build_output(store, files) -> str:
    if not files:
        return EMPTY_ROOT if random.random() < 0.5 else ""
    return (await apply(store, None, *(Put(p, r) for p, r in files.items()))).hash


async def expected_merge(store, outs) -> str:
    ops = [Put(p, r, append=True) for files in outs for p, r in files.items()]
    return (await apply(store, None, *ops)).hash


POOL = ["/r", "/p/x", "/p/y", "/q/z", "/s/t/u", "/s/t/v", "/s/w", "/deep/a/b/c"]


@pytest.mark.parametrize("small", [False, True])
async def test_merge_equals_appending_every_file_in_datum_order(store, monkeypatch, small):
    if small:  # outputs over one file are streamed instead of read ahead; little read-ahead
        monkeypatch.setattr(merge, "SMALL_OUTPUT", 1)
        monkeypatch.setattr(merge, "AHEAD", 3)
    rng = random.Random(11)
    counter = [0]
    for _ in range(10):
        outs = random_outputs(rng, rng.randint(0, 12), POOL, counter)
        roots = [await build_output(store, o) for o in outs]
        got = await merge_outputs(store, stream(roots))
        assert got.hash == await expected_merge(store, outs)


def paths(files) -> set[str]:
    return set(files)


async def test_incremental_merge_equals_the_full_merge_on_random_cases(store):
    rng = random.Random(5)
    counter = [0]
    outcomes = {"merged": 0, "none": 0}
    for _ in range(60):
        old = random_outputs(rng, rng.randint(1, 8), POOL, counter)
        gone_idx = set(rng.sample(range(len(old)), rng.randint(0, min(2, len(old)))))
        kept = [o for i, o in enumerate(old) if i not in gone_idx]
        removed = [o for i, o in enumerate(old) if i in gone_idx]
        added = random_outputs(rng, rng.randint(0, 2), POOL, counter)
        new = list(kept)
        for a in added:  # added datums land anywhere in the new datum order
            new.insert(rng.randint(0, len(new)), a)
        added_in_order = [o for o in new if any(o is a for a in added)]

        prev = await merge_outputs(store, stream([await build_output(store, o) for o in old]))
        full = await merge_outputs(store, stream([await build_output(store, o) for o in new]))
        inc = await merge_incremental(
            store,
            prev.hash,
            stream([await build_output(store, o) for o in removed]),
            stream([await build_output(store, o) for o in added_in_order]),
        )
        kept_paths = set().union(*(paths(o) for o in kept)) if kept else set()
        changed_paths = set().union(*(paths(o) for o in removed + added_in_order))
        removed_paths = [p for o in removed for p in o]
        sure = not (kept_paths & changed_paths) and len(removed_paths) == len(set(removed_paths))
        assert (inc is not None) == sure
        if inc is not None:
            assert inc == full
            outcomes["merged"] += 1
        else:
            outcomes["none"] += 1
    assert outcomes["merged"] >= 10 and outcomes["none"] >= 10, outcomes


async def test_incremental_replaces_one_datum_among_many(store):
    roots = [await output(store, {f"/out/f{i:03d}": b"%d" % i}) for i in range(300)]
    prev = await merge_outputs(store, stream(roots))
    changed = await output(store, {"/out/f150": b"changed"})
    renamed = await output(store, {"/out/g150": b"moved"})
    inc = await merge_incremental(store, prev.hash, stream([roots[150]]), stream([changed]))
    assert inc is not None
    assert inc == await merge_outputs(store, stream([*roots[:150], changed, *roots[151:]]))
    assert await content(store, inc.hash, "/out/f150") == b"changed"
    inc2 = await merge_incremental(store, prev.hash, stream([roots[150]]), stream([renamed]))
    assert inc2 is not None
    assert inc2 == await merge_outputs(store, stream([*roots[:150], renamed, *roots[151:]]))
    assert await get(store, inc2.hash, "/out/f150") is None


async def test_incremental_drops_directories_the_removal_empties(store):
    keep = await output(store, {"/a/keep": b"k"})
    gone = await output(store, {"/a/b/c/gone": b"g", "/x/y": b"y"})
    add = await output(store, {"/x/z": b"z"})
    prev = await merge_outputs(store, stream([keep, gone]))
    inc = await merge_incremental(store, prev.hash, stream([gone]), stream([add]))
    assert inc is not None
    assert await listing(store, inc.hash) == [
        ("/", True),
        ("/a", True),
        ("/a/keep", False),
        ("/x", True),
        ("/x/z", False),
    ]
    assert inc == await merge_outputs(store, stream([keep, add]))


async def test_incremental_is_none_when_a_path_is_shared(store):
    kept = await output(store, {"/shared": b"kept", "/k": b"k"})
    gone = await output(store, {"/shared": b"gone"})
    prev = await merge_outputs(store, stream([kept, gone]))
    # The removed datum's file also holds a staying datum's content.
    assert await merge_incremental(store, prev.hash, stream([gone]), stream([])) is None
    # An added datum writes a path a staying datum wrote.
    add = await output(store, {"/k": b"again"})
    prev2 = await merge_outputs(store, stream([kept]))
    assert await merge_incremental(store, prev2.hash, stream([]), stream([add])) is None
    # Two removed datums wrote the same path.
    g1, g2 = await output(store, {"/p": b"1"}), await output(store, {"/p": b"2"})
    prev3 = await merge_outputs(store, stream([kept, g1, g2]))
    assert await merge_incremental(store, prev3.hash, stream([g1, g2]), stream([])) is None
    # A removed datum left an empty directory (another datum may have it too).
    e = await output(store, {}, empty_dirs=["/e"])
    prev4 = await merge_outputs(store, stream([kept, e]))
    assert await merge_incremental(store, prev4.hash, stream([e]), stream([])) is None


async def test_incremental_is_none_on_a_file_directory_conflict(store):
    kept = await output(store, {"/a": b"file"})
    prev = await merge_outputs(store, stream([kept]))
    add = await output(store, {"/a/b": b"under"})
    assert await merge_incremental(store, prev.hash, stream([]), stream([add])) is None
    with pytest.raises(FailedPrecondition):
        await merge_outputs(store, stream([kept, add]))


async def test_incremental_added_datums_append_in_their_order(store):
    kept = await output(store, {"/k": b"k"})
    prev = await merge_outputs(store, stream([kept]))
    a1 = await output(store, {"/new": b"1"}, empty_dirs=["/d"])
    a2 = await output(store, {"/new": b"2", "/d/f": b"f"})
    inc = await merge_incremental(store, prev.hash, stream([]), stream([a1, a2]))
    assert inc is not None
    assert await content(store, inc.hash, "/new") == b"12"
    assert inc == await merge_outputs(store, stream([kept, a1, a2]))


async def test_a_failing_output_stream_or_a_missing_tree_fails_the_merge(store, monkeypatch):
    monkeypatch.setattr(merge, "AHEAD", 4)
    roots = [await output(store, {f"/f{i}": b"x"}) for i in range(6)]

    async def broken():
        for r in roots:
            yield r
        raise RuntimeError("read model went away")

    with pytest.raises(RuntimeError, match="went away"):
        await merge_outputs(store, broken())
    missing = "0" * 64
    with pytest.raises(Internal, match=missing):
        await merge_outputs(store, stream([*roots, missing, *roots]))
