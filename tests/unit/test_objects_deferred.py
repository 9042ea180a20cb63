"""DeferredWrites over a real local store: held writes are readable at once,
reach the disk only at ``flush``, and a failed flush raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.errors import ObjectNotFound, Unavailable
from libs.objects import LocalObjectStore
from libs.objects.deferred import DeferredWrites


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


async def test_held_writes_are_read_back_but_written_only_at_flush(
    store: LocalObjectStore,
) -> None:
    deferred = DeferredWrites(store)
    await deferred.put("trees/aa", b"hello world")
    assert await deferred.get("trees/aa") == b"hello world"
    assert await deferred.get("trees/aa", 6) == b"world"
    assert await deferred.get("trees/aa", 0, 5) == b"hello"
    assert b"".join([b async for b in deferred.get_stream("trees/aa", 2, 5, 2)]) == b"llo w"
    assert await deferred.exists("trees/aa") and await deferred.touch("trees/aa")
    assert (await deferred.stat("trees/aa")).size == 11
    assert not await store.exists("trees/aa")  # not on disk yet
    await deferred.flush()
    assert await store.get("trees/aa") == b"hello world"
    assert len(deferred) == 0


async def test_reads_and_touches_fall_through_to_the_store(store: LocalObjectStore) -> None:
    await store.put("trees/bb", b"stored")
    deferred = DeferredWrites(store)
    assert await deferred.get("trees/bb") == b"stored"
    assert await deferred.touch("trees/bb")
    assert not await deferred.touch("trees/cc")
    with pytest.raises(ObjectNotFound):
        await deferred.get("trees/cc")


async def test_many_writes_flush_together(store: LocalObjectStore) -> None:
    deferred = DeferredWrites(store)
    for i in range(100):
        await deferred.put(f"trees/{i:03d}", b"%d" % i)
    await deferred.flush()
    for i in range(100):
        assert await store.get(f"trees/{i:03d}") == b"%d" % i


class FailingStore(LocalObjectStore):
    async def put(self, key: str, data: bytes) -> None:
        if key.endswith("bad"):
            raise Unavailable("disk gone")
        await super().put(key, data)


async def test_a_failed_write_fails_the_flush(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "objects")
    deferred = DeferredWrites(store)
    await deferred.put("trees/good", b"g")
    await deferred.put("trees/bad", b"b")
    with pytest.raises(Unavailable):
        await deferred.flush()
    assert await store.get("trees/good") == b"g"  # the others were still attempted
    assert len(deferred) == 0
