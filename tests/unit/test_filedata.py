"""FileWriter and read_refs over a real LocalObjectStore."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.errors import Internal, InvalidArgument
from libs.filedata import FileWriter, file_size, read_refs
from libs.objects import LocalObjectStore, chunk_key, hash_bytes
from libs.trees.model import DataRef

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 64 * KiB  # small chunks keep most tests fast; one test uses the real 8 MiB
SMALL = 4 * KiB


class RecordingStore(LocalObjectStore):
    """The real local store, recording writes and ranged reads."""

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        super().__init__(root, durable=durable)
        self.puts: list[str] = []
        self.gets: list[tuple[str, int, int | None]] = []
        self.fail_puts = False

    async def put(self, key: str, data: bytes) -> None:
        if self.fail_puts:
            raise OSError("disk on fire")
        self.puts.append(key)
        await super().put(key, data)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self.gets.append((key, offset, length))
        return await super().get(key, offset, length)


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "objects")


def writer_for(store: RecordingStore) -> FileWriter:
    return FileWriter(store, chunk_size=CHUNK, small_file=SMALL)


async def blocks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def read_all(store: RecordingStore, refs: list[DataRef], offset: int = 0, size=None) -> bytes:
    return b"".join([b async for b in read_refs(store, refs, offset, size)])


def object_files(store: LocalObjectStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "size", [0, 1, SMALL - 1, SMALL, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17]
)
async def test_round_trip(store: RecordingStore, size: int) -> None:
    data = os.urandom(size)
    writer = writer_for(store)
    refs = await writer.write_file(blocks_of(data))
    await writer.flush()
    assert file_size(refs) == size
    assert hash_bytes(await read_all(store, refs)) == hash_bytes(data)
    if size == 0:
        assert refs == [] and store.puts == []


@pytest.mark.parametrize("size", [8 * MiB, 8 * MiB + 1, 17 * MiB])
async def test_round_trip_real_chunk_size(tmp_path: Path, size: int) -> None:
    store = RecordingStore(tmp_path / "o", durable=False)
    data = os.urandom(size)
    refs = await FileWriter(store).write_file(blocks_of(data, MiB))
    assert [r.length for r in refs] == [8 * MiB] * (size // (8 * MiB)) + (
        [size % (8 * MiB)] if size % (8 * MiB) else []
    )
    assert all(
        r.chunk == hash_bytes(data[i * 8 * MiB : (i + 1) * 8 * MiB]) for i, r in enumerate(refs)
    )
    assert await read_all(store, refs) == data


async def test_large_file_refs_are_durable_on_return(store: RecordingStore) -> None:
    data = os.urandom(2 * CHUNK + 5)
    refs = await writer_for(store).write_file(blocks_of(data))  # no flush
    assert await read_all(store, refs) == data
    for ref in refs:
        assert ref.offset == 0
        assert hash_bytes(await store.get(chunk_key(ref.chunk))) == ref.chunk


async def test_identical_content_is_stored_once(store: RecordingStore) -> None:
    block = os.urandom(CHUNK)
    writer = writer_for(store)
    first = await writer.write_file(blocks_of(block * 3))
    assert len({r.chunk for r in first}) == 1
    assert len(store.puts) == 1  # three identical chunks, one object
    second = await writer.write_file(blocks_of(block * 3))
    assert second == first
    assert len(store.puts) == 1


async def test_many_small_files_are_packed(store: RecordingStore) -> None:
    writer = writer_for(store)
    files = [os.urandom(100 + i * 7) for i in range(200)]  # ~160 KiB: several packs
    refs = [await writer.write_file(blocks_of(f, 50)) for f in files]
    await writer.flush()
    assert all(len(r) == 1 for r in refs)
    packs = {r[0].chunk for r in refs}
    assert 1 < len(packs) <= len(store.puts) == 3
    for f, r in zip(files, refs, strict=True):
        assert await read_all(store, r) == f
    # files share packs at increasing offsets, never straddling one
    by_pack: dict[str, list[DataRef]] = {}
    for (ref,) in refs:
        by_pack.setdefault(ref.chunk, []).append(ref)
        assert ref.offset + ref.length <= CHUNK
    for pack_refs in by_pack.values():
        assert [r.offset for r in pack_refs] == sorted(r.offset for r in pack_refs)


async def test_packed_refs_need_flush(store: RecordingStore) -> None:
    writer = writer_for(store)
    (ref,) = await writer.write_file(blocks_of(b"hello"))
    assert not await store.exists(chunk_key(ref.chunk))
    await writer.flush()
    assert await store.get(chunk_key(ref.chunk), ref.offset, ref.length) == b"hello"
    await writer.flush()  # nothing open: no empty pack is written
    assert len(store.puts) == 1


async def test_concurrent_small_and_large_writes(store: RecordingStore) -> None:
    writer = writer_for(store)
    files = [os.urandom(n) for n in [10, 3000, SMALL, 70_000, 1, 200_000] * 5]
    refs = await asyncio.gather(*(writer.write_file(blocks_of(f, 999)) for f in files))
    await writer.flush()
    for f, r in zip(files, refs, strict=True):
        assert await read_all(store, r) == f


async def test_failed_pack_write_voids_the_writer(store: RecordingStore) -> None:
    writer = writer_for(store)
    await writer.write_file(blocks_of(b"x" * 100))
    store.fail_puts = True
    with pytest.raises(OSError, match="disk on fire"):
        await writer.flush()
    store.fail_puts = False
    with pytest.raises(OSError, match="disk on fire"):
        await writer.write_file(blocks_of(b"y"))


async def test_failure_mid_stream_leaves_no_partial_object(store: RecordingStore) -> None:
    data = os.urandom(5 * CHUNK)

    async def broken() -> AsyncIterator[bytes]:
        async for block in blocks_of(data[: 2 * CHUNK + 100]):
            yield block
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await writer_for(store).write_file(broken())
    await asyncio.sleep(0.2)  # writes already running in the pool finish (atomically)
    for path in object_files(store):
        assert not path.name.startswith(".put-")
        assert hash_bytes(path.read_bytes()) == path.name  # whole chunks only


async def test_non_bytes_block_is_invalid(store: RecordingStore) -> None:
    async def bad() -> AsyncIterator[bytes]:
        yield "text"  # type: ignore[misc]

    with pytest.raises(InvalidArgument, match="must be bytes"):
        await writer_for(store).write_file(bad())


async def test_memory_bounded_for_256_mib(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "o", durable=False)
    base = os.urandom(MiB - 8)

    async def source() -> AsyncIterator[bytes]:
        for i in range(256):
            yield i.to_bytes(8, "big") + base

    gc.collect()
    tracemalloc.start()
    try:
        refs = await FileWriter(store).write_file(source())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert file_size(refs) == 256 * (MiB)
    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"


async def test_ranges_across_chunk_and_pack_boundaries(store: RecordingStore) -> None:
    writer = writer_for(store)
    big = os.urandom(3 * CHUNK + 500)
    parts = [os.urandom(n) for n in (1000, 2500, 3000)]
    refs = await writer.write_file(blocks_of(big))
    for p in parts:
        refs += await writer.write_file(blocks_of(p))
    await writer.flush()
    data = big + b"".join(parts)
    edges = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 499, len(big), len(big) + 1000]
    for offset in edges:
        for size in (None, 0, 1, 2, 999, CHUNK + 3, 10 * CHUNK):
            want = data[offset:] if size is None else data[offset : offset + size]
            assert await read_all(store, refs, offset, size) == want, (offset, size)


async def test_reads_only_the_slices_needed(store: RecordingStore) -> None:
    writer = writer_for(store)
    (a,) = await writer.write_file(blocks_of(b"a" * 1000))
    (b,) = await writer.write_file(blocks_of(b"b" * 1000))
    await writer.flush()
    store.gets.clear()
    assert await read_all(store, [b, a], 990, 20) == b"b" * 10 + b"a" * 10
    key = chunk_key(a.chunk)
    assert store.gets == [(key, b.offset + 990, 10), (key, a.offset, 10)]


async def test_read_past_end_and_bad_ranges(store: RecordingStore) -> None:
    writer = writer_for(store)
    refs = await writer.write_file(blocks_of(b"0123456789"))
    await writer.flush()
    assert await read_all(store, refs, 10) == b""
    assert await read_all(store, refs, 1000, 5) == b""
    assert await read_all(store, refs, 8, 100) == b"89"
    assert await read_all(store, [], 0) == b""
    with pytest.raises(InvalidArgument, match="offset"):
        await read_all(store, refs, -1)
    with pytest.raises(InvalidArgument, match="size"):
        await read_all(store, refs, 0, -1)


async def test_truncated_chunk_is_internal(store: RecordingStore) -> None:
    data = os.urandom(CHUNK + 10)
    refs = await writer_for(store).write_file(blocks_of(data))
    path = store.root / chunk_key(refs[1].chunk)
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(Internal, match="fewer bytes"):
        await read_all(store, refs)


async def test_a_flush_in_the_background_covers_what_was_written_before_it(
    store: RecordingStore,
) -> None:
    """The gateway flushes one batch while it packs the next: the flush
    returns once every ref handed out before it is durable, while writes
    after it go on (their packs are written too, and read back whole)."""
    writer = writer_for(store)
    before = [await writer.write_small(os.urandom(1000)) for _ in range(20)]  # 5 packs
    flushing = asyncio.ensure_future(writer.flush())
    after = [await writer.write_small(os.urandom(1000)) for _ in range(20)]
    await flushing
    for (ref,) in before:
        assert await store.exists(chunk_key(ref.chunk))
    await writer.flush()
    for refs in before + after:
        assert len(refs) == 1 and await read_all(store, refs) != b""
    assert await writer.write_small(b"") == []
