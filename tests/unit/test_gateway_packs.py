"""PackGroups (the gateway's shared packs for one-small-file put-files) on a
real local object store, with a store wrapper that can hold or fail a
write: which files share a pack write, that a ref is handed out only once
its pack is durable, and that a failure or another owner stays apart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.errors import Unavailable
from libs.filedata import read_refs
from libs.objects import LocalObjectStore, ObjectStore
from libs.objects.chunking import chunk_key
from libs.trees.model import DataRef
from services.gateway.app.packs import PackGroups


class Held(LocalObjectStore):
    """Counts puts; ``gate`` holds each until set; ``fail`` fails the next."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.fail = False

    async def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        self.started.set()
        await self.gate.wait()
        if self.fail:
            self.fail = False
            raise Unavailable("disk gone")
        await super().put(key, data)


@pytest.fixture
def store(tmp_path: Path) -> Held:
    return Held(tmp_path / "objects")


async def read(store: ObjectStore, ref: DataRef) -> bytes:
    return b"".join([b async for b in read_refs(store, [ref])])


async def test_files_arriving_during_a_write_share_the_next_one(store: Held) -> None:
    packs = PackGroups(store, writes=1)
    store.gate.clear()
    first = asyncio.ensure_future(packs.write("", b"first"))
    await store.started.wait()
    rest = [asyncio.ensure_future(packs.write("", b"file%d" % i)) for i in range(20)]
    await asyncio.sleep(0.05)
    assert not first.done() and not any(r.done() for r in rest)  # nothing before it is durable
    store.gate.set()
    refs = [await first, *[await r for r in rest]]
    assert len(store.puts) == 2  # 21 files, two pack writes
    assert len({r.chunk for r in refs[1:]}) == 1
    assert [await read(store, r) for r in refs] == [b"first", *(b"file%d" % i for i in range(20))]
    for key in store.puts:
        assert await LocalObjectStore.exists(store, key)


async def test_a_failed_write_fails_only_the_files_in_its_pack(store: Held) -> None:
    packs = PackGroups(store, writes=1)
    store.gate.clear()
    first = asyncio.ensure_future(packs.write("", b"a"))
    await store.started.wait()
    doomed = [asyncio.ensure_future(packs.write("", b"d%d" % i)) for i in range(3)]
    await asyncio.sleep(0.01)
    store.gate.set()
    ok = await first
    store.gate.clear()
    store.started.clear()
    store.fail = True
    later = asyncio.ensure_future(packs.write("", b"later"))
    await store.started.wait()
    store.gate.set()
    with pytest.raises(Unavailable):
        await later
    assert [await d for d in doomed]  # the pack before the failed one was written
    assert await read(store, ok) == b"a"
    again = await packs.write("", b"again")  # a new pack, a new object
    assert await read(store, again) == b"again"


async def test_owners_never_share_a_pack(store: Held) -> None:
    packs = PackGroups(store, writes=1)
    store.gate.clear()
    a = [asyncio.ensure_future(packs.write("alice", b"a%d" % i)) for i in range(3)]
    b = [asyncio.ensure_future(packs.write("bob", b"b%d" % i)) for i in range(3)]
    await asyncio.sleep(0.01)
    store.gate.set()
    refs_a = [await x for x in a]
    refs_b = [await x for x in b]
    assert {r.chunk for r in refs_a}.isdisjoint({r.chunk for r in refs_b})
    assert len(store.puts) == 4  # per owner: the first file alone, then the other two


async def test_a_cancelled_caller_leaves_the_pack_to_the_others(store: Held) -> None:
    packs = PackGroups(store, writes=1)
    store.gate.clear()
    first = asyncio.ensure_future(packs.write("", b"x"))
    await store.started.wait()
    gone = asyncio.ensure_future(packs.write("", b"gone"))
    kept = asyncio.ensure_future(packs.write("", b"kept"))
    await asyncio.sleep(0.01)
    gone.cancel()
    store.gate.set()
    await first
    assert await read(store, await kept) == b"kept"


async def test_a_full_pack_is_sealed_and_the_next_file_starts_another(store: Held) -> None:
    packs = PackGroups(store, max_bytes=10, writes=1)
    store.gate.clear()
    first = asyncio.ensure_future(packs.write("", b"0123456789"))
    await store.started.wait()
    rest = [asyncio.ensure_future(packs.write("", b"abcdef")) for _ in range(3)]
    store.gate.set()
    refs = [await first, *[await r for r in rest]]
    assert len({r.chunk for r in refs}) == 4  # no pack over 10 bytes
    assert chunk_key(refs[0].chunk) in store.puts


async def test_files_go_alone_while_fewer_than_the_limit_are_in_flight(store: Held) -> None:
    packs = PackGroups(store, writes=3)
    store.gate.clear()
    alone = []
    for i in range(3):
        alone.append(asyncio.ensure_future(packs.write("", b"alone%d" % i)))
        await asyncio.sleep(0.01)  # each starts its own write at once
    assert len(store.puts) == 3
    shared = [asyncio.ensure_future(packs.write("", b"shared%d" % i)) for i in range(10)]
    await asyncio.sleep(0.01)
    assert len(store.puts) == 3  # at the limit: the ten wait for a write to end
    store.gate.set()
    refs = [await r for r in alone + shared]
    assert len(store.puts) == 4
    assert len({r.chunk for r in refs[3:]}) == 1
    assert [await read(store, r) for r in refs[3:]] == [b"shared%d" % i for i in range(10)]
