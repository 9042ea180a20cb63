"""Enumerating a job's datums from its input trees (services.pps.app.datum_sets),
over a real local object store."""

from __future__ import annotations

import random
import tempfile

import pytest

from libs.api.events.pps_pb2 import JobInputCommit
from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument
from libs.trees import Delete, Op, Put, get, glob
from services.pps.app import datum_sets
from services.pps.app.datum_sets import count_datums, enumerate_datums, enumerate_new_datums
from services.pps.domain.datums import datum_id
from tests.unit.trees_support import CountingStore, apply, ref

FILES = [
    "/a.txt",
    "/dir/x",
    "/dir/y",
    "/dir/sub/z",
    "/foo1",
    "/foo2/inner",
    "/other/q",
]


@pytest.fixture
def store(tmp_path):
    return CountingStore(tmp_path / "objects")


async def tree(store, files=FILES, base=None, seed=0):
    root = await apply(store, base, *(Put(p, [ref(seed + i)]) for i, p in enumerate(files)))
    return root.hash


def atom(name="in", glob="/*", repo=None, **kw):
    return pps_pb2.Input(atom=pps_pb2.AtomInput(name=name, repo=repo or name, glob=glob, **kw))


def commit(name, root, repo=None, branch="master"):
    return JobInputCommit(
        name=name, repo=repo or name, branch=branch, commit=f"{name}-commit", tree=root
    )


async def datums(store, input, commits, salt="salt"):
    return [t async for t in enumerate_datums(store, input, commits, salt)]


def paths_of(tasks):
    return [tuple(i.path for i in t.inputs) for t in tasks]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/", ["/"]),
        ("/*", ["/a.txt", "/dir", "/foo1", "/foo2", "/other"]),
        ("*", ["/a.txt", "/dir", "/foo1", "/foo2", "/other"]),
        ("/*/*", ["/dir/sub", "/dir/x", "/dir/y", "/foo2/inner", "/other/q"]),
        ("/dir/*", ["/dir/sub", "/dir/x", "/dir/y"]),
        ("/foo*", ["/foo1", "/foo2"]),
        ("/nothing/*", []),
    ],
)
async def test_atom_gives_one_datum_per_match_in_path_order(store, pattern, expected):
    root = await tree(store)
    tasks = await datums(store, atom(glob=pattern), {"in": commit("in", root)})
    assert paths_of(tasks) == [(p,) for p in expected]
    assert [t.index for t in tasks] == list(range(len(expected)))
    assert await count_datums(store, atom(glob=pattern), {"in": commit("in", root)}) == len(
        expected
    )


async def test_datum_inputs_are_filled_from_the_spec_the_commit_and_the_node(store):
    root = await tree(store)
    spec = atom(name="images", repo="imgrepo", glob="/*", lazy=True, empty_files=True)
    jc = commit("images", root, repo="imgrepo", branch="dev")
    tasks = await datums(store, spec, {"images": jc}, salt="s1")
    by_path = {t.inputs[0].path: t for t in tasks}
    d = by_path["/dir"].inputs[0]
    node = await get(store, root, "/dir")
    assert node is not None
    assert (d.name, d.repo, d.branch, d.commit, d.tree) == (
        "images",
        "imgrepo",
        "dev",
        "images-commit",
        root,
    )
    assert (d.path, d.hash, d.is_dir, d.lazy, d.empty_files) == (
        "/dir",
        node.hash,
        True,
        True,
        True,
    )
    f = by_path["/a.txt"].inputs[0]
    assert not f.is_dir
    for t in tasks:
        i = t.inputs[0]
        assert t.id == datum_id([(i.name, i.path, i.hash)], "s1")


async def test_glob_root_is_one_datum_for_the_whole_tree(store):
    root = await tree(store)
    (task,) = await datums(store, atom(glob="/"), {"in": commit("in", root)})
    (d,) = task.inputs
    assert (d.path, d.hash, d.is_dir) == ("/", root, True)


async def test_ids_are_stable_salted_and_follow_content(store):
    root = await tree(store)
    spec, commits = atom(glob="/*"), {"in": commit("in", root)}
    first = [t.id for t in await datums(store, spec, commits, "s")]
    assert first == [t.id for t in await datums(store, spec, commits, "s")]
    assert len(set(first)) == len(first)
    other_salt = [t.id for t in await datums(store, spec, commits, "t")]
    assert not set(first) & set(other_salt)
    # Changing /dir/x changes /dir's datum only.
    changed = await apply(store, root, Put("/dir/x", [ref(999)]))
    second = [t.id for t in await datums(store, spec, {"in": commit("in", changed.hash)}, "s")]
    assert [a == b for a, b in zip(first, second, strict=True)] == [True, False, True, True, True]


async def test_an_input_without_a_commit_has_no_datums(store):
    root = await tree(store)
    commits = {"in": commit("in", root), "none": commit("none", "")}
    assert await datums(store, atom(name="none", glob="/"), commits) == []
    assert await count_datums(store, atom(name="none", glob="/"), commits) == 0
    crossed = pps_pb2.Input(cross=[atom(glob="/*"), atom(name="none", glob="/*")])
    assert await datums(store, crossed, commits) == []
    assert await count_datums(store, crossed, commits) == 0
    unioned = pps_pb2.Input(union=[atom(name="none", glob="/*"), atom(glob="/foo*")])
    assert paths_of(await datums(store, unioned, commits)) == [("/foo1",), ("/foo2",)]


async def test_cross_is_the_product_in_order_first_input_outermost(store):
    left = await tree(store, ["/l1", "/l2", "/l3"])
    right = await tree(store, ["/r1", "/r2"], seed=100)
    spec = pps_pb2.Input(cross=[atom("left", "/*"), atom("right", "/*")])
    commits = {"left": commit("left", left), "right": commit("right", right)}
    tasks = await datums(store, spec, commits, "s")
    assert paths_of(tasks) == [(a, b) for a in ("/l1", "/l2", "/l3") for b in ("/r1", "/r2")]
    assert [t.index for t in tasks] == list(range(6))
    for t in tasks:
        assert [i.name for i in t.inputs] == ["left", "right"]
        assert t.id == datum_id([(i.name, i.path, i.hash) for i in t.inputs], "s")
    assert await count_datums(store, spec, commits) == 6


async def test_cross_inputs_past_the_memory_limit_spill_and_keep_the_order(
    store, tmp_path, monkeypatch
):
    a = await tree(store, ["/a1", "/a2"])
    b = await tree(store, [f"/b{i}" for i in range(5)], seed=100)
    c = await tree(store, [f"/c{i}" for i in range(4)], seed=200)
    spec = pps_pb2.Input(cross=[atom("a", "/*"), atom("b", "/*"), atom("c", "/*")])
    commits = {"a": commit("a", a), "b": commit("b", b), "c": commit("c", c)}
    in_memory = await datums(store, spec, commits)
    spill = tmp_path / "spill"
    spill.mkdir()
    monkeypatch.setattr(datum_sets, "HOLD_IN_MEMORY", 2)
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    spilled = await datums(store, spec, commits)
    assert spilled == in_memory
    assert len(spilled) == 2 * 5 * 4
    assert paths_of(spilled)[:5] == [("/a1", "/b0", f"/c{i}") for i in range(4)] + [
        ("/a1", "/b1", "/c0")
    ]
    assert list(spill.iterdir()) == []  # the spill files are gone


async def test_union_is_each_input_in_turn(store):
    a = await tree(store, ["/a1", "/a2"])
    b = await tree(store, ["/b1"], seed=50)
    spec = pps_pb2.Input(union=[atom("a", "/*"), atom("b", "/*")])
    commits = {"a": commit("a", a), "b": commit("b", b)}
    tasks = await datums(store, spec, commits)
    assert paths_of(tasks) == [("/a1",), ("/a2",), ("/b1",)]
    assert [t.inputs[0].name for t in tasks] == ["a", "a", "b"]
    assert [t.index for t in tasks] == [0, 1, 2]
    assert await count_datums(store, spec, commits) == 3


async def test_union_members_sharing_a_name_read_their_own_commits(store):
    a = await tree(store, ["/x", "/a1"])
    b = await tree(store, ["/x", "/b1"], seed=50)
    spec = pps_pb2.Input(union=[atom("in", "/*", repo="ra"), atom("in", "/*", repo="rb")])
    inputs = [commit("in", a, repo="ra"), commit("in", b, repo="rb")]
    inputs[1].commit = "rb-commit"
    commits = datum_sets.commit_map(inputs)
    assert sorted(commits) == ["in", "in#1"]
    tasks = await datums(store, spec, commits)
    assert paths_of(tasks) == [("/a1",), ("/x",), ("/b1",), ("/x",)]
    assert [(i.name, i.repo, i.commit, i.tree) for t in tasks for i in t.inputs] == [
        ("in", "ra", "in-commit", a),
        ("in", "ra", "in-commit", a),
        ("in", "rb", "rb-commit", b),
        ("in", "rb", "rb-commit", b),
    ]
    # Same name and path, different content: different datums.
    assert len({t.id for t in tasks}) == 4
    assert await count_datums(store, spec, commits) == 4


async def test_union_members_sharing_a_name_with_the_same_path_and_content_are_two_datums(
    store,
):
    # Two repos mounted as /pfs/in, both holding /x with the same content: two
    # datums, so two ids (one id per datum of a job: the skip index and the
    # outputs reused are keyed by it). The first member keeps 1.7's id, the
    # repeat's key `in#1` stands for its name.
    a = await tree(store, ["/x"])
    b = await tree(store, ["/x"])
    assert a == b
    spec = pps_pb2.Input(union=[atom("in", "/*", repo="ra"), atom("in", "/*", repo="rb")])
    commits = datum_sets.commit_map([commit("in", a, repo="ra"), commit("in", b, repo="rb")])
    tasks = await datums(store, spec, commits)
    node = await get(store, a, "/x")
    assert node is not None
    assert [t.id for t in tasks] == [
        datum_id((("in", "/x", node.hash),), "salt"),
        datum_id((("in#1", "/x", node.hash),), "salt"),
    ]
    assert [(i.name, i.key, i.repo) for t in tasks for i in t.inputs] == [
        ("in", "", "ra"),
        ("in", "in#1", "rb"),
    ]
    # Crossed with another input, still one id per datum.
    crossed = pps_pb2.Input(cross=[atom("c", "/*"), spec])
    commits["c"] = commit("c", await tree(store, ["/c1", "/c2"], seed=70))
    ids = [t.id for t in await datums(store, crossed, commits)]
    assert len(ids) == len(set(ids)) == 4


async def test_ids_without_a_repeated_name_are_unchanged(store):
    a = await tree(store, ["/x"])
    spec = pps_pb2.Input(union=[atom("in", "/*", repo="ra"), atom("other", "/*", repo="rb")])
    commits = datum_sets.commit_map([commit("in", a, repo="ra"), commit("other", a, repo="rb")])
    node = await get(store, a, "/x")
    assert node is not None
    tasks = await datums(store, spec, commits)
    assert [t.id for t in tasks] == [
        datum_id((("in", "/x", node.hash),), "salt"),
        datum_id((("other", "/x", node.hash),), "salt"),
    ]
    assert not any(i.key for t in tasks for i in t.inputs)


async def test_nested_cross_of_a_union(store):
    a = await tree(store, ["/a1", "/a2"])
    b = await tree(store, ["/b1"], seed=50)
    c = await tree(store, ["/c1", "/c2"], seed=80)
    spec = pps_pb2.Input(
        cross=[
            pps_pb2.Input(union=[atom("a", "/*"), atom("b", "/*")]),
            atom("c", "/*"),
            pps_pb2.Input(cross=[atom("b", "/*"), atom("a", "/")]),
        ]
    )
    commits = {"a": commit("a", a), "b": commit("b", b), "c": commit("c", c)}
    tasks = await datums(store, spec, commits)
    firsts = ["/a1", "/a2", "/b1"]
    assert paths_of(tasks) == [(f, x, "/b1", "/") for f in firsts for x in ("/c1", "/c2")]
    assert [i.name for i in tasks[-1].inputs] == ["b", "c", "b", "a"]
    assert await count_datums(store, spec, commits) == 6


async def test_cron_is_one_datum_over_its_repo(store):
    root = await tree(store, ["/time"])
    spec = pps_pb2.Input(cron=pps_pb2.CronInput(name="tick", repo="pipe_tick", spec="@every 1m"))
    tasks = await datums(store, spec, {"tick": commit("tick", root, repo="pipe_tick")})
    (task,) = tasks
    (d,) = task.inputs
    assert (d.name, d.repo, d.branch, d.path, d.hash, d.is_dir) == (
        "tick",
        "pipe_tick",
        "master",
        "/",
        root,
        True,
    )


async def test_bad_inputs_are_invalid_arguments(store):
    root = await tree(store)
    with pytest.raises(InvalidArgument, match="'missing'"):
        await datums(store, atom(name="missing"), {"in": commit("in", root)})
    with pytest.raises(InvalidArgument, match="none of atom"):
        await datums(store, pps_pb2.Input(), {})
    with pytest.raises(InvalidArgument, match="no commit for input 'g'"):
        await datums(store, pps_pb2.Input(git=pps_pb2.GitInput(name="g", url="x")), {})
    with pytest.raises(InvalidArgument, match="glob pattern"):
        await datums(store, atom(glob="/[ab"), {"in": commit("in", root)})


async def test_many_files_stream_in_order(store):
    names = [f"/d{i % 7}/f{i:04d}" for i in range(1500)]
    root = await tree(store, names)
    tasks = await datums(store, atom(glob="/*/*"), {"in": commit("in", root)})
    got = [t.inputs[0].path for t in tasks]
    assert got == sorted(names)
    assert [t.index for t in tasks] == list(range(1500))


# --- incremental ---------------------------------------------------------------


async def new_datums(store, spec, name, old, new, salt="s"):
    prev = {name: commit(name, old)} if old is not None else {}
    got = enumerate_new_datums(store, spec, {name: commit(name, new)}, prev, salt)
    return [t async for t in got]


async def brute_force(store, pattern, old, new):
    before = {p: n.hash async for p, n in glob(store, old, pattern)}
    return [p async for p, n in glob(store, new, pattern) if before.get(p) != n.hash]


@pytest.mark.parametrize("pattern", ["/", "/*", "/*/*", "/dir/*", "/foo*", "/**", "/*/**"])
async def test_new_datums_are_the_new_or_changed_matches(store, pattern):
    old = await tree(store)
    new = (
        await apply(
            store,
            old,
            Put("/dir/sub/z", [ref(500)]),  # changes /dir and /dir/sub
            Put("/b.txt", [ref(501)]),  # new
            Delete("/other"),  # gone: no datum
            Put("/foo3/deep/er", [ref(502)]),  # new directory two levels deep
        )
    ).hash
    tasks = await new_datums(store, atom(glob=pattern), "in", old, new)
    expected = await brute_force(store, pattern, old, new)
    assert [t.inputs[0].path for t in tasks] == expected
    assert [t.index for t in tasks] == list(range(len(expected)))
    for t in tasks:
        node = await get(store, new, t.inputs[0].path)
        assert node is not None and t.inputs[0].hash == node.hash
        assert t.id == datum_id([("in", t.inputs[0].path, node.hash)], "s")


async def test_new_datums_on_random_changes_match_a_full_comparison(store):
    rng = random.Random(7)
    pool = [f"/{a}/{b}/{c}" for a in "pqr" for b in "xyz" for c in "123"] + ["/top1", "/top2"]
    old = await tree(store, rng.sample(pool, 15))
    for round_ in range(8):
        ops: list[Op] = []
        for p in rng.sample(pool, 6):
            if rng.random() < 0.3:
                ops.append(Delete(p))
            elif not p.startswith("/top") or rng.random() < 0.5:
                ops.append(Put(p, [ref(1000 * round_ + len(ops))]))
        new = (await apply(store, old, *ops)).hash
        for pattern in ("/*", "/*/*", "/*/*/*", "/p/*", "/**"):
            tasks = await new_datums(store, atom(glob=pattern), "in", old, new)
            got = [t.inputs[0].path for t in tasks]
            assert got == await brute_force(store, pattern, old, new), (round_, pattern)
        old = new


async def test_new_datums_without_a_previous_commit_are_all_datums(store):
    root = await tree(store)
    all_paths = [("/a.txt",), ("/dir",), ("/foo1",), ("/foo2",), ("/other",)]
    assert paths_of(await new_datums(store, atom(glob="/*"), "in", None, root)) == all_paths
    assert paths_of(await new_datums(store, atom(glob="/*"), "in", "", root)) == all_paths
    assert await new_datums(store, atom(glob="/*"), "in", root, "") == []
    assert await new_datums(store, atom(glob="/*"), "in", root, root) == []


async def test_new_datums_need_a_single_atom_input(store):
    spec = pps_pb2.Input(union=[atom("a"), atom("b")])
    with pytest.raises(InvalidArgument, match="single atom"):
        await new_datums(store, spec, "a", None, "")


@pytest.mark.parametrize("pattern", ["/", "/*", "/*/*", "/**"])
async def test_changed_datums_of_a_plain_pipeline_are_its_full_datums(store, pattern):
    """``incremental=False`` (a job planned from its input's diff): each
    changed datum is the task ``enumerate_datums`` gives for that match
    (same id and inputs; the worker lays out the whole datum), only the
    index counts the changed ones."""
    old = await tree(store)
    new = (await apply(store, old, Put("/dir/y", [ref(600)]), Put("/c", [ref(601)]))).hash
    spec = atom(glob=pattern)
    now = {"in": commit("in", new)}
    got = enumerate_new_datums(store, spec, now, {"in": commit("in", old)}, "s", incremental=False)
    changed = [t async for t in got]
    assert changed and all(not i.previous_tree for t in changed for i in t.inputs)
    full = {t.id: t for t in await datums(store, spec, now, salt="s")}
    for n, task in enumerate(changed):
        assert task.index == n
        want = full[task.id]
        want.index = n
        assert task == want
