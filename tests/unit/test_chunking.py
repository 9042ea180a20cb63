"""Content-addressed chunking over a real LocalObjectStore."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.errors import Internal, InvalidArgument, ObjectNotFound
from libs.objects import ChunkRef, LocalObjectStore, chunk_key, hash_bytes, put_chunks, read_chunks

EMPTY_BLAKE3 = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


class CountingStore(LocalObjectStore):
    """The real local store, counting the objects it is asked to write."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    async def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        await super().put(key, data)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


async def blocks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def read_all(
    store: LocalObjectStore, refs: list[ChunkRef], offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([b async for b in read_chunks(store, refs, offset, length)])


def test_hash_bytes_is_blake3_hex() -> None:
    assert hash_bytes(b"") == EMPTY_BLAKE3
    assert hash_bytes(bytearray(b"abc")) == hash_bytes(b"abc") == hash_bytes(memoryview(b"abc"))
    assert hash_bytes(b"abc") != hash_bytes(b"abd")


def test_chunk_key_layout() -> None:
    assert chunk_key(EMPTY_BLAKE3) == f"chunks/af/{EMPTY_BLAKE3}"
    assert ChunkRef(EMPTY_BLAKE3, 0).key == chunk_key(EMPTY_BLAKE3)


@pytest.mark.parametrize(
    "bad", ["", "abc", EMPTY_BLAKE3.upper(), "../" + EMPTY_BLAKE3[3:], "g" * 64]
)
def test_bad_hashes_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="64 lowercase hex"):
        chunk_key(bad)
    with pytest.raises(InvalidArgument, match="64 lowercase hex"):
        ChunkRef(bad, 1)


def test_bad_chunk_size_in_ref() -> None:
    with pytest.raises(InvalidArgument, match="size"):
        ChunkRef(EMPTY_BLAKE3, -1)


async def test_cuts_fixed_size_chunks(store: CountingStore) -> None:
    data = os.urandom(10_000)
    refs = await put_chunks(store, blocks_of(data, 777), chunk_size=4096)
    assert [r.size for r in refs] == [4096, 4096, 1808]
    for i, ref in enumerate(refs):
        piece = data[i * 4096 : (i + 1) * 4096]
        assert ref.hash == hash_bytes(piece)
        assert await store.get(chunk_key(ref.hash)) == piece
    assert await read_all(store, refs) == data


async def test_block_boundaries_do_not_change_chunks(store: CountingStore) -> None:
    data = os.urandom(50_000)
    a = await put_chunks(store, blocks_of(data, 1), chunk_size=8192)
    b = await put_chunks(store, blocks_of(data, 8192), chunk_size=8192)
    c = await put_chunks(store, blocks_of(data, 50_000), chunk_size=8192)
    assert a == b == c


async def test_identical_data_is_stored_once(store: CountingStore) -> None:
    piece = os.urandom(4096)
    data = piece * 5 + b"tail"
    refs = await put_chunks(store, blocks_of(data, 1000), chunk_size=4096)
    assert len(refs) == 6
    assert len({r.hash for r in refs[:5]}) == 1
    assert sorted(store.puts) == sorted({chunk_key(refs[0].hash), chunk_key(refs[5].hash)})
    assert await read_all(store, refs) == data

    store.puts.clear()
    again = await put_chunks(store, blocks_of(data, 4096), chunk_size=4096)
    assert again == refs
    assert store.puts == []  # second put of the same chunks writes nothing
    assert len([i async for i in store.list("chunks/")]) == 2


async def test_empty_input(store: CountingStore) -> None:
    assert await put_chunks(store, blocks_of(b"", 10)) == []
    assert store.puts == []
    assert await read_all(store, []) == b""
    assert await read_all(store, [], 5, 3) == b""


async def test_ranges_across_chunk_boundaries(store: CountingStore) -> None:
    data = os.urandom(100)
    refs = await put_chunks(store, blocks_of(data, 13), chunk_size=16)
    assert len(refs) == 7
    for offset in range(0, 104, 3):
        for length in (None, 0, 1, 15, 16, 17, 33, 100, 200):
            end = None if length is None else offset + length
            got = await read_all(store, refs, offset, length)
            assert got == data[offset:end], (offset, length)


async def test_read_in_small_blocks(store: CountingStore) -> None:
    data = os.urandom(5000)
    refs = await put_chunks(store, blocks_of(data, 5000), chunk_size=1024)
    blocks = [b async for b in read_chunks(store, refs, 10, 3000, block_size=100)]
    assert all(0 < len(b) <= 100 for b in blocks)
    assert b"".join(blocks) == data[10:3010]


async def test_bad_read_ranges(store: CountingStore) -> None:
    with pytest.raises(InvalidArgument, match="offset"):
        await read_all(store, [], -1)
    with pytest.raises(InvalidArgument, match="length"):
        await read_all(store, [], 0, -1)


async def test_missing_chunk_raises_object_not_found(store: CountingStore) -> None:
    ref = ChunkRef(hash_bytes(b"never stored"), 12)
    with pytest.raises(ObjectNotFound, match=ref.hash):
        await read_all(store, [ref])


async def test_truncated_chunk_raises_internal(store: CountingStore) -> None:
    refs = await put_chunks(store, blocks_of(b"0123456789", 10), chunk_size=10)
    lying = [ChunkRef(refs[0].hash, 20)]
    with pytest.raises(Internal, match="fewer bytes"):
        await read_all(store, lying)


async def test_failing_producer_propagates(store: CountingStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(10_000)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        await put_chunks(store, failing(), chunk_size=1024)


async def test_bad_inputs(store: CountingStore) -> None:
    with pytest.raises(InvalidArgument, match="chunk size"):
        await put_chunks(store, blocks_of(b"x", 1), chunk_size=0)

    async def text() -> AsyncIterator[bytes]:
        yield "not bytes"  # type: ignore[misc]

    with pytest.raises(InvalidArgument, match="must be bytes"):
        await put_chunks(store, text())
    assert store.puts == []


async def test_large_stream_with_default_chunk_size(store: CountingStore) -> None:
    data = os.urandom((8 << 20) * 3 + 12345)
    refs = await put_chunks(store, blocks_of(data, 1 << 20))
    assert [r.size for r in refs] == [8 << 20] * 3 + [12345]
    assert await read_all(store, refs, (8 << 20) - 5, 10) == data[(8 << 20) - 5 : (8 << 20) + 5]
    assert hash_bytes(await read_all(store, refs)) == hash_bytes(data)
