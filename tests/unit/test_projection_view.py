"""A projection's View over a real SQLite store: a document read once in a
group is not read from the store again, and the group's own writes and
deletes still win over what was read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libs.events.projection import View
from libs.readmodels.base import Collection
from libs.readmodels.sqlite import SqliteDocumentStore


class Counting(SqliteDocumentStore):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gets = 0

    async def get(self, collection: str, key: str) -> dict[str, Any] | None:
        self.gets += 1
        return await super().get(collection, key)


async def test_a_group_reads_each_document_from_the_store_once(tmp_path: Path) -> None:
    store = Counting(tmp_path / "v.sqlite")
    await store.open([Collection("docs")])
    try:
        await store.put("docs", "a", {"key": "a", "n": 1})
        async with store.batch() as batch:
            view = View(store, batch)
            assert await view.get("docs", "a") == {"key": "a", "n": 1}
            assert await view.get("docs", "a") == {"key": "a", "n": 1}
            assert await view.get("docs", "missing") is None
            assert await view.get("docs", "missing") is None
            assert store.gets == 2
            view.put("docs", "a", {"key": "a", "n": 2})
            assert await view.get("docs", "a") == {"key": "a", "n": 2}
            view.delete("docs", "a")
            assert await view.get("docs", "a") is None
            assert store.gets == 2
        assert await store.get("docs", "a") is None
    finally:
        await store.close()


async def test_prefetched_documents_are_read_together_and_then_from_memory(
    tmp_path: Path,
) -> None:
    store = Counting(tmp_path / "p.sqlite")
    await store.open([Collection("docs")])
    try:
        for k in "abc":
            await store.put("docs", k, {"key": k})
        async with store.batch() as batch:
            view = View(store, batch)
            view.put("docs", "c", {"key": "c", "mine": True})
            await view.prefetch([("docs", "a"), ("docs", "b"), ("docs", "a"), ("docs", "c")])
            await view.prefetch([("docs", "zz")])
            assert store.gets == 3  # a, b and zz; c was the group's own already
            assert await view.get("docs", "a") == {"key": "a"}
            assert await view.get("docs", "zz") is None
            assert await view.get("docs", "c") == {"key": "c", "mine": True}
            assert store.gets == 3
    finally:
        await store.close()
