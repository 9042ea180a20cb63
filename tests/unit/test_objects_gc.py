"""Garbage collection's mark, sweep and cutoff against a real local store
(services/pfs/app/gc*.py), and pps's paged ObjectRoots over a SQLite read model."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from libs.api.internal import gc_pb2
from libs.api.pps import pps_pb2 as pps
from libs.bus import Context
from libs.errors import Internal, InvalidArgument
from libs.filedata import FileWriter, read_refs
from libs.objects import LocalObjectStore, chunk_key, put_chunks
from libs.readmodels import SqliteDocumentStore
from libs.trees import (
    DataRef,
    Op,
    Put,
    SetHeader,
    TreeRoot,
    build,
    effective_refs,
    get,
    tree_key,
    walk,
)
from programs.pachctl.commands import gc as gc_cmd
from services.gateway.app.gc import garbage_collect
from services.gateway.principal import LONG_COMMANDS
from services.pfs.app.gc import GcSettings, Source, collect
from services.pfs.app.gc_mark import TreeMarker
from services.pfs.app.gc_marks import MarkSet
from services.pps.adapters.jobs_view import DATUMS, JOBS, PROCESSED, JobsProjection
from services.pps.app.gc_roots import ObjectRoots

CHUNK = 64 << 10
SMALL = 4 << 10


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def stored(store: LocalObjectStore, data: bytes) -> list[DataRef]:
    """``data`` as a file's refs: chunks when big, a pack when small."""
    writer = FileWriter(store, chunk_size=CHUNK, small_file=SMALL)
    refs = await writer.write_file(one(data))
    await writer.flush()
    return refs


async def tree(store: LocalObjectStore, base: str | None, ops: Iterable[Op]) -> TreeRoot:
    async def gen() -> AsyncIterator[Op]:
        for op in ops:
            yield op

    return await build(store, base, gen())


def files_on_disk(store: LocalObjectStore) -> dict[str, bytes]:
    root = store.root
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith("pach-gc-")]


def age_everything(store: LocalObjectStore, seconds: float = 3600) -> None:
    when = time.time() - seconds
    for p in store.root.rglob("*"):
        if p.is_file():
            os.utime(p, (when, when))


async def contents(store: LocalObjectStore, root: str) -> dict[str, bytes]:
    out = {}
    async for path, node in walk(store, root):
        if not node.is_dir:
            refs = await effective_refs(store, root, path)
            out[path] = b"".join([b async for b in read_refs(store, list(refs))])
    return out


def roots(*hashes: str, oldest_open: float | None = None) -> Source:
    async def source(marker: TreeMarker) -> float | None:
        for h in hashes:
            await marker.tree(h)
        return oldest_open

    return source


BIG_LIVE = os.urandom(3 * CHUNK + 17)
SECRET_BIG = b"SECRET-BIG-" + os.urandom(2 * CHUNK)
SECRET_SMALL = b"SECRET-SMALL-" + os.urandom(100)


async def scene(store: LocalObjectStore) -> tuple[TreeRoot, TreeRoot, TreeRoot]:
    """Live trees ``a`` and ``b`` (``b`` shares ``a``'s subtrees) and garbage ``c``."""
    big = await stored(store, BIG_LIVE)
    small = await stored(store, b"small live file\n")
    header = await stored(store, b"HEADER\n")
    many = [Put(f"/wide/f{i:04d}", await stored(store, b"w%d\n" % i)) for i in range(300)]
    a = await tree(
        store,
        None,
        [Put("/data/big", big), Put("/data/small", small), SetHeader("/data", header), *many],
    )
    b = await tree(store, a.hash, [Put("/more/x", await stored(store, b"x\n"))])
    secret_big = await stored(store, SECRET_BIG)
    secret_small = await stored(store, SECRET_SMALL)
    c = await tree(store, None, [Put("/gone/big", secret_big), Put("/gone/small", secret_small)])
    return a, b, c


async def test_sweep_deletes_unreferenced_old_objects_and_keeps_live_ones(
    store: LocalObjectStore,
) -> None:
    a, b, _ = await scene(store)
    before_a, before_b = await contents(store, a.hash), await contents(store, b.hash)
    age_everything(store)
    total = len(files_on_disk(store))

    result = await collect(store, [roots(a.hash, b.hash)])

    left = files_on_disk(store)
    assert not any(b"SECRET" in data for data in left.values())
    assert await contents(store, a.hash) == before_a
    assert await contents(store, b.hash) == before_b
    assert result.deleted.objects > 0
    assert result.kept.objects + result.deleted.objects == total
    assert result.kept.objects == len(left)
    assert result.protected.objects == 0
    assert result.deleted.bytes >= len(SECRET_BIG) + len(SECRET_SMALL)
    assert result.cutoff < time.time() - 0.5  # the default grace of 1 s
    # A second collection finds nothing more.
    again = await collect(store, [roots(a.hash, b.hash)])
    assert again.deleted.objects == 0
    assert again.kept.objects == len(left)


async def test_recent_garbage_is_protected_not_deleted(store: LocalObjectStore) -> None:
    a, _, _ = await scene(store)
    result = await collect(store, [roots(a.hash)], grace_s=60)
    assert result.deleted.objects == 0
    assert result.protected.objects > 0
    assert result.cutoff_by == "collection"
    assert any(b"SECRET" in data for data in files_on_disk(store).values())


async def test_the_oldest_open_commit_moves_the_cutoff_back(store: LocalObjectStore) -> None:
    a, _, _ = await scene(store)
    age_everything(store, 3600)
    opened = time.time() - 7200  # an open commit older than every object
    result = await collect(
        store, [roots(a.hash), roots(a.hash, oldest_open=opened)], names=("job", "open commit")
    )
    assert result.deleted.objects == 0
    assert result.cutoff == pytest.approx(opened - 1.0)
    assert result.cutoff_by == "open commit"  # what pachctl's message names
    assert any(b"SECRET" in data for data in files_on_disk(store).values())


async def test_a_touched_reused_chunk_survives(store: LocalObjectStore) -> None:
    a, _, _ = await scene(store)
    age_everything(store)
    again = await stored(store, SECRET_BIG)  # an old garbage chunk, written again: touched
    await collect(store, [roots(a.hash)])
    assert b"".join([x async for x in read_refs(store, again)]) == SECRET_BIG


async def test_refs_of_open_commit_writes_are_marked(store: LocalObjectStore) -> None:
    pack = await stored(store, b"an uncommitted small put")
    chunks = await stored(store, SECRET_BIG)
    age_everything(store)

    async def source(marker: TreeMarker) -> float | None:
        await marker.refs(r.chunk for r in [*pack, *chunks])
        return None

    result = await collect(store, [source])
    assert result.deleted.objects == 0
    assert (
        result.kept.objects == len(files_on_disk(store)) == len({r.chunk for r in [*pack, *chunks]})
    )


async def test_a_missing_live_tree_object_stops_before_any_delete(
    store: LocalObjectStore,
) -> None:
    a, _, _ = await scene(store)
    age_everything(store)
    before = files_on_disk(store)
    data_dir = await get(store, a.hash, "/data")
    assert data_dir is not None
    os.unlink(store.root / tree_key(data_dir.hash))
    with pytest.raises(Internal, match="nothing was deleted"):
        await collect(store, [roots(a.hash)])
    assert len(files_on_disk(store)) == len(before) - 1


async def test_marks_spilled_to_sqlite_give_the_same_answer(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    a, b, _ = await scene(store)
    age_everything(store)
    spilled = await collect(store, [roots(a.hash, b.hash)], memory_bytes=1, spill_dir=str(tmp_path))
    assert spilled.deleted.objects > 0
    assert not any(b"SECRET" in d for d in files_on_disk(store).values())
    assert await contents(store, b.hash)
    assert not leftovers(tmp_path)  # the temporary database is gone


async def test_a_shared_subtree_is_loaded_once(store: LocalObjectStore) -> None:
    a, b, _ = await scene(store)
    marks = MarkSet()
    marker = TreeMarker(store, marks)
    try:
        await marker.tree(a.hash)
        await marker.wait()
        after_a = marker.loaded
        await marker.tree(b.hash)
        await marker.wait()
        # b differs from a by one new file in a new directory: root, /more, and
        # nothing of a's subtrees again.
        assert marker.loaded - after_a <= 3
    finally:
        await marker.close()
        await marks.close()


async def test_mark_set_add_new_and_spill(tmp_path: Path) -> None:
    marks = MarkSet(memory_bytes=1000, spill_dir=str(tmp_path))
    assert await marks.add_new(["k1", "k2", "k1"]) == ["k1", "k2"]
    assert not marks.spilled
    keys = [f"key{i}" for i in range(50)]
    assert await marks.add_new(keys) == keys
    assert marks.spilled
    assert await marks.add_new(["k1", "new"]) == ["new"]
    assert await marks.marked(["k2", "key7", "nope", "new"]) == {"k2", "key7", "new"}
    assert len(marks) == 53
    await marks.close()
    assert not leftovers(tmp_path)


def test_grace_comes_from_the_environment() -> None:
    assert GcSettings.from_env({}).grace_s == 1.0
    assert GcSettings.from_env({"PACH_GC_GRACE_S": "2.5"}).grace_s == 2.5
    with pytest.raises(InvalidArgument, match="PACH_GC_GRACE_S must be a number"):
        GcSettings.from_env({"PACH_GC_GRACE_S": "soon"})
    with pytest.raises(InvalidArgument, match=">= 0"):
        GcSettings.from_env({"PACH_GC_GRACE_S": "-1"})


async def test_object_roots_pages_through_every_job_datum_and_skip_entry(
    tmp_path: Path,
) -> None:
    docs = SqliteDocumentStore(tmp_path / "pps.sqlite")
    await docs.open(JobsProjection.collections)
    h = [f"{i:064x}" for i in range(40)]
    for i in range(5):
        await docs.put(
            JOBS,
            f"job{i}",
            {
                "key": f"job{i}",
                "pipeline": "p",
                "done": i < 4,
                "created_ns": (i + 1) * 1_000_000_000,
                "output_tree": h[i],
                "inputs": [["in", "r", "master", "c", h[30 + i]]],
            },
        )
    for i in range(10):
        key = f"job0/{i:012d}"
        await docs.put(
            DATUMS,
            key,
            {
                "key": key,
                "job": "job0",
                "pipeline": "p",
                "output_tree": h[5 + i],
                "stats_tree": h[15 + i] if i % 2 else "",
            },
        )
    await docs.put(
        PROCESSED, "p/s/d", {"key": "p/s/d", "pipeline": "p", "job": "job0", "output_tree": h[25]}
    )
    ctx = Context(principal="", request_id="r", subject="qry.pps.ObjectRoots")
    roots_query = ObjectRoots(docs)
    got: list[str] = []
    after, pages = "", 0
    while True:
        page = await roots_query.object_roots(gc_pb2.ObjectRootsRequest(after=after, limit=3), ctx)
        assert len(page.trees) <= 4
        got.extend(page.trees)
        # Only the first page says when the oldest unfinished job (job4) was created.
        assert page.oldest_unfinished_job == (5.0 if pages == 0 else 0.0)
        pages += 1
        if not page.next:
            break
        after = page.next
    # Every output, datum output and stats tree, the skip entry, and the
    # inputs of the one job not done; not the inputs of finished jobs.
    expected = set(h[:5]) | set(h[5:15]) | {h[15 + i] for i in range(10) if i % 2} | {h[25], h[34]}
    assert set(got) == expected
    assert pages >= len(expected) // 3
    with pytest.raises(InvalidArgument, match="cursor"):
        await roots_query.object_roots(gc_pb2.ObjectRootsRequest(after="x"), ctx)
    await docs.close()


async def test_the_gateway_forwards_garbage_collect_to_pfs() -> None:
    asked: list[tuple[str, Message, str]] = []
    answer = gc_pb2.GarbageCollectResult(deleted=gc_pb2.ObjectCount(objects=3, bytes=300))

    async def ask(name: str, request: Message, response_type: Any, kind: str) -> Any:
        asked.append((name, request, kind))
        return answer

    got = await garbage_collect(ask, pps.GarbageCollectRequest(memory_bytes=1 << 20))
    assert got == answer
    assert asked == [("GarbageCollect", gc_pb2.GarbageCollectRequest(memory_bytes=1 << 20), "cmd")]
    with pytest.raises(InvalidArgument, match="memory"):
        await garbage_collect(ask, pps.GarbageCollectRequest(memory_bytes=-1))
    assert "GarbageCollect" in LONG_COMMANDS


def test_pachctl_memory_sizes_and_summary() -> None:
    assert gc_cmd.ram_in_bytes("0") == 0
    assert gc_cmd.ram_in_bytes("10MB") == 10 << 20
    assert gc_cmd.ram_in_bytes("1g") == 1 << 30
    assert gc_cmd.ram_in_bytes("512KiB") == 512 << 10
    assert gc_cmd.ram_in_bytes("1.5k") == 1536
    with pytest.raises(InvalidArgument, match="invalid size"):
        gc_cmd.ram_in_bytes("lots")
    result = gc_pb2.GarbageCollectResult(
        deleted=gc_pb2.ObjectCount(objects=1, bytes=2048),
        kept=gc_pb2.ObjectCount(objects=5, bytes=10),
    )
    assert gc_cmd.summary(result) == (
        "Deleted 1 object (2KiB)\n"
        "Kept 5 objects (10B) still in use\n"
        "Spared 0 objects (0B) written during the collection\n"
    )
    # Kept because an open commit set the cutoff: said so, not "during".
    result.protected.objects, result.cutoff_by = 3, "open commit"
    assert gc_cmd.summary(result).splitlines()[-1] == (
        "Spared 3 objects (0B) not referenced yet but written since the oldest "
        "open commit began (kept: they may belong to it)"
    )


async def test_writes_that_find_their_object_stored_touch_it(store: LocalObjectStore) -> None:
    data = os.urandom(1000)
    [ref] = await put_chunks(store, one(data))
    root = await tree(store, None, [Put("/f", [DataRef(ref.hash, 0, 1000)])])
    age_everything(store)
    hour_ago = time.time() - 3000
    assert all([i.modified < hour_ago async for i in store.list("")])
    await put_chunks(store, one(data))  # the same chunk: touched
    await tree(store, None, [Put("/f", [DataRef(ref.hash, 0, 1000)])])  # the same tree objects
    assert (await store.stat(chunk_key(ref.hash))).modified > hour_ago
    assert (await store.stat(tree_key(root.hash))).modified > hour_ago
