"""Tree building semantics: write order, headers, copies, conflicts, paths, sharing."""

from __future__ import annotations

import random

import pytest

from libs.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from libs.trees import (
    EMPTY_ROOT,
    Copy,
    Delete,
    Kind,
    Op,
    Put,
    SetFooter,
    SetHeader,
    build,
    effective_refs,
    file_refs,
    get,
    list_dir,
    normalize,
    pages,
)
from tests.unit.trees_support import CountingStore, apply, paths, ref, stream, tree_objects


@pytest.fixture
def store(tmp_path):
    return CountingStore(tmp_path / "objects")


@pytest.fixture
def small_pages(monkeypatch):
    """Tiny pages so that a few hundred entries make a page tree several levels high."""
    monkeypatch.setattr(pages, "TARGET", 4)
    monkeypatch.setattr(pages, "MAX_ITEMS", 12)


async def test_empty_tree_is_the_empty_root(store):
    root = await apply(store, None)
    assert (root.hash, root.size, root.files) == (EMPTY_ROOT, 0, 0)
    assert await paths(store, root.hash) == ["/"]
    assert [n async for n in list_dir(store, root.hash, "/")] == []


async def test_put_overwrite_append_in_write_order(store):
    root = await apply(
        store,
        None,
        Put("/f", [ref(1)]),
        Put("/f", [ref(2)]),
        Put("/g", [ref(3)], append=True),
        Put("/g", [ref(4, 5)], append=True),
    )
    f, g = await get(store, root.hash, "/f"), await get(store, root.hash, "/g")
    assert f is not None and f.refs == (ref(2),)
    assert g is not None and g.refs == (ref(3), ref(4, 5)) and g.size == 15
    assert (root.size, root.files) == (25, 2)
    root2 = await apply(store, root.hash, Put("/g", [ref(5)], append=True))
    g2 = await get(store, root2.hash, "/g")
    assert g2 is not None and g2.refs == (ref(3), ref(4, 5), ref(5))


async def test_large_file_refs_are_stored_separately(store):
    many = [ref(i) for i in range(50)]
    root = await apply(store, None, Put("/big", many))
    node = await get(store, root.hash, "/big")
    assert node is not None and node.refs is None and node.size == 500
    assert await file_refs(store, node) == tuple(many)
    root2 = await apply(store, root.hash, Put("/big", [ref(99)], append=True))
    node2 = await get(store, root2.hash, "/big")
    assert node2 is not None and await file_refs(store, node2) == (*many, ref(99))


async def test_delete_follows_write_order(store):
    gone = await apply(store, None, Put("/a/f", [ref(1)]), Delete("/"))
    assert gone.hash == EMPTY_ROOT
    back = await apply(store, None, Delete("/"), Put("/a/f", [ref(1)]))
    assert await paths(store, back.hash) == ["/", "/a", "/a/f"]
    mixed = await apply(
        store,
        None,
        Put("/a/b", [ref(1)]),
        Delete("/a"),
        Put("/a/c", [ref(2)]),
        Delete("/x/never"),
    )
    assert await paths(store, mixed.hash) == ["/", "/a", "/a/c"]
    again = await apply(store, mixed.hash, Delete("/a/c"), Put("/a/c", [ref(3)]))
    node = await get(store, again.hash, "/a/c")
    assert node is not None and node.refs == (ref(3),)


async def test_deleting_a_missing_path_changes_nothing(store):
    root = await apply(store, None, Put("/a/f", [ref(1)]))
    store.reset()
    same = await apply(store, root.hash, Delete("/a/nope"), Delete("/zzz"))
    assert same.hash == root.hash
    assert store.puts == []


async def test_parents_stay_when_their_last_child_goes(store):
    one = await apply(store, None, Put("/a/b/c", [ref(1)]), Delete("/a/b"))
    first = await apply(store, None, Put("/a/b/c", [ref(1)]))
    two = await apply(store, first.hash, Delete("/a/b"))
    assert one.hash == two.hash
    assert await paths(store, one.hash) == ["/", "/a"]


async def test_headers_and_footers(store):
    root = await apply(
        store,
        None,
        SetHeader("/d", [ref(10, 3)]),
        Put("/d/f", [ref(1)]),
        SetFooter("/d", [ref(11, 4)]),
        Put("/top", [ref(2)]),
    )
    assert await effective_refs(store, root.hash, "/d/f") == (ref(10, 3), ref(1), ref(11, 4))
    assert await effective_refs(store, root.hash, "/d") == (ref(10, 3), ref(11, 4))
    assert await effective_refs(store, root.hash, "/top") == (ref(2),)
    kept = await apply(store, root.hash, Put("/d/g", [ref(3)]))
    assert await effective_refs(store, kept.hash, "/d/g") == (ref(10, 3), ref(3), ref(11, 4))
    with pytest.raises(FailedPrecondition):
        await apply(store, root.hash, SetHeader("/top", [ref(1)]))
    with pytest.raises(NotFound):
        await effective_refs(store, root.hash, "/nope")


async def test_copy_shares_hashes(store):
    src = await apply(
        store, None, Put("/src/a", [ref(1)]), Put("/src/sub/b", [ref(2)]), Put("/f", [ref(3)])
    )
    store.reset()
    root = await apply(
        store,
        src.hash,
        Copy(src.hash, "/src", "/dst"),
        Copy(src.hash, "/f", "/g"),
        Copy(src.hash, "/src/sub", "/src2"),
    )
    d_src, d_dst = await get(store, root.hash, "/src"), await get(store, root.hash, "/dst")
    assert d_src is not None and d_dst is not None and d_src.hash == d_dst.hash
    f, g = await get(store, root.hash, "/f"), await get(store, root.hash, "/g")
    assert f is not None and g is not None and f.hash == g.hash
    assert await paths(store, root.hash) == [
        "/",
        "/dst",
        "/dst/a",
        "/dst/sub",
        "/dst/sub/b",
        "/f",
        "/g",
        "/src",
        "/src/a",
        "/src/sub",
        "/src/sub/b",
        "/src2",
        "/src2/b",
    ]
    assert len(store.puts) == 1  # only the new root: every other node is shared
    edited = await apply(store, root.hash, Copy(src.hash, "/src", "/dst"), Put("/dst/c", [ref(4)]))
    dst = [p for p in await paths(store, edited.hash) if p.startswith("/dst")]
    assert dst == ["/dst", "/dst/a", "/dst/c", "/dst/sub", "/dst/sub/b"]
    e_src = await get(store, edited.hash, "/src")
    assert e_src is not None and e_src.hash == d_src.hash
    with pytest.raises(NotFound):
        await apply(store, src.hash, Copy(src.hash, "/missing", "/x"))
    with pytest.raises(InvalidArgument):
        await apply(store, src.hash, Copy(src.hash, "/f", "/"))


@pytest.mark.parametrize(
    "ops",
    [
        [Put("/foo", [ref(1)]), Put("/foo/bar", [ref(2)])],
        [Put("/foo/bar", [ref(2)]), Put("/foo", [ref(1)])],
        [Put("/foo", [ref(1)]), Put("/foo/x/y/bar", [ref(2)])],
        [Put("/foo", [ref(1)]), SetHeader("/foo/bar", [ref(2)])],
    ],
)
async def test_file_directory_conflict_names_both_paths(store, ops):
    with pytest.raises(FailedPrecondition) as e:
        await apply(store, None, *ops)
    assert "/foo" in str(e.value)
    assert "/foo/" in str(e.value) or "directory" in str(e.value)


async def test_conflict_with_the_base_tree(store):
    base = await apply(store, None, Put("/foo", [ref(1)]), Put("/dir/x", [ref(2)]))
    with pytest.raises(FailedPrecondition) as e:
        await apply(store, base.hash, Put("/foo/bar", [ref(2)]))
    assert e.value.fields == {"path": "/foo", "other": "/foo/bar"}
    with pytest.raises(FailedPrecondition):
        await apply(store, base.hash, Put("/dir", [ref(3)]))
    fine = await apply(store, base.hash, Delete("/foo"), Put("/foo/bar", [ref(2)]))
    assert await paths(store, fine.hash) == ["/", "/dir", "/dir/x", "/foo", "/foo/bar"]
    undone = await apply(store, base.hash, Put("/foo/bar", [ref(2)]), Delete("/foo"))
    assert await paths(store, undone.hash) == ["/", "/dir", "/dir/x"]


@pytest.mark.parametrize(
    "bad",
    ["/a/../b", "/a/./b", "..", "/a//b", "//", "/a\x00b", "/a\tb", "/a\nb", "/caf\u00e9", "/a\x7f"],
)
async def test_bad_paths_are_rejected_by_name(store, bad):
    with pytest.raises(InvalidArgument) as e:
        await apply(store, None, Put(bad, [ref(1)]))
    assert e.value.fields["path"] == bad
    assert repr(bad) in str(e.value) or bad in str(e.value)


def test_paths_normalise():
    assert normalize("a/b") == "/a/b"
    assert normalize("/a/b/") == "/a/b"
    assert normalize("/") == "/"
    assert normalize("a b/~c") == "/a b/~c"


async def test_put_at_root_is_invalid(store):
    with pytest.raises(InvalidArgument):
        await apply(store, None, Put("/", [ref(1)]))


async def test_unknown_root_is_internal(store):
    with pytest.raises(Internal):
        await get(store, "0" * 64, "/")
    with pytest.raises(Internal):
        await apply(store, "0" * 64, Put("/a", [ref(1)]))


async def test_get_of_a_missing_path_is_none(store):
    root = await apply(store, None, Put("/a/f", [ref(1)]))
    assert await get(store, root.hash, "/a/nope") is None
    assert await get(store, root.hash, "/a/f/deeper") is None
    node = await get(store, root.hash, "/a")
    assert node is not None and node.kind is Kind.DIR and node.files == 1
    with pytest.raises(NotFound):
        [n async for n in list_dir(store, root.hash, "/nope")]


async def test_same_content_same_root_whatever_the_batching(store, small_pages):
    names = [f"/d/f{i:04d}" for i in range(400)] + [f"/e/{i}/x" for i in range(30)]
    one = await apply(store, None, *(Put(p, [ref(i)]) for i, p in enumerate(names)))
    shuffled = list(enumerate(names))
    random.Random(7).shuffle(shuffled)
    root = None
    for start in range(0, len(shuffled), 37):
        batch = [Put(p, [ref(i)]) for i, p in shuffled[start : start + 37]]
        root = (await apply(store, root, *batch)).hash
    assert root == one.hash
    # Deleting half gives the same tree as never writing it.
    # (Only files: a directory emptied by deletes stays, as in Pachyderm.)
    half = await apply(store, one.hash, *(Delete(p) for p in names[1:400:2]))
    kept = [(i, p) for i, p in enumerate(names) if i >= 400 or i % 2 == 0]
    direct = await apply(store, None, *(Put(p, [ref(i)]) for i, p in kept))
    assert half.hash == direct.hash
    listed = [n.name async for n in list_dir(store, one.hash, "/d")]
    assert listed == sorted(p.rsplit("/", 1)[1] for p in names if p.startswith("/d/"))


async def test_one_change_writes_only_the_nodes_on_its_path(store, small_pages):
    ops = [Put(f"/a/b/c/f{i:05d}", [ref(i)]) for i in range(3000)]
    ops += [Put(f"/other/{i}", [ref(i)]) for i in range(300)]
    root = await apply(store, None, *ops)
    before = {key async for key in _keys(store)}
    store.reset()
    changed = await apply(store, root.hash, Put("/a/b/c/f01500", [ref(-1 % 2**31)]))
    after = {key async for key in _keys(store)}
    new = after - before
    # 3000 entries with ~4 per page make a page tree about 6 levels high;
    # the change rewrites one page per level plus the 4 directories on its path.
    assert 0 < len(new) <= 2 * 6 + 4
    assert len(store.gets) <= 3 * 8 + 4
    assert changed.files == root.files
    other_old = await get(store, root.hash, "/other")
    other_new = await get(store, changed.hash, "/other")
    assert other_old is not None and other_new is not None and other_old.hash == other_new.hash


async def _keys(store):
    async for info in store.list("trees/"):
        yield info.key


async def test_failed_build_writes_no_root_and_leaves_the_store_consistent(
    store, small_pages, tmp_path
):
    base = await apply(store, None, Put("/zzz", [ref(0)]))
    good = [Put(f"/a/f{i:04d}", [ref(i)]) for i in range(500)]
    with pytest.raises(FailedPrecondition):
        await apply(store, base.hash, *good, Put("/zzz/x", [ref(1)]))
    objects = await tree_objects(store)  # every object decodes and matches its key
    assert not any(o.dir.files == 501 for _, o in objects if o.HasField("dir"))

    spill = tmp_path / "spill"
    spill.mkdir()

    async def failing():
        for op in good:
            yield op
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await build(store, base.hash, failing(), spill_dir=spill, run_bytes=4096)
    assert list(spill.iterdir()) == []
    ok = await apply(store, base.hash, *good)
    assert ok.files == 501


async def test_spilled_build_equals_in_memory_build(store, tmp_path):
    ops: list[Op] = [Put(f"/d{i % 7}/f{(i * 7919) % 5000:05d}", [ref(i)]) for i in range(5000)]
    ops += [Delete(f"/d3/f{i:05d}") for i in range(0, 5000, 3)]
    in_memory = await apply(store, None, *ops)
    spilled = await build(store, None, stream(ops), spill_dir=tmp_path, run_bytes=8192)
    assert spilled.hash == in_memory.hash
