"""S3ObjectStore and chunking against a real S3 server (Ceph radosgw)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import pytest

from libs.errors import InvalidArgument, NotFound, ObjectNotFound, Unavailable
from libs.objects import ObjectInfo, S3ObjectStore, chunk_key, put_chunks, read_chunks
from tests.servers.fixtures import s3_server  # noqa: F401
from tests.servers.s3server import S3Server

pytestmark = pytest.mark.s3

BUCKET = "pach-test"
PART = 5 << 20


def make_store(server: S3Server, prefix: str, **kwargs: Any) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=BUCKET,
        endpoint_url=server.endpoint,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
        prefix=prefix,
        **kwargs,
    )


@pytest.fixture
async def store(s3_server: S3Server) -> AsyncIterator[S3ObjectStore]:  # noqa: F811
    st = make_store(s3_server, f"t-{secrets.token_hex(4)}", part_size=PART, list_page_size=3)
    await st.ensure_bucket()
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
async def raw(s3_server: S3Server) -> AsyncIterator[Any]:  # noqa: F811
    session = aioboto3.Session(
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    )
    async with session.client("s3", endpoint_url=s3_server.endpoint) as client:
        yield client


async def blocks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_put_get_stat_exists_delete(store: S3ObjectStore) -> None:
    await store.put("a/b", b"hello")
    assert await store.get("a/b") == b"hello"
    assert await store.stat("a/b") == ObjectInfo("a/b", 5)
    assert await store.exists("a/b")
    await store.delete("a/b")
    assert not await store.exists("a/b")
    await store.delete("a/b")  # absent: not an error


async def test_missing_key(store: S3ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        [b async for b in store.get_stream("nope", 0, 0)]
    with pytest.raises(ObjectNotFound):
        await store.stat("nope")


async def test_small_stream_is_a_single_put(store: S3ObjectStore, raw: Any) -> None:
    data = os.urandom(1000)
    assert await store.put_stream("small", blocks_of(data, 100)) == 1000
    head = await raw.head_object(Bucket=BUCKET, Key=f"{store._prefix}small")
    assert "-" not in head["ETag"]
    assert await store.get("small") == data


async def test_empty_stream(store: S3ObjectStore) -> None:
    assert await store.put_stream("empty", blocks_of(b"", 1)) == 0
    assert await store.get("empty") == b""
    assert await store.get("empty", 5) == b""


async def test_multipart_above_part_size(store: S3ObjectStore, raw: Any) -> None:
    data = os.urandom(PART * 2 + 12345)
    assert await store.put_stream("big", blocks_of(data, 1 << 20)) == len(data)
    head = await raw.head_object(Bucket=BUCKET, Key=f"{store._prefix}big")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert await store.get("big") == data
    blocks = [b async for b in store.get_stream("big", block_size=1 << 20)]
    assert all(0 < len(b) <= 1 << 20 for b in blocks)
    assert b"".join(blocks) == data


async def test_failed_multipart_is_aborted(store: S3ObjectStore, raw: Any) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(PART * 2 + 1)
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        await store.put_stream("broken", failing())
    assert not await store.exists("broken")
    uploads = await raw.list_multipart_uploads(Bucket=BUCKET, Prefix=store._prefix)
    assert uploads.get("Uploads", []) == []


async def test_ranged_get(store: S3ObjectStore) -> None:
    data = bytes(range(256)) * 4
    await store.put("r", data)
    assert await store.get("r", 10, 20) == data[10:30]
    assert await store.get("r", 1000) == data[1000:]
    assert await store.get("r", 1020, 100) == data[1020:]
    assert await store.get("r", 5000) == b""
    assert await store.get("r", 3, 0) == b""
    blocks = [b async for b in store.get_stream("r", 7, 500, block_size=64)]
    assert all(0 < len(b) <= 64 for b in blocks)
    assert b"".join(blocks) == data[7:507]
    with pytest.raises(InvalidArgument, match="offset"):
        await store.get("r", -1)


async def test_list_by_prefix_in_key_order_across_pages(store: S3ObjectStore) -> None:
    keys = ["a/b", "a-c", "a0", "ab", "a/a/z", "b", "a/b0", "a.x"]
    await asyncio.gather(*(store.put(k, b"x" * i) for i, k in enumerate(keys)))
    listed = [i async for i in store.list()]  # page size 3: several pages
    assert [i.key for i in listed] == sorted(keys)
    assert {i.key: i.size for i in listed} == {k: n for n, k in enumerate(keys)}
    assert [i.key async for i in store.list("a/")] == ["a/a/z", "a/b", "a/b0"]
    assert [i.key async for i in store.list("zz")] == []


async def test_prefixes_isolate_stores(s3_server: S3Server) -> None:  # noqa: F811
    one = make_store(s3_server, f"iso-{secrets.token_hex(4)}")
    two = make_store(s3_server, f"iso-{secrets.token_hex(4)}/")
    try:
        await one.ensure_bucket()
        await one.put("k", b"1")
        await two.put("k", b"2")
        assert await one.get("k") == b"1"
        assert [i.key async for i in two.list()] == ["k"]
    finally:
        await one.close()
        await two.close()


async def test_bad_keys_are_rejected(store: S3ObjectStore) -> None:
    for key in ["", "/abs", "a/../b", "a//b", "a\x00"]:
        with pytest.raises(InvalidArgument):
            await store.put(key, b"x")
    assert [i async for i in store.list()] == []


async def test_chunks_on_s3(store: S3ObjectStore) -> None:
    piece = os.urandom(64 << 10)
    data = piece * 3 + os.urandom(1000)
    refs = await put_chunks(store, blocks_of(data, 10_000), chunk_size=64 << 10)
    assert len(refs) == 4 and refs[0] == refs[1] == refs[2]
    assert [i.key async for i in store.list("chunks/")] == sorted({chunk_key(r.hash) for r in refs})
    got = b"".join([b async for b in read_chunks(store, refs, (64 << 10) - 10, 100)])
    assert got == data[(64 << 10) - 10 : (64 << 10) + 90]


async def test_unreachable_server_is_unavailable() -> None:
    dead = S3ObjectStore(
        "bkt", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b", max_attempts=1
    )
    try:
        with pytest.raises(Unavailable, match="cannot reach"):
            await dead.get("k")
    finally:
        await dead.close()


async def test_missing_bucket_is_not_found(s3_server: S3Server) -> None:  # noqa: F811
    st = S3ObjectStore(
        f"absent-{secrets.token_hex(4)}",
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    try:
        with pytest.raises(NotFound, match="bucket does not exist") as err:
            await st.put("k", b"x")
        assert not isinstance(err.value, ObjectNotFound)
    finally:
        await st.close()
