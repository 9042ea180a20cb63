"""LocalObjectStore against a real directory: atomic writes, ranges, listing, bad keys."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.config import ObjectStoreConfig
from libs.errors import InvalidArgument, ObjectNotFound
from libs.objects import LocalObjectStore, ObjectInfo, S3ObjectStore, open_object_store
from libs.objects import local as local_mod


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def blocks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


class Boom(Exception):
    pass


async def failing_after(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise Boom("producer failed mid-stream")


async def test_put_get_roundtrip(store: LocalObjectStore) -> None:
    await store.put("a/b/c", b"hello world")
    assert await store.get("a/b/c") == b"hello world"
    assert await store.exists("a/b/c")
    assert await store.stat("a/b/c") == ObjectInfo("a/b/c", 11)
    assert (store.root / "a" / "b" / "c").read_bytes() == b"hello world"


async def test_a_root_whose_parents_do_not_exist_yet_is_created_on_first_write(
    tmp_path: Path,
) -> None:
    # a fresh data directory: neither data/ nor data/objects/ exists yet
    store = LocalObjectStore(tmp_path / "data" / "objects")
    assert [info async for info in store.list("transfers/")] == []
    assert await store.put_stream("transfers/x/part-0", blocks_of(b"ab", b"c")) == 3
    await store.put("blocks/y", b"d")
    assert all_files(tmp_path / "data" / "objects") == ["blocks/y", "transfers/x/part-0"]


async def test_put_stream_counts_and_coalesces_odd_blocks(store: LocalObjectStore) -> None:
    data = os.urandom(11 << 20)
    cuts = [0, 1, 7, 4096, (4 << 20) + 3, (9 << 20) + 1, len(data)]
    parts = [data[a:b] for a, b in itertools.pairwise(cuts)]
    assert await store.put_stream("big", blocks_of(*parts)) == len(data)
    assert await store.get("big") == data


async def test_put_stream_empty_object(store: LocalObjectStore) -> None:
    assert await store.put_stream("empty", blocks_of()) == 0
    assert await store.get("empty") == b""
    assert [b async for b in store.get_stream("empty")] == []


async def test_overwrite_replaces_whole_object(store: LocalObjectStore) -> None:
    await store.put("k", b"first version, long")
    await store.put_stream("k", blocks_of(b"second"))
    assert await store.get("k") == b"second"


async def test_failed_put_stream_leaves_nothing(store: LocalObjectStore) -> None:
    with pytest.raises(Boom):
        await store.put_stream("dir/obj", failing_after(b"x" * (5 << 20), b"y" * 100))
    assert not await store.exists("dir/obj")
    assert all_files(store.root) == []  # no temporary file left behind either


async def test_failed_overwrite_keeps_old_object(store: LocalObjectStore) -> None:
    await store.put("k", b"old")
    with pytest.raises(Boom):
        await store.put_stream("k", failing_after(b"new" * 1000))
    assert await store.get("k") == b"old"
    assert all_files(store.root) == ["k"]


async def test_cancelled_put_stream_leaves_nothing(store: LocalObjectStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * (6 << 20)
        started.set()
        await asyncio.sleep(30)
        yield b"never"

    task = asyncio.create_task(store.put_stream("slow", slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the descriptor is released on the I/O pool
        if not all_files(store.root):
            break
        await asyncio.sleep(0.02)
    assert all_files(store.root) == []


async def test_put_stream_flushes_early_and_drops_cache(
    store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_mod, "SYNC_EVERY", 1 << 20)
    monkeypatch.setattr(local_mod, "WRITE_COALESCE", 1 << 20)
    flushed: list[tuple[int, int]] = []
    real_flush = local_mod._flush_range

    def flush(fd: int, start: int, end: int) -> None:
        flushed.append((start, end))
        real_flush(fd, start, end)

    monkeypatch.setattr(local_mod, "_flush_range", flush)
    data = os.urandom(9 << 20)
    # Mixed block sizes: small ones are copied together, big ones kept by reference,
    # and a bytearray (which the producer may reuse) is copied.
    cuts = [0, 5, 1 << 20, (1 << 20) + 100, (3 << 20) + 7, (6 << 20) + 1, len(data)]
    parts: list[bytes] = [data[a:b] for a, b in itertools.pairwise(cuts)]

    async def blocks() -> AsyncIterator[bytes]:
        for i, part in enumerate(parts):
            await asyncio.sleep(0)
            yield bytearray(part) if i == 3 else part  # type: ignore[misc]

    assert await store.put_stream("flushed", blocks()) == len(data)
    assert await store.get("flushed") == data
    assert flushed, "a stream over SYNC_EVERY is flushed before the final fsync"
    assert all(a < b for a, b in flushed)
    assert all(b <= c for (_, b), (c, _) in itertools.pairwise(flushed))  # in order, disjoint
    assert all_files(store.root) == ["flushed"]


async def test_failed_flush_fails_the_put_and_leaves_nothing(
    store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_mod, "SYNC_EVERY", 1 << 20)
    monkeypatch.setattr(local_mod, "WRITE_COALESCE", 1 << 20)

    def flush(fd: int, start: int, end: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local_mod, "_flush_range", flush)
    with pytest.raises(OSError, match="Input/output error"):
        await store.put_stream("k", blocks_of(*[b"z" * (1 << 20)] * 8))
    assert all_files(store.root) == []


def test_writev_all_survives_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_writev(fd, [buffers[0][:3]])  # at most 3 bytes per call

    monkeypatch.setattr(os, "writev", short_writev)
    parts: list[bytes | bytearray] = [b"abcdefg", bytearray(b"h"), b"ijklmnopq"]
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        assert local_mod._writev_all(fd, parts) == 17
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abcdefghijklmnopq"


async def test_durable_puts_leave_the_page_cache_small(
    store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    dropped: list[tuple[int, int, int]] = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        dropped.append((offset, length, advice))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    await store.put("small", b"tiny")
    assert dropped == []  # small objects keep their cache
    data = os.urandom(local_mod.DROP_CACHE_MIN)
    await store.put("big", data)
    assert dropped == [(0, 0, os.POSIX_FADV_DONTNEED)]
    assert await store.get("big") == data


async def test_non_bytes_block_is_rejected(store: LocalObjectStore) -> None:
    async def bad() -> AsyncIterator[bytes]:
        yield b"ok"
        yield "text"  # type: ignore[misc]

    with pytest.raises(InvalidArgument, match="must be bytes"):
        await store.put_stream("k", bad())
    assert all_files(store.root) == []


@pytest.mark.parametrize(
    ("offset", "length", "expect"),
    [
        (0, None, slice(0, 100)),
        (10, None, slice(10, 100)),
        (10, 5, slice(10, 15)),
        (95, 50, slice(95, 100)),
        (100, None, slice(100, 100)),
        (250, 3, slice(100, 100)),
        (3, 0, slice(3, 3)),
    ],
)
async def test_ranged_reads(
    store: LocalObjectStore, offset: int, length: int | None, expect: slice
) -> None:
    data = bytes(range(100))
    await store.put("r", data)
    assert await store.get("r", offset, length) == data[expect]
    got = [b async for b in store.get_stream("r", offset, length, block_size=7)]
    assert all(0 < len(b) <= 7 for b in got)
    assert b"".join(got) == data[expect]


async def test_bad_ranges_are_rejected(store: LocalObjectStore) -> None:
    await store.put("r", b"abc")
    with pytest.raises(InvalidArgument, match="offset"):
        await store.get("r", -1)
    with pytest.raises(InvalidArgument, match="length"):
        await store.get("r", 0, -2)
    with pytest.raises(InvalidArgument, match="block size"):
        [b async for b in store.get_stream("r", block_size=0)]


async def test_missing_key(store: LocalObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        [b async for b in store.get_stream("nope/deeper")]
    with pytest.raises(ObjectNotFound):
        await store.stat("nope")
    assert not await store.exists("nope")
    await store.delete("nope")  # not an error


async def test_a_prefix_directory_is_not_an_object(store: LocalObjectStore) -> None:
    await store.put("dir/file", b"x")
    assert not await store.exists("dir")
    with pytest.raises(ObjectNotFound):
        await store.get("dir")
    await store.delete("dir")
    assert await store.get("dir/file") == b"x"


async def test_delete(store: LocalObjectStore) -> None:
    await store.put("d/x", b"1")
    await store.delete("d/x")
    assert not await store.exists("d/x")
    assert [i async for i in store.list()] == []


async def test_abandoned_get_stream_releases_its_descriptor(store: LocalObjectStore) -> None:
    await store.put("s", os.urandom(1 << 20))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        stream = store.get_stream("s", block_size=4096)
        async for _block in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.1)
    assert len(os.listdir("/proc/self/fd")) <= before


BAD_KEYS = [
    "",
    "/abs",
    "a/../b",
    "..",
    ".",
    "a/./b",
    "a//b",
    "a/",
    "a\x00b",
    ".put-123",
    "x/.put-y",
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_rejected_and_change_nothing(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        await store.put(key, b"data")
    assert err.value.fields["key"] == key
    assert repr(key) in str(err.value) or key == ""
    with pytest.raises(InvalidArgument):
        await store.put_stream(key, blocks_of(b"data"))
    with pytest.raises(InvalidArgument):
        await store.get(key)
    with pytest.raises(InvalidArgument):
        await store.delete(key)
    with pytest.raises(InvalidArgument):
        await store.exists(key)
    assert not store.root.exists() or all_files(store.root) == []


async def test_too_long_key_is_rejected(store: LocalObjectStore) -> None:
    with pytest.raises(InvalidArgument, match="over 1024"):
        await store.put("k" * 1025, b"")


async def test_key_conflicting_with_prefix(store: LocalObjectStore) -> None:
    await store.put("a", b"file")
    with pytest.raises(InvalidArgument, match="existing object 'a'"):
        await store.put("a/b", b"x")
    await store.put("x/y", b"file")
    with pytest.raises(InvalidArgument, match="conflicts"):
        await store.put("x", b"x")
    assert all_files(store.root) == ["a", "x/y"]


async def test_listing_is_in_key_order_with_sizes(store: LocalObjectStore) -> None:
    keys = ["a/b", "a-c", "a0", "ab", "a/a/z", "b", "a/b0", "a.x", "\u00e9", "Z"]
    for i, key in enumerate(keys):
        await store.put(key, b"x" * i)
    listed = [i async for i in store.list()]
    assert [i.key for i in listed] == sorted(keys)
    assert {i.key: i.size for i in listed} == {k: n for n, k in enumerate(keys)}


@pytest.mark.parametrize(
    ("prefix", "expect"),
    [
        ("a/", ["a/a/z", "a/b", "a/b0"]),
        ("a/b", ["a/b", "a/b0"]),
        ("a", ["a-c", "a.x", "a/a/z", "a/b", "a/b0", "a0", "ab"]),
        ("a/a/", ["a/a/z"]),
        ("zz", []),
        ("nope/", []),
        ("a/../", []),
        ("", ["a-c", "a.x", "a/a/z", "a/b", "a/b0", "a0", "ab", "b"]),
    ],
)
async def test_listing_by_prefix(store: LocalObjectStore, prefix: str, expect: list[str]) -> None:
    for key in ["a/b", "a-c", "a0", "ab", "a/a/z", "b", "a/b0", "a.x"]:
        await store.put(key, b"")
    assert [i.key async for i in store.list(prefix)] == expect


async def test_listing_an_empty_or_missing_root(tmp_path: Path) -> None:
    assert [i async for i in LocalObjectStore(tmp_path / "absent").list()] == []


async def test_listing_skips_temporary_files(store: LocalObjectStore) -> None:
    await store.put("d/real", b"1")
    (store.root / "d" / ".put-deadbeef").write_bytes(b"partial")
    assert [i.key async for i in store.list()] == ["d/real"]


async def test_listing_streams_directory_by_directory(store: LocalObjectStore) -> None:
    for key in ["p/1", "q/1", "r/1"]:
        await store.put(key, b"")
    listing = store.list()
    first = await anext(listing)
    assert first.key == "p/1"
    await store.delete("r/1")  # not read yet: the listing reads lazily
    await store.put("q/2", b"")
    assert [i.key async for i in listing] == ["q/1", "q/2"]


async def test_bad_listing_prefix(store: LocalObjectStore) -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        [i async for i in store.list("/etc")]


async def test_not_durable_mode_still_round_trips(tmp_path: Path) -> None:
    fast = LocalObjectStore(tmp_path, durable=False)
    await fast.put_stream("x", blocks_of(b"abc", b"def"))
    assert await fast.get("x", 2, 3) == b"cde"


def test_open_object_store_local(tmp_path: Path) -> None:
    store = open_object_store(ObjectStoreConfig(backend="local", local_root=tmp_path))
    assert isinstance(store, LocalObjectStore)
    assert store.root == tmp_path


def test_open_object_store_s3_builds_without_connecting() -> None:
    store = open_object_store(
        ObjectStoreConfig(
            backend="s3",
            s3_bucket="bkt",
            s3_endpoint="http://127.0.0.1:1",
            s3_access_key="a",
            s3_secret_key="b",
        )
    )
    assert isinstance(store, S3ObjectStore)
    assert store.bucket == "bkt"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (ObjectStoreConfig(backend="gcs"), "local, s3 or azure, got 'gcs'"),
        (ObjectStoreConfig(backend="azure"), "needs PACH_AZURE_CONTAINER"),
        (ObjectStoreConfig(backend="s3"), "needs a bucket"),
        (ObjectStoreConfig(backend="s3", s3_bucket="b", s3_access_key="a"), "both"),
    ],
)
def test_open_object_store_bad_config(cfg: ObjectStoreConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        open_object_store(cfg)


def test_s3_store_bad_arguments() -> None:
    with pytest.raises(InvalidArgument, match="part size"):
        S3ObjectStore("b", part_size=1024)
    with pytest.raises(InvalidArgument, match="empty path segment"):
        S3ObjectStore("b", prefix="a//b")


# --- modification times, touch and delete_if_older (garbage collection) -------


def _age(store: LocalObjectStore, key: str, seconds_ago: float) -> float:
    """Backdate an object's modification time; returns the new time."""
    when = time.time() - seconds_ago
    os.utime(store.root / key, (when, when))
    return when


async def test_stat_and_list_report_the_modification_time(store: LocalObjectStore) -> None:
    await store.put("m/a", b"aaa")
    await store.put("m/b", b"b")
    old = _age(store, "m/a", 3600)
    assert (await store.stat("m/a")).modified == pytest.approx(old)
    listed = {i.key: i for i in [i async for i in store.list("m/")]}
    assert listed["m/a"].modified == pytest.approx(old)
    assert listed["m/b"].modified > old + 3000
    assert listed["m/a"] == ObjectInfo("m/a", 3)  # modified is not part of equality


async def test_touch_renews_the_time_and_reports_absence(store: LocalObjectStore) -> None:
    await store.put("t/x", b"data")
    old = _age(store, "t/x", 3600)
    assert await store.touch("t/x") is True
    assert (await store.stat("t/x")).modified > old + 3000
    assert await store.get("t/x") == b"data"
    assert await store.touch("t/missing") is False
    assert not await store.exists("t/missing")
    assert await store.touch("t") is False  # a prefix directory is no object


async def test_delete_if_older_spares_recent_objects(store: LocalObjectStore) -> None:
    now = time.time()
    await store.put("d/old", b"1")
    await store.put("d/new", b"2")
    _age(store, "d/old", 3600)
    assert await store.delete_if_older("d/old", now - 60) is True
    assert await store.delete_if_older("d/new", now - 60) is False
    assert await store.delete_if_older("d/gone", now) is False
    assert await store.delete_if_older("d", now + 60) is False  # a directory stays
    assert [i.key async for i in store.list("d/")] == ["d/new"]
    assert all_files(store.root) == ["d/new"]  # no renamed leftovers


async def test_a_touched_object_survives_delete_if_older(store: LocalObjectStore) -> None:
    await store.put("r/c", b"reused")
    _age(store, "r/c", 3600)
    cutoff = time.time() - 60
    assert await store.touch("r/c")
    assert await store.delete_if_older("r/c", cutoff) is False
    assert await store.get("r/c") == b"reused"
