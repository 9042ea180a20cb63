"""Byte streams between two processes as parts in the object store.

Bytes never travel through NATS (docs/decisions/0012-admin-service.md): a
stream too big for one message (an extract, a restore's input) is cut into
parts of ``PART_BYTES``, each stored under ``transfers/<kind>/<id>/<n>``,
and only the keys travel on the bus. The reader streams each part and
deletes it. Parts are scratch: nothing else reads them, garbage collection
(which sweeps ``chunks/`` and ``trees/``) and extracts leave ``transfers/``
alone, and a local store writes them without fsync (a crash loses the
transfer, which the client then repeats).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from libs.config import ObjectStoreConfig
from libs.errors import ObjectNotFound
from libs.objects import LocalObjectStore, ObjectStore, open_object_store

PREFIX = "transfers/"
PART_BYTES = 4 << 20
READ_BLOCK = 1 << 20


def open_transfer_store(cfg: ObjectStoreConfig) -> ObjectStore:
    """The object store ``cfg`` names, for scratch parts (no fsync locally)."""
    if cfg.backend == "local":
        return LocalObjectStore(cfg.local_root, durable=False)
    return open_object_store(cfg)


def part_key(kind: str, transfer_id: str, number: int) -> str:
    """The key of part ``number`` (from 1) of transfer ``transfer_id``."""
    return f"{PREFIX}{kind}/{transfer_id}/{number:08d}"


def is_transfer(key: str) -> bool:
    return key.startswith(PREFIX)


async def write_parts(
    store: ObjectStore,
    kind: str,
    transfer_id: str,
    blocks: AsyncIterable[bytes],
    on_part: Callable[[str], Awaitable[None]],
    *,
    part_bytes: int = PART_BYTES,
) -> int:
    """Cut ``blocks`` into parts of about ``part_bytes``, store each and
    hand its key to ``on_part`` (in order; awaited before the next part is
    cut, which is the writer's back pressure). Returns the part count."""
    pending: list[bytes] = []
    size = 0
    number = 0

    async def flush() -> None:
        nonlocal pending, size, number
        number += 1
        key = part_key(kind, transfer_id, number)
        await store.put(key, b"".join(pending))
        pending, size = [], 0
        await on_part(key)

    async for block in blocks:
        if not block:
            continue
        pending.append(block)
        size += len(block)
        if size >= part_bytes:
            await flush()
    if pending:
        await flush()
    return number


async def read_part(store: ObjectStore, key: str, *, delete: bool = True) -> AsyncIterator[bytes]:
    """The part's bytes in blocks of at most ``READ_BLOCK``; the part is
    deleted once read (or when the reader stops early)."""
    try:
        async for block in store.get_stream(key, block_size=READ_BLOCK):
            yield block
    finally:
        if delete:
            await delete_parts(store, [key])


async def delete_parts(store: ObjectStore, keys: list[str]) -> None:
    """Delete parts, quietly (scratch that is gone already is fine)."""
    for key in keys:
        with contextlib.suppress(Exception):
            await store.delete(key)


async def sweep(store: ObjectStore, older_than_s: float) -> int:
    """Delete parts left by transfers that died (older than ``older_than_s``);
    the count deleted."""
    cutoff = time.time() - older_than_s
    stale = [info.key async for info in store.list(PREFIX) if info.modified < cutoff]
    for key in stale:
        with contextlib.suppress(ObjectNotFound):
            await store.delete(key)
    return len(stale)
