"""put-file / get-file byte path (libs.filedata) into a durable local store.

Peers measured in the same run on the same disk: ``cp`` of the same 1 GiB
file for put, ``cat file > /dev/null`` for get. Data is unique per 1 MiB
block so chunk dedup never flatters the numbers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from libs.filedata import FileWriter, read_refs
from libs.objects import LocalObjectStore
from tests.bench import BenchContext, Result

MiB = 1 << 20
BIG = 1 << 30
SMALL_FILES = 100_000
SMALL_SIZE = 1024


def _mbs(nbytes: int, seconds: float) -> float:
    return round(nbytes / MiB / max(seconds, 1e-9), 1)


def _write_source(path: Path) -> None:
    base = os.urandom(MiB - 16)
    with path.open("wb") as f:
        for i in range(BIG // MiB):
            f.write(i.to_bytes(16, "big") + base)
        f.flush()
        os.fsync(f.fileno())


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def _file_blocks(path: Path) -> AsyncIterator[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        while block := await asyncio.to_thread(os.read, fd, 4 * MiB):
            yield block
    finally:
        os.close(fd)


async def _peer(cmd: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(cmd)
    if await proc.wait() != 0:
        raise RuntimeError(f"peer command failed: {cmd}")
    return time.perf_counter() - start


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "filedata"
    work.mkdir(parents=True, exist_ok=True)
    src = work / "source.bin"
    await asyncio.to_thread(_write_source, src)
    store = LocalObjectStore(work / "objects")
    results: list[Result] = []
    note = "1 GiB file, 4 MiB blocks, durable local store"

    secs = await _peer(f"cp {src} {work / 'copy.bin'} && sync {work / 'copy.bin'}")
    results.append(Result("peer: cp 1 GiB (+sync)", _mbs(BIG, secs), "MB/s", note="same file"))
    os.unlink(work / "copy.bin")

    writer = FileWriter(store)
    start = time.perf_counter()
    refs = await writer.write_file(_file_blocks(src))
    secs = time.perf_counter() - start
    results.append(Result("filedata.put 1 GiB", _mbs(BIG, secs), "MB/s", 250.0, note=note))

    _drop_cache(src)  # our chunks were dropped from the page cache when written
    secs = await _peer(f"cat {src} > /dev/null")
    results.append(Result("peer: cat 1 GiB > /dev/null", _mbs(BIG, secs), "MB/s", note="cold"))
    start = time.perf_counter()
    n = 0
    async for block in read_refs(store, refs):
        n += len(block)
    secs = time.perf_counter() - start
    assert n == BIG
    results.append(Result("filedata.get 1 GiB", _mbs(n, secs), "MB/s", 500.0, note=note))

    salt = secrets.token_bytes(8)
    body = os.urandom(SMALL_SIZE - 16)

    async def one(i: int) -> AsyncIterator[bytes]:
        yield salt + i.to_bytes(8, "big") + body

    writer = FileWriter(store)
    start = time.perf_counter()
    for i in range(SMALL_FILES):
        await writer.write_file(one(i))
    await writer.flush()
    secs = time.perf_counter() - start
    results.append(
        Result(
            "filedata.put 100k x 1 KiB (packed)",
            round(SMALL_FILES / secs, 1),
            "files/s",
            5000.0,
            note="one writer, flush at the end",
        )
    )
    return results
