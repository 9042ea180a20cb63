"""Object store throughput: local directory and (when running) S3.

Measures raw ``put_stream``/``get_stream`` and content-addressed
``put_chunks``/``read_chunks``. Data is unique per 1 MiB block (a counter in
front of random bytes) so chunk dedup never flatters the numbers, except in
the explicit "again" case that measures the dedup path. Durable local writes
drop what they wrote from the page cache (docs/decisions/0002-object-store.md),
so the local reads that follow come from disk.

S3 runs when ``ctx.s3_endpoint`` is set; credentials come from
PACH_S3_ACCESS_KEY / PACH_S3_SECRET_KEY (``S3Server.env()`` gives them).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from libs.objects import LocalObjectStore, ObjectStore, S3ObjectStore, put_chunks, read_chunks
from tests.bench import BenchContext, Result

MiB = 1 << 20
LOCAL_BYTES = 1 << 30
S3_BYTES = 256 * MiB
PUT_FLOOR_MBS = 300.0
BLOCK = MiB


def _source(total: int, salt: bytes) -> Callable[[], AsyncIterator[bytes]]:
    base = memoryview(os.urandom(BLOCK))[len(salt) + 16 :]

    async def blocks() -> AsyncIterator[bytes]:
        for i in range(total // BLOCK):
            yield b"".join((salt, i.to_bytes(16, "big"), base))

    return blocks


async def _timed(fn: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    start = time.perf_counter()
    n = await fn()
    return n, time.perf_counter() - start


def _mbs(nbytes: int, seconds: float) -> float:
    return round(nbytes / MiB / max(seconds, 1e-9), 1)


async def _drain(stream: AsyncIterator[bytes]) -> int:
    n = 0
    async for block in stream:
        n += len(block)
    return n


async def _measure(store: ObjectStore, label: str, total: int, floor: float | None) -> list[Result]:
    results: list[Result] = []
    salt = secrets.token_bytes(8)
    note = f"{total // MiB} MiB in 1 MiB blocks"

    async def raw_put() -> int:
        return await store.put_stream("bench/raw", _source(total, salt + b"r")())

    n, secs = await _timed(raw_put)
    results.append(Result(f"objects.{label}.put_stream", _mbs(n, secs), "MB/s", floor, note=note))
    n, secs = await _timed(lambda: _drain(store.get_stream("bench/raw")))
    results.append(Result(f"objects.{label}.get_stream", _mbs(n, secs), "MB/s", note=note))
    await store.delete("bench/raw")

    refs_box: list[list[object]] = []

    async def chunk_put() -> int:
        refs = await put_chunks(store, _source(total, salt + b"c")())
        refs_box.append(list(refs))
        return sum(r.size for r in refs)

    n, secs = await _timed(chunk_put)
    results.append(
        Result(f"objects.{label}.put_chunks", _mbs(n, secs), "MB/s", floor, note=note + ", 8 MiB")
    )
    n, secs = await _timed(chunk_put)
    results.append(
        Result(f"objects.{label}.put_chunks_again", _mbs(n, secs), "MB/s", note="all chunks exist")
    )
    refs = await put_chunks(store, _source(total, salt + b"c")())
    n, secs = await _timed(lambda: _drain(read_chunks(store, refs)))
    results.append(Result(f"objects.{label}.read_chunks", _mbs(n, secs), "MB/s", note=note))
    for ref in refs:
        await store.delete(ref.key)
    return results


async def run(ctx: BenchContext) -> list[Result]:
    results = await _measure(
        LocalObjectStore(ctx.work_dir / "objects"), "local", LOCAL_BYTES, PUT_FLOOR_MBS
    )
    if ctx.s3_endpoint:
        store = S3ObjectStore(
            bucket="pach-bench",
            endpoint_url=ctx.s3_endpoint,
            access_key=os.environ.get("PACH_S3_ACCESS_KEY", ""),
            secret_key=os.environ.get("PACH_S3_SECRET_KEY", ""),
            region=os.environ.get("PACH_S3_REGION", "us-east-1"),
        )
        try:
            await store.ensure_bucket()
            results += await _measure(store, "s3", S3_BYTES, None)
        finally:
            await store.close()
    return results
