"""GroupedWrites: small writes made durable together (one fsync each,
concurrently, and one per directory), invisible under their keys until
then; a tree build syncs its objects once, before it returns the root."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from libs import trees
from libs.errors import ObjectNotFound
from libs.objects import LocalObjectStore
from libs.objects.grouped import GroupedWrites
from libs.trees.model import DataRef, Put


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(".put-*")]


class Fsyncs:
    """Counts fsyncs, and how many ran at once (each takes a little while,
    as on a real disk)."""

    def __init__(self) -> None:
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.002)
            _REAL_FSYNC(fd)
        finally:
            with self._lock:
                self.running -= 1


_REAL_FSYNC = os.fsync


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    counting = Fsyncs()
    monkeypatch.setattr(os, "fsync", counting)
    return counting


async def test_writes_exist_only_once_synced(tmp_path: Path, fsyncs: Fsyncs) -> None:
    store = LocalObjectStore(tmp_path)
    grouped = GroupedWrites(store)
    keys = [f"trees/{i % 3:02}/obj{i}" for i in range(10)]
    for i, key in enumerate(keys):
        await grouped.put(key, b"%d" % i)
    assert fsyncs.calls == 4  # only the 4 directories created (trees/ and 3 below it)
    fsyncs.calls = 0
    assert len(grouped) == 10
    assert await grouped.touch(keys[0])  # as good as written for the build
    for key in keys:  # nothing under its name yet: a crash leaves only temp files
        with pytest.raises(ObjectNotFound):
            await store.get(key)
    assert len(_temps(tmp_path)) == 10
    await grouped.sync()
    assert [await store.get(k) for k in keys] == [b"%d" % i for i in range(10)]
    assert _temps(tmp_path) == []
    # one fsync per object, one per directory they went into (not one each),
    # several at once
    assert fsyncs.calls == 10 + 3 and fsyncs.most > 1


async def test_a_read_of_a_staged_object_syncs_first(tmp_path: Path) -> None:
    grouped = GroupedWrites(LocalObjectStore(tmp_path))
    await grouped.put("trees/aa/x", b"x")
    assert await grouped.get("trees/aa/x") == b"x"
    assert len(grouped) == 0


async def test_discard_leaves_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    grouped = GroupedWrites(store)
    await grouped.put("trees/aa/x", b"x")
    await grouped.discard()
    assert _temps(tmp_path) == [] and not await store.exists("trees/aa/x")


async def test_the_group_is_synced_at_its_limit(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    grouped = GroupedWrites(store, limit=4)
    for i in range(6):
        await grouped.put(f"trees/aa/{i}", b"x")
    assert len(grouped) == 2 and await store.exists("trees/aa/3")


async def test_a_store_without_staging_writes_through(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, durable=False)
    grouped = GroupedWrites(store)
    await grouped.put("trees/aa/x", b"x")
    assert len(grouped) == 0 and await store.get("trees/aa/x") == b"x"


async def test_a_build_syncs_its_objects_together(tmp_path: Path, fsyncs: Fsyncs) -> None:
    """5,000 files in 5 directories: every object is fsynced once and each
    directory once (not once per object), several at a time."""
    store = LocalObjectStore(tmp_path)

    async def ops():  # type: ignore[no-untyped-def]
        for i in range(5000):
            yield Put(f"/in/d{i % 5}/f{i:05}", (DataRef("ab" * 32, i, 1),))

    root = await trees.build(store, None, ops())
    objects = [p for p in (tmp_path / "trees").rglob("*") if p.is_file()]
    dirs = {p.parent for p in objects}
    assert root.files == 5000 and _temps(tmp_path) == []
    assert len(objects) > 10
    # objects + the directories they went into + creating those directories
    assert fsyncs.calls <= len(objects) + 2 * len(dirs) + 1
    assert fsyncs.most > 1
    node = await trees.get(store, root.hash, "/in/d3/f00003")
    assert node is not None and node.size == 1
