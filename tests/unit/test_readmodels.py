"""The conformance suite for read-model document stores: every test runs
against SQLite (a file in tmp_path) and MongoDB (``MONGODB_URI`` when set,
mongomock-motor otherwise)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mongomock.collection
import pytest
from mongomock_motor import AsyncMongoMockClient
from motor.motor_asyncio import AsyncIOMotorClient

from libs.config import ReadModelConfig
from libs.errors import FailedPrecondition, InvalidArgument
from libs.readmodels import (
    Collection,
    DocumentStore,
    MongoDocumentStore,
    SqliteDocumentStore,
    open_document_store,
)
from libs.readmodels.schema import sort_key

JOBS = Collection("jobs", ("pipeline", "state", "started", "spec.name"))
PLAIN = Collection("plain")
COLLECTIONS = [JOBS, PLAIN]


@dataclass
class Backend:
    name: str
    make: Callable[[int], DocumentStore]  # page size -> a new handle on the same storage
    # how many documents the streaming test writes: mongomock scans the whole
    # collection on every upsert (quadratic), so it gets fewer than a real server
    stream_docs: int = 20_000


def _mongomock_accepts_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """pymongo >= 4.11 passes ``sort=`` to a bulk builder's ``add_replace``;
    mongomock 4.3's builder predates it. Drop it when unset (we never sort a replace)."""
    original = mongomock.collection.BulkOperationBuilder.add_replace

    def add_replace(self: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
        assert sort is None
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.BulkOperationBuilder, "add_replace", add_replace)


@pytest.fixture(params=["sqlite", "mongo"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", lambda page: SqliteDocumentStore(tmp_path / "rm.sqlite", page))
        return
    uri = os.environ.get("MONGODB_URI")
    if not uri:
        _mongomock_accepts_sort(monkeypatch)
    client: Any = AsyncIOMotorClient(uri) if uri else AsyncMongoMockClient()
    db = f"test_readmodels_{uuid.uuid4().hex[:12]}"
    try:
        yield Backend(
            "mongo", lambda page: MongoDocumentStore(client, db, page), 20_000 if uri else 2_000
        )
    finally:
        await client.drop_database(db)
        if uri:
            client.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[DocumentStore]:
    s = backend.make(7)  # a small page so every multi-page path is exercised
    await s.open(COLLECTIONS)
    try:
        yield s
    finally:
        await s.close()


async def collect(it: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d async for d in it]


async def put_jobs(store: DocumentStore, n: int) -> None:
    async with store.batch() as b:
        for i in range(n):
            b.put(
                "jobs",
                f"j{i:03d}",
                {"id": i, "pipeline": f"p{i % 3}", "state": "done" if i % 2 else "running",
                 "started": i * 10},
            )  # fmt: skip


# --- documents --------------------------------------------------------------


async def test_put_get_delete(store: DocumentStore) -> None:
    assert await store.get("jobs", "a") is None
    await store.put("jobs", "a", {"pipeline": "p", "n": [1, 2], "nested": {"x": None}})
    assert await store.get("jobs", "a") == {"pipeline": "p", "n": [1, 2], "nested": {"x": None}}
    await store.delete("jobs", "a")
    assert await store.get("jobs", "a") is None
    await store.delete("jobs", "a")  # deleting what is gone is fine
    assert await store.count("jobs") == 0


async def test_overwrite_replaces_whole_document(store: DocumentStore) -> None:
    await store.put("jobs", "a", {"pipeline": "p", "old": 1})
    await store.put("jobs", "a", {"pipeline": "q"})
    assert await store.get("jobs", "a") == {"pipeline": "q"}
    assert await store.count("jobs") == 1
    assert await collect(store.query("jobs", where={"pipeline": "p"})) == []


async def test_documents_are_stored_as_json_copies(store: DocumentStore) -> None:
    doc: dict[str, Any] = {"pipeline": "p", "tags": ("a", "b"), "_id": "mine", "u": "ünï"}
    await store.put("plain", "k", doc)
    doc["pipeline"] = "changed"
    assert await store.get("plain", "k") == {
        "pipeline": "p",
        "tags": ["a", "b"],
        "_id": "mine",
        "u": "ünï",
    }


async def test_keys_are_any_string(store: DocumentStore) -> None:
    for key in ["", "a/b c", "ключ", "x" * 300]:
        await store.put("plain", key, {"k": key})
        assert await store.get("plain", key) == {"k": key}


# --- queries -----------------------------------------------------------------


async def test_query_equality_on_one_and_two_fields(store: DocumentStore) -> None:
    await put_jobs(store, 30)
    p1 = await collect(store.query("jobs", where={"pipeline": "p1"}))
    assert [d["id"] for d in p1] == [i for i in range(30) if i % 3 == 1]
    both = await collect(store.query("jobs", where={"pipeline": "p1", "state": "done"}))
    assert [d["id"] for d in both] == [i for i in range(30) if i % 3 == 1 and i % 2]
    assert await store.count("jobs", {"pipeline": "p1", "state": "done"}) == len(both)
    assert await store.count("jobs", {"pipeline": "nope"}) == 0
    assert await store.count("jobs") == 30


async def test_query_defaults_to_key_order(store: DocumentStore) -> None:
    for k in ["m", "b", "z", "a", "B"]:
        await store.put("plain", k, {"k": k})
    assert [d["k"] for d in await collect(store.query("plain"))] == ["B", "a", "b", "m", "z"]
    desc = await collect(store.query("plain", descending=True))
    assert [d["k"] for d in desc] == ["z", "m", "b", "a", "B"]


async def test_order_by_asc_desc_ties_by_key(store: DocumentStore) -> None:
    await put_jobs(store, 20)
    asc = await collect(store.query("jobs", order_by="state"))
    expected = sorted(range(20), key=lambda i: ("done" if i % 2 else "running", f"j{i:03d}"))
    assert [d["id"] for d in asc] == expected
    desc = await collect(store.query("jobs", order_by="state", descending=True))
    assert [d["id"] for d in desc] == expected[::-1]
    by_started = await collect(
        store.query("jobs", where={"pipeline": "p0"}, order_by="started", descending=True)
    )
    assert [d["id"] for d in by_started] == [18, 15, 12, 9, 6, 3, 0]


async def test_ranges_on_field_and_key(store: DocumentStore) -> None:
    await put_jobs(store, 20)
    mid = await collect(store.query("jobs", order_by="started", start=50, end=100))
    assert [d["id"] for d in mid] == [5, 6, 7, 8, 9]
    tail = await collect(store.query("jobs", order_by="started", start=175))
    assert [d["id"] for d in tail] == [18, 19]
    head_desc = await collect(store.query("jobs", order_by="started", end=30, descending=True))
    assert [d["id"] for d in head_desc] == [2, 1, 0]
    keys = await collect(store.query("jobs", start="j005", end="j008"))
    assert [d["id"] for d in keys] == [5, 6, 7]
    # ranges spanning several pages (page size 7), both directions
    wide = await collect(store.query("jobs", order_by="started", start=20, end=170))
    assert [d["id"] for d in wide] == list(range(2, 17))
    wide_desc = await collect(
        store.query("jobs", order_by="started", start=20, end=170, descending=True)
    )
    assert [d["id"] for d in wide_desc] == list(range(16, 1, -1))
    keys_desc = await collect(store.query("jobs", start="j001", end="j019", descending=True))
    assert [d["id"] for d in keys_desc] == list(range(18, 0, -1))
    empty = await collect(store.query("jobs", order_by="started", start=100, end=50))
    assert empty == []
    assert await collect(store.query("jobs", order_by="started", start="z", end=0)) == []


async def test_limit(store: DocumentStore) -> None:
    await put_jobs(store, 30)
    assert [d["id"] for d in await collect(store.query("jobs", limit=3))] == [0, 1, 2]
    # more than one page (page size 7)
    many = await collect(store.query("jobs", order_by="started", descending=True, limit=16))
    assert [d["id"] for d in many] == list(range(29, 13, -1))
    assert await collect(store.query("jobs", limit=0)) == []
    assert len(await collect(store.query("jobs", limit=100))) == 30


async def test_query_on_nested_field(store: DocumentStore) -> None:
    await store.put("jobs", "a", {"spec": {"name": "edges"}})
    await store.put("jobs", "b", {"spec": {"name": "montage"}})
    await store.put("jobs", "c", {"spec": {"other": "field"}})
    await store.put("jobs", "d", {"pipeline": "no spec"})
    found = await collect(store.query("jobs", where={"spec.name": "montage"}))
    assert found == [{"spec": {"name": "montage"}}]
    nulls = await collect(store.query("jobs", where={"spec.name": None}))
    assert nulls == [{"spec": {"other": "field"}}, {"pipeline": "no spec"}]


MIXED: dict[str, Any] = {
    "k01": None,
    "k02": 3,
    "k03": 2.5,
    "k04": "b",
    "k05": "B",
    "k06": True,
    "k07": False,
    "k08": -1,
    "k09": 1,
    "k10": 1.0,
    "k11": "",
    "k12": "é",
}


async def put_mixed(store: DocumentStore) -> None:
    async with store.batch() as b:
        for k, v in MIXED.items():
            b.put("jobs", k, {"state": v})
        b.put("jobs", "k00", {"other": 1})  # missing counts as null


async def test_mixed_types_have_one_defined_order(store: DocumentStore) -> None:
    await put_mixed(store)
    values = dict(MIXED, k00=None)
    expected = sorted(values, key=lambda k: (sort_key(values[k]), k))
    got = await collect(store.query("jobs", order_by="state"))
    assert [d.get("state") for d in got] == [values[k] for k in expected]
    # null < numbers < strings < booleans, equal values by key
    assert [values[k] for k in expected] == [
        None, None, -1, 1, 1.0, 2.5, 3, "", "B", "b", "é", False, True,
    ]  # fmt: skip
    got_desc = await collect(store.query("jobs", order_by="state", descending=True))
    assert [d.get("state") for d in got_desc] == [values[k] for k in reversed(expected)]


async def test_mixed_types_equality_and_ranges(store: DocumentStore) -> None:
    await put_mixed(store)
    ones = await collect(store.query("jobs", where={"state": 1}))
    assert [d["state"] for d in ones] == [1, 1.0]  # 1 == 1.0, but not True
    trues = await collect(store.query("jobs", where={"state": True}))
    assert [d["state"] for d in trues] == [True]
    assert await store.count("jobs", {"state": None}) == 2
    across = await collect(store.query("jobs", order_by="state", start=2, end="b"))
    assert [d["state"] for d in across] == [2.5, 3, "", "B"]
    to_bools = await collect(store.query("jobs", order_by="state", start="c", end=True))
    assert [d["state"] for d in to_bools] == ["é", False]
    below_numbers = await collect(store.query("jobs", order_by="state", end=0))
    assert [d.get("state") for d in below_numbers] == [None, None, -1]


async def test_streams_twenty_thousand_documents(backend: Backend) -> None:
    n = backend.stream_docs
    store = backend.make(250)
    await store.open(COLLECTIONS)
    for first in range(0, n, 500):
        async with store.batch() as b:
            for i in range(first, first + 500):
                b.put("jobs", f"{i:05d}", {"started": n - i, "pipeline": f"p{i % 4}"})
    assert await store.count("jobs") == n
    seen = 0
    async for d in store.query("jobs"):
        assert d["started"] == n - seen
        seen += 1
    assert seen == n
    p3 = await collect(store.query("jobs", where={"pipeline": "p3"}, order_by="started"))
    assert len(p3) == n // 4
    assert [d["started"] for d in p3[:3]] == [1, 5, 9]
    await store.close()


# --- batches and checkpoints ---------------------------------------------------


async def test_checkpoint_defaults_to_zero(store: DocumentStore) -> None:
    assert await store.checkpoint("pfs-projection") == 0


async def test_batch_commits_documents_and_checkpoint_together(store: DocumentStore) -> None:
    await store.put("jobs", "gone", {"pipeline": "x"})
    async with store.batch() as b:
        b.put("jobs", "a", {"pipeline": "p"})
        b.put("plain", "b", {"v": 1})
        b.put("plain", "b", {"v": 2})  # later writes win
        b.delete("jobs", "gone")
        b.put("jobs", "tmp", {})
        b.delete("jobs", "tmp")
        b.set_checkpoint("proj", 41)
        b.set_checkpoint("proj", 42)
        b.set_checkpoint("other", 7)
    assert await store.get("jobs", "a") == {"pipeline": "p"}
    assert await store.get("plain", "b") == {"v": 2}
    assert await store.get("jobs", "gone") is None
    assert await store.get("jobs", "tmp") is None
    assert await store.checkpoint("proj") == 42
    assert await store.checkpoint("other") == 7


async def test_batch_keeps_the_last_write_of_each_document(store: DocumentStore) -> None:
    await store.put("jobs", "back", {"pipeline": "old", "state": "x"})
    async with store.batch() as b:
        b.delete("jobs", "back")
        b.put("jobs", "back", {"pipeline": "new", "state": "y"})  # deleted, then written again
        for i in range(100):  # a document rewritten by every event of a group
            b.put("jobs", "size", {"pipeline": "p", "state": f"s{i}"})
            b.put("plain", f"k{i % 3}", {"v": i})
        b.put("jobs", "gone", {"pipeline": "p"})
        b.delete("jobs", "gone")
    assert await store.get("jobs", "back") == {"pipeline": "new", "state": "y"}
    assert await store.get("jobs", "size") == {"pipeline": "p", "state": "s99"}
    assert [await store.get("plain", f"k{i}") for i in range(3)] == [
        {"v": 99},
        {"v": 97},
        {"v": 98},
    ]
    assert await store.get("jobs", "gone") is None
    # the indexed fields follow the last write too
    found = [d async for d in store.query("jobs", where={"pipeline": "p"})]
    assert [(d["state"]) for d in found] == ["s99"]
    assert [d async for d in store.query("jobs", where={"pipeline": "old"})] == []


def test_coalesce_hands_the_backend_one_write_per_document() -> None:
    from libs.readmodels.batch import Delete, Put, coalesce

    ops: list[Put | Delete] = [
        Put("a", "1", "{}", {}),
        Delete("b", "1"),
        Put("a", "1", '{"v":2}', {"v": 2}),
        Put("b", "2", "{}", {}),
        Delete("a", "2"),
        Put("b", "1", "{}", {}),
    ]
    assert coalesce(ops) == [
        Put("a", "1", '{"v":2}', {"v": 2}),
        Delete("a", "2"),
        Put("b", "1", "{}", {}),
        Put("b", "2", "{}", {}),
    ]


async def test_batch_that_raises_leaves_neither_data_nor_checkpoint(store: DocumentStore) -> None:
    async with store.batch() as b:
        b.put("jobs", "kept", {"pipeline": "p"})
        b.set_checkpoint("proj", 5)
    with pytest.raises(RuntimeError, match="boom"):
        async with store.batch() as b:
            b.put("jobs", "a", {"pipeline": "p"})
            b.delete("jobs", "kept")
            b.set_checkpoint("proj", 6)
            raise RuntimeError("boom")
    assert await store.get("jobs", "a") is None
    assert await store.get("jobs", "kept") == {"pipeline": "p"}
    assert await store.checkpoint("proj") == 5


async def test_bad_write_in_batch_discards_the_whole_batch(store: DocumentStore) -> None:
    with pytest.raises(InvalidArgument, match="state"):
        async with store.batch() as b:
            b.put("jobs", "a", {"pipeline": "p"})
            b.set_checkpoint("proj", 9)
            b.put("jobs", "b", {"state": ["a", "list"]})
    assert await store.count("jobs") == 0
    assert await store.checkpoint("proj") == 0


async def test_batch_must_be_entered(store: DocumentStore) -> None:
    b = store.batch()
    with pytest.raises(FailedPrecondition):
        b.put("jobs", "a", {})
    async with b:
        pass
    with pytest.raises(FailedPrecondition):
        b.put("jobs", "a", {})
    with pytest.raises(FailedPrecondition):
        async with b:
            pass
    assert await store.count("jobs") == 0


async def test_bad_checkpoints(store: DocumentStore) -> None:
    with pytest.raises(InvalidArgument, match="sequence"):
        async with store.batch() as b:
            b.set_checkpoint("proj", -1)
    with pytest.raises(InvalidArgument, match="sequence"):
        async with store.batch() as b:
            b.set_checkpoint("proj", "7")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="checkpoint name"):
        await store.checkpoint("")
    assert await store.checkpoint("proj") == 0


async def test_drop_removes_documents_and_checkpoints(store: DocumentStore) -> None:
    await put_jobs(store, 10)
    async with store.batch() as b:
        b.put("plain", "x", {})
        b.set_checkpoint("proj", 10)
    await store.drop()
    assert await store.count("jobs") == 0
    assert await store.count("plain") == 0
    assert await store.checkpoint("proj") == 0
    await put_jobs(store, 3)  # usable right away, indexes included
    assert await store.count("jobs", {"pipeline": "p1"}) == 1


async def test_drop_of_named_collections_leaves_the_rest(store: DocumentStore) -> None:
    await put_jobs(store, 10)
    async with store.batch() as b:
        b.put("plain", "x", {"v": 1})
        b.set_checkpoint("jobs-projection", 10)
        b.set_checkpoint("plain-projection", 1)
    await store.drop(["jobs"])
    assert await store.count("jobs") == 0
    assert await store.get("plain", "x") == {"v": 1}
    assert await store.checkpoint("jobs-projection") == 10  # checkpoints stay
    await store.reset_checkpoint("jobs-projection")
    assert await store.checkpoint("jobs-projection") == 0
    assert await store.checkpoint("plain-projection") == 1
    await put_jobs(store, 3)  # usable right away, indexes included
    assert await store.count("jobs", {"pipeline": "p1"}) == 1
    with pytest.raises(InvalidArgument, match="nope"):
        await store.drop(["nope"])
    assert await store.get("plain", "x") == {"v": 1}


async def test_reopen_keeps_data_and_checkpoint(backend: Backend) -> None:
    first = backend.make(7)
    await first.open(COLLECTIONS)
    await put_jobs(first, 12)
    async with first.batch() as b:
        b.set_checkpoint("proj", 12)
    await first.close()

    again = backend.make(7)
    with pytest.raises(InvalidArgument, match="unknown collection"):
        await again.get("jobs", "j001")  # collections are known once opened
    await again.open(COLLECTIONS)
    await again.open(COLLECTIONS)  # idempotent
    assert await again.checkpoint("proj") == 12
    assert await again.count("jobs") == 12
    assert (await again.get("jobs", "j004") or {})["started"] == 40
    assert await again.count("jobs", {"pipeline": "p2"}) == 4
    await again.close()


async def test_new_index_on_existing_collection(backend: Backend) -> None:
    first = backend.make(7)
    await first.open([Collection("repos")])
    for i in range(9):
        await first.put("repos", f"r{i}", {"owner": f"u{i % 2}", "size": 9 - i})
    with pytest.raises(InvalidArgument, match="not indexed"):
        await first.count("repos", {"owner": "u1"})
    await first.open([Collection("repos", ("owner", "size"))])
    assert await first.count("repos", {"owner": "u1"}) == 4
    by_size = await collect(first.query("repos", where={"owner": "u0"}, order_by="size"))
    assert [d["size"] for d in by_size] == [1, 3, 5, 7, 9]
    await first.close()


# --- bad input -------------------------------------------------------------------


async def test_unknown_collection_is_named(store: DocumentStore) -> None:
    with pytest.raises(InvalidArgument, match="'nope'"):
        await store.get("nope", "a")
    with pytest.raises(InvalidArgument, match="'nope'"):
        await store.put("nope", "a", {})
    with pytest.raises(InvalidArgument, match="'nope'"):
        await store.delete("nope", "a")
    with pytest.raises(InvalidArgument, match="'nope'"):
        store.query("nope")
    with pytest.raises(InvalidArgument, match="'nope'"):
        await store.count("nope")
    with pytest.raises(InvalidArgument, match="'nope'"):
        async with store.batch() as b:
            b.put("nope", "a", {})


async def test_non_indexed_fields_are_named(store: DocumentStore) -> None:
    await store.put("jobs", "a", {"pipeline": "p", "colour": "red"})
    with pytest.raises(InvalidArgument, match=r"'colour'.*not indexed") as e:
        store.query("jobs", where={"colour": "red"})
    assert e.value.fields["field"] == "colour"
    with pytest.raises(InvalidArgument, match=r"'colour'.*not indexed"):
        store.query("jobs", order_by="colour")
    with pytest.raises(InvalidArgument, match=r"'colour'.*not indexed"):
        await store.count("jobs", {"colour": "red"})
    with pytest.raises(InvalidArgument, match="not indexed"):
        store.query("plain", order_by="anything")


async def test_bad_values_change_nothing(store: DocumentStore) -> None:
    await store.put("jobs", "a", {"pipeline": "p"})
    bad_puts: list[tuple[Any, Any, str]] = [
        (1, {"pipeline": "q"}, "key must be a string"),
        ("a", ["not", "a", "dict"], "must be an object"),
        ("a", {"pipeline": {"nested": "object"}}, "indexed field 'pipeline'"),
        ("a", {"started": 1 << 70}, "int64"),
        ("a", {"x": float("nan")}, "not JSON"),
        ("a", {"x": {1, 2}}, "not JSON"),
        ("a", {"x": b"bytes"}, "not JSON"),
    ]
    for key, doc, message in bad_puts:
        with pytest.raises(InvalidArgument, match=message):
            await store.put("jobs", key, doc)
    assert await store.get("jobs", "a") == {"pipeline": "p"}
    assert await store.count("jobs") == 1


async def test_bad_queries(store: DocumentStore) -> None:
    with pytest.raises(InvalidArgument, match="limit"):
        store.query("jobs", limit=-1)
    with pytest.raises(InvalidArgument, match="limit"):
        store.query("jobs", limit=True)
    with pytest.raises(InvalidArgument, match="start bounds the key"):
        store.query("jobs", start=3)
    with pytest.raises(InvalidArgument, match="value of 'pipeline'"):
        store.query("jobs", where={"pipeline": ["a"]})
    with pytest.raises(InvalidArgument, match="end of the range"):
        store.query("jobs", order_by="started", end={"a": 1})
    with pytest.raises(InvalidArgument, match="key must be a string"):
        await store.get("jobs", None)  # type: ignore[arg-type]


async def test_bad_collections_on_open(store: DocumentStore) -> None:
    for bad in [Collection("_checkpoints"), Collection("has space"), Collection("")]:
        with pytest.raises(InvalidArgument, match="collection name"):
            await store.open([bad])
    with pytest.raises(InvalidArgument, match="indexed field"):
        await store.open([Collection("ok", ("bad field",))])
    with pytest.raises(InvalidArgument, match="declared twice"):
        await store.open([Collection("twice", ("a",)), Collection("twice", ("b",))])
    with pytest.raises(InvalidArgument, match="unknown collection"):
        await store.count("ok")


# --- backend specifics -------------------------------------------------------------


async def test_sqlite_query_pages_lazily(tmp_path: Path) -> None:
    """With a page of 100, a stream over 2,000 documents reads page by page:
    a document deleted after the first page was read is never yielded, and one
    added beyond the current page is."""
    store = SqliteDocumentStore(tmp_path / "rm.sqlite", page_size=100)
    await store.open(COLLECTIONS)
    async with store.batch() as b:
        for i in range(2000):
            b.put("plain", f"{i:05d}", {"i": i})
    it = store.query("plain")
    first = await anext(it)
    assert first == {"i": 0}
    await store.delete("plain", "01999")
    await store.put("plain", "99999", {"i": 99999})
    rest = [d["i"] async for d in it]
    assert len(rest) == 1999
    assert rest[-2:] == [1998, 99999]
    await store.close()


async def test_sqlite_uses_wal_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "rm.sqlite"
    store = SqliteDocumentStore(path)
    await store.open(COLLECTIONS)
    await store.put("plain", "a", {})
    assert (tmp_path / "rm.sqlite-wal").exists()
    await store.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        await store.get("plain", "a")


async def test_open_document_store(tmp_path: Path) -> None:
    cfg = ReadModelConfig(backend="sqlite", sqlite_dir=tmp_path / "rm")
    store = open_document_store(cfg, "pfs")
    assert isinstance(store, SqliteDocumentStore)
    assert store.path == tmp_path / "rm" / "pfs.sqlite"
    await store.open(COLLECTIONS)
    await store.put("plain", "a", {"x": 1})
    await store.close()
    assert (tmp_path / "rm" / "pfs.sqlite").exists()

    with pytest.raises(InvalidArgument, match="MONGODB_URI"):
        open_document_store(ReadModelConfig(backend="mongo"), "pfs")
    with pytest.raises(InvalidArgument, match="sqlite or mongo"):
        open_document_store(ReadModelConfig(backend="redis"), "pfs")
    with pytest.raises(InvalidArgument, match="read model name"):
        open_document_store(cfg, "../escape")
    mongo = open_document_store(
        ReadModelConfig(backend="mongo", mongo_uri="mongodb://127.0.0.1:1", mongo_db="pach"), "pps"
    )
    assert isinstance(mongo, MongoDocumentStore)
    await mongo.close()


def test_sort_key_orders_kinds() -> None:
    assert sorted([True, "a", 2, None, 1.5], key=sort_key) == [None, 1.5, 2, "a", True]
