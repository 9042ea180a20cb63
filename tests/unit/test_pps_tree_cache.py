"""TreeCachingStore: a worker's in-memory copies of tree objects it read."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import ObjectNotFound
from libs.objects import LocalObjectStore
from services.pps.worker.cache import TreeCachingStore


async def test_tree_objects_are_read_once_and_the_rest_goes_through(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", durable=False)
    cached = TreeCachingStore(store)
    await cached.put("trees/ab/abc", b"node")
    await cached.put("chunks/x", b"data")
    assert await cached.get("trees/ab/abc") == b"node"
    assert await cached.get("trees/ab/abc") == b"node"
    assert cached.hits == 1
    assert await cached.get("chunks/x") == b"data"
    assert await cached.get("chunks/x") == b"data"
    assert cached.hits == 1  # only tree objects are kept
    assert await cached.get("trees/ab/abc", 1, 2) == b"od"  # ranges go to the store
    await cached.delete("trees/ab/abc")
    with pytest.raises(ObjectNotFound):
        await cached.get("trees/ab/abc")  # a deleted object is not served from memory


async def test_the_cache_keeps_at_most_its_limit(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", durable=False)
    cached = TreeCachingStore(store, limit=10)
    for name in ("a", "b", "c"):
        await cached.put(f"trees/00/{name}", b"12345")
    for name in ("a", "b", "c"):
        await cached.get(f"trees/00/{name}")
    assert await cached.get("trees/00/c") == b"12345"  # kept (newest)
    assert cached.hits == 1
    await cached.get("trees/00/a")  # dropped first: read again
    assert cached.hits == 1
    assert cached._bytes <= 10
