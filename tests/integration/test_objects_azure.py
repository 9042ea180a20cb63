"""AzureObjectStore (PACH_OBJECT_BACKEND=azure) and chunking against a real
Azurite process: the same contract as the S3 and local backends (atomic
puts, streams staged as blocks, ranged reads, prefix listing in key order
across pages, typed errors), plus touch / delete_if_older as garbage
collection uses them. Skipped only when Azurite is not installed
(``make test-deps``)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from libs.config import Config
from libs.errors import (
    InvalidArgument,
    NotFound,
    ObjectNotFound,
    PermissionDenied,
    Unavailable,
)
from libs.objects import (
    AzureObjectStore,
    ObjectInfo,
    chunk_key,
    open_object_store,
    put_chunks,
    read_chunks,
)
from tests.servers.cloud import AZURE_ACCOUNT, AZURE_KEY, AZURITE, AzureEmulator, start_azurite

pytestmark = pytest.mark.skipif(
    not AZURITE.exists(), reason="Azurite is not installed (make test-deps)"
)

CONTAINER = "pach-objects"
BLOCK = 1 << 20


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureEmulator]:
    server = start_azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield server
    finally:
        server.stop()


def make_store(server: AzureEmulator, prefix: str, **kwargs: Any) -> AzureObjectStore:
    return AzureObjectStore(
        CONTAINER,
        account=AZURE_ACCOUNT,
        key=AZURE_KEY,
        endpoint=server.endpoint,
        prefix=prefix,
        **kwargs,
    )


@pytest.fixture
async def store(azurite: AzureEmulator) -> AsyncIterator[AzureObjectStore]:
    st = make_store(azurite, f"t-{secrets.token_hex(4)}", block_size=BLOCK, list_page_size=3)
    await st.ensure_container()
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
async def raw(azurite: AzureEmulator) -> AsyncIterator[ContainerClient]:
    credential = {"account_name": AZURE_ACCOUNT, "account_key": AZURE_KEY}
    async with BlobServiceClient(azurite.endpoint, credential=credential) as svc:
        yield svc.get_container_client(CONTAINER)


async def blocks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_put_get_stat_exists_delete(store: AzureObjectStore) -> None:
    await store.put("a/b", b"hello")
    assert await store.get("a/b") == b"hello"
    assert await store.stat("a/b") == ObjectInfo("a/b", 5)
    assert abs((await store.stat("a/b")).modified - time.time()) < 60
    assert await store.exists("a/b")
    await store.put("a/b", b"replaced")  # overwrite
    assert await store.get("a/b") == b"replaced"
    await store.delete("a/b")
    assert not await store.exists("a/b")
    await store.delete("a/b")  # absent: not an error


async def test_missing_key(store: AzureObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="nope"):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        [b async for b in store.get_stream("nope", 0, 0)]
    with pytest.raises(ObjectNotFound):
        [b async for b in store.get_stream("nope", 10)]
    with pytest.raises(ObjectNotFound):
        await store.stat("nope")


async def test_small_stream_is_a_single_put(store: AzureObjectStore, raw: ContainerClient) -> None:
    data = os.urandom(1000)
    assert await store.put_stream("small", blocks_of(data, 100)) == 1000
    blocks = await raw.get_blob_client(f"{store.prefix}small").get_block_list("all")
    assert blocks == ([], [])  # Put Blob: no block list
    assert await store.get("small") == data


async def test_empty_stream(store: AzureObjectStore) -> None:
    assert await store.put_stream("empty", blocks_of(b"", 1)) == 0
    assert await store.get("empty") == b""
    assert await store.get("empty", 5) == b""
    assert await store.stat("empty") == ObjectInfo("empty", 0)


async def test_a_big_stream_goes_up_as_blocks(
    store: AzureObjectStore, raw: ContainerClient
) -> None:
    data = os.urandom(BLOCK * 3 + 12345)
    assert await store.put_stream("big", blocks_of(data, 300_000)) == len(data)
    committed, uncommitted = await raw.get_blob_client(f"{store.prefix}big").get_block_list("all")
    assert [b.size for b in committed] == [BLOCK, BLOCK, BLOCK, 12345]
    assert uncommitted == []
    assert await store.get("big") == data
    blocks = [b async for b in store.get_stream("big", block_size=1 << 20)]
    assert all(0 < len(b) <= 1 << 20 for b in blocks)
    assert b"".join(blocks) == data
    # pieces of the SDK's 4 MiB reads are cut to the block size asked for
    odd = [b async for b in store.get_stream("big", 3, block_size=777_777)]
    assert all(len(b) == 777_777 for b in odd[:-1]) and b"".join(odd) == data[3:]


async def test_a_failed_stream_leaves_no_object_and_keeps_the_old_one(
    store: AzureObjectStore,
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield os.urandom(BLOCK * 2 + 1)
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError, match="producer failed"):
        await store.put_stream("broken", failing())
    assert not await store.exists("broken")
    assert [i async for i in store.list()] == []
    await store.put("kept", b"old")
    with pytest.raises(RuntimeError, match="producer failed"):
        await store.put_stream("kept", failing())
    assert await store.get("kept") == b"old"


async def test_ranged_get(store: AzureObjectStore) -> None:
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


async def test_list_by_prefix_in_key_order_across_pages(store: AzureObjectStore) -> None:
    keys = ["a/b", "a-c", "a0", "ab", "a/a/z", "b", "a/b0", "a.x"]
    await asyncio.gather(*(store.put(k, b"x" * i) for i, k in enumerate(keys)))
    listed = [i async for i in store.list()]  # page size 3: several pages
    assert [i.key for i in listed] == sorted(keys)
    assert {i.key: i.size for i in listed} == {k: n for n, k in enumerate(keys)}
    assert [i.key async for i in store.list("a/")] == ["a/a/z", "a/b", "a/b0"]
    assert [i.key async for i in store.list("zz")] == []


async def test_prefixes_isolate_stores(azurite: AzureEmulator) -> None:
    one = make_store(azurite, f"iso-{secrets.token_hex(4)}")
    two = make_store(azurite, f"iso-{secrets.token_hex(4)}/")
    try:
        await one.ensure_container()
        await one.put("k", b"1")
        await two.put("k", b"2")
        assert await one.get("k") == b"1"
        assert [i.key async for i in two.list()] == ["k"]
    finally:
        await one.close()
        await two.close()


async def test_bad_keys_are_rejected(store: AzureObjectStore) -> None:
    for key in ["", "/abs", "a/../b", "a//b", "a\x00"]:
        with pytest.raises(InvalidArgument):
            await store.put(key, b"x")
    with pytest.raises(InvalidArgument, match="bytes"):
        await store.put_stream("s", blocks_of("text", 2))  # type: ignore[arg-type]
    assert [i async for i in store.list()] == []


async def test_chunks_on_azure(store: AzureObjectStore) -> None:
    piece = os.urandom(64 << 10)
    data = piece * 3 + os.urandom(1000)
    refs = await put_chunks(store, blocks_of(data, 10_000), chunk_size=64 << 10)
    assert len(refs) == 4 and refs[0] == refs[1] == refs[2]
    assert [i.key async for i in store.list("chunks/")] == sorted({chunk_key(r.hash) for r in refs})
    got = b"".join([b async for b in read_chunks(store, refs, (64 << 10) - 10, 100)])
    assert got == data[(64 << 10) - 10 : (64 << 10) + 90]


# --- modification times, touch and delete_if_older (garbage collection) -------


async def test_touch_renews_the_time_and_reports_absence(store: AzureObjectStore) -> None:
    await store.put("chunks/ab/x", b"data")
    before = (await store.stat("chunks/ab/x")).modified
    await asyncio.sleep(1.1)  # Last-Modified has whole seconds
    assert await store.touch("chunks/ab/x") is True
    touched = (await store.stat("chunks/ab/x")).modified
    assert touched > before
    assert await store.get("chunks/ab/x") == b"data"  # content untouched
    assert await store.touch("chunks/ab/missing") is False
    assert not await store.exists("chunks/ab/missing")  # touch made nothing


async def test_delete_if_older_spares_recent_objects(store: AzureObjectStore) -> None:
    await store.put("d/x", b"1")
    modified = (await store.stat("d/x")).modified
    assert await store.delete_if_older("d/x", modified) is False  # not older
    assert await store.exists("d/x")
    assert await store.delete_if_older("d/x", modified + 1) is True
    assert not await store.exists("d/x")
    assert await store.delete_if_older("d/x", time.time() + 60) is False  # absent


async def test_a_touch_between_stat_and_delete_saves_the_object(
    store: AzureObjectStore, raw: ContainerClient
) -> None:
    """delete_if_older deletes only the blob it saw: a write in between (a
    touch from a put_chunks reusing it) changes the ETag and wins."""
    await store.put("r/c", b"reused")
    cutoff = (await store.stat("r/c")).modified + 1
    blob = raw.get_blob_client(f"{store.prefix}r/c")
    real = blob.get_blob_properties

    async def stat_then_touch(**kwargs: Any) -> Any:
        props = await real(**kwargs)
        assert await store.touch("r/c")
        return props

    original = store._blob

    def patched(key: str) -> Any:
        client = original(key)
        client.get_blob_properties = stat_then_touch
        return client

    store._blob = patched  # type: ignore[method-assign]
    try:
        assert await store.delete_if_older("r/c", cutoff) is False
    finally:
        store._blob = original  # type: ignore[method-assign]
    assert await store.get("r/c") == b"reused"


# --- errors --------------------------------------------------------------------


async def test_a_wrong_key_is_permission_denied(azurite: AzureEmulator) -> None:
    wrong = AzureObjectStore(
        CONTAINER,
        account=AZURE_ACCOUNT,
        key="d3Jvbmcga2V5IHdyb25nIGtleQ==",
        endpoint=azurite.endpoint,
        max_attempts=1,
    )
    try:
        with pytest.raises(PermissionDenied, match="access denied"):
            await wrong.put("k", b"x")
        with pytest.raises(PermissionDenied):
            [i async for i in wrong.list()]
    finally:
        await wrong.close()


async def test_missing_container_is_not_found(azurite: AzureEmulator) -> None:
    st = AzureObjectStore(
        f"absent-{secrets.token_hex(4)}",
        account=AZURE_ACCOUNT,
        key=AZURE_KEY,
        endpoint=azurite.endpoint,
    )
    try:
        with pytest.raises(NotFound, match=r"container .* does not exist") as err:
            await st.put("k", b"x")
        assert not isinstance(err.value, ObjectNotFound)
        with pytest.raises(NotFound, match="does not exist"):
            [i async for i in st.list()]
    finally:
        await st.close()


async def test_unreachable_server_is_unavailable() -> None:
    dead = AzureObjectStore(
        CONTAINER,
        account=AZURE_ACCOUNT,
        key=AZURE_KEY,
        endpoint=f"http://127.0.0.1:9/{AZURE_ACCOUNT}",
        max_attempts=1,
    )
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="cannot reach"):
            await dead.get("k")
        assert time.monotonic() - started < 10
    finally:
        await dead.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "needs PACH_AZURE_CONTAINER, PACH_AZURE_ACCOUNT, PACH_AZURE_KEY"),
        ({"PACH_AZURE_CONTAINER": "c1x", "PACH_AZURE_ACCOUNT": "acct"}, "needs PACH_AZURE_KEY"),
        (
            {
                "PACH_AZURE_CONTAINER": "Bad_Name",
                "PACH_AZURE_ACCOUNT": "a1b",
                "PACH_AZURE_KEY": "a2V5",
            },
            "container name must be",
        ),
        (
            {
                "PACH_AZURE_CONTAINER": "ok-name",
                "PACH_AZURE_ACCOUNT": "No!",
                "PACH_AZURE_KEY": "a2V5",
            },
            "account name must be",
        ),
        (
            {
                "PACH_AZURE_CONTAINER": "ok-name",
                "PACH_AZURE_ACCOUNT": "acct",
                "PACH_AZURE_KEY": "#",
            },
            "account key must be",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(env: dict[str, str], message: str) -> None:
    cfg = Config.from_env("pfs", {"PACH_OBJECT_BACKEND": "azure", **env})
    with pytest.raises(InvalidArgument, match=message):
        open_object_store(cfg.objects)


async def test_settings_from_the_environment_reach_the_store(
    azurite: AzureEmulator, tmp_path: Path
) -> None:
    env = {
        "PACH_OBJECT_BACKEND": "azure",
        "PACH_AZURE_CONTAINER": CONTAINER,
        "PACH_AZURE_PREFIX": f"env-{secrets.token_hex(4)}",
        "PACH_DATA_DIR": str(tmp_path),
        **azurite.env(),
    }
    cfg = Config.from_env("pfs", env)
    assert "PACH_AZURE_KEY" not in repr(cfg) and AZURE_KEY not in repr(cfg)
    st = open_object_store(cfg.objects)
    assert isinstance(st, AzureObjectStore)
    try:
        await st.ensure_container()
        await st.put("k", b"v")
        assert [i.key async for i in st.list()] == ["k"]
    finally:
        await st.close()
