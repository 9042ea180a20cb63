"""An object store whose small writes become durable together (group fsync).

A tree build writes many small objects (directory pages), and on a local
disk each ``put`` is a file fsync plus a directory fsync, one after the
other: 100,000 files in 100 directories were ~500 of them, most of a
finish-commit's time. ``GroupedWrites.put`` only writes a temporary file
(no fsync; the object does not exist under its name yet, so a crash leaves
no half-written object that a later ``touch`` would take for a good one);
``sync`` fsyncs them all concurrently, renames them into place and fsyncs
each directory once (``LocalObjectStore.publish``). Nothing may refer to a
grouped write in anything acknowledged before ``sync`` has returned.

Memory stays bounded: after ``limit`` staged writes they are synced, and the
next group starts. A read of a staged object syncs first. On stores that
have no staging (S3, GCS, Azure: a put is durable when it returns;
``durable=False`` local stores) ``put`` goes straight through.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from libs.objects.base import ObjectInfo, ObjectStore
from libs.objects.local import LocalObjectStore

# Staged writes synced together at most (temp file names held in memory).
GROUP_LIMIT = 4096


class GroupedWrites(ObjectStore):
    def __init__(self, store: ObjectStore, limit: int = GROUP_LIMIT) -> None:
        self.store = store
        self._limit = limit
        self._local = store if isinstance(store, LocalObjectStore) and store.durable else None
        self._staged: dict[str, Path] = {}

    def __len__(self) -> int:
        return len(self._staged)

    async def sync(self) -> None:
        """Make every write so far durable under its key."""
        staged, self._staged = self._staged, {}
        if staged and self._local is not None:
            await self._local.publish(staged)

    async def discard(self) -> None:
        """Drop the writes not synced yet (a failed build: nothing refers to them)."""
        staged, self._staged = self._staged, {}
        if staged and self._local is not None:
            await self._local.discard(staged.values())

    async def put(self, key: str, data: bytes) -> None:
        if self._local is None:
            await self.store.put(key, data)
            return
        if key in self._staged:
            return  # content-addressed: the same bytes are already staged
        self._staged[key] = await self._local.stage(key, data)
        if len(self._staged) >= self._limit:
            await self.sync()

    async def _synced(self, key: str) -> None:
        if key in self._staged:
            await self.sync()

    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        await self._synced(key)
        return await self.store.put_stream(key, blocks)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        await self._synced(key)
        return await self.store.get(key, offset, length)

    async def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        await self._synced(key)
        async for block in self.store.get_stream(key, offset, length, block_size):
            yield block

    async def exists(self, key: str) -> bool:
        return key in self._staged or await self.store.exists(key)

    async def stat(self, key: str) -> ObjectInfo:
        await self._synced(key)
        return await self.store.stat(key)

    async def delete(self, key: str) -> None:
        await self._synced(key)
        await self.store.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.store.list(prefix)

    async def touch(self, key: str) -> bool:
        # A staged object is as good as written (it will be, by ``sync``).
        return key in self._staged or await self.store.touch(key)
