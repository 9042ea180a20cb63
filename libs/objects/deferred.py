"""An object store that holds small writes back until ``flush``.

Several tree builds in a row (pfs's group commit of put-files, each commit's
tree on top of the one before) write a handful of small objects each, and
on a local disk every write is a file fsync plus a directory fsync, one after
the other. ``DeferredWrites`` keeps those writes in memory (reads see them),
and ``flush`` writes them all at once, concurrently, so their syncs overlap.
Nothing a caller acknowledges may depend on a deferred write before
``flush`` has returned: that is the point at which they are durable.

It is meant for one short-lived batch of small objects (tree nodes): it
holds every deferred write in memory until ``flush``. Streams, deletes and
listings go straight to the store underneath.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

from libs.objects.base import ObjectInfo, ObjectStore

# At most this many writes of a flush are in flight at once.
FLUSH_CONCURRENCY = 16


class DeferredWrites(ObjectStore):
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._held: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._held)

    async def flush(self) -> None:
        """Write every held object; raises the first write's error (the
        others were still attempted). Held objects are forgotten either way:
        a caller that fails here fails its whole batch."""
        held, self._held = self._held, {}
        limit = asyncio.Semaphore(FLUSH_CONCURRENCY)

        async def one(key: str, data: bytes) -> None:
            async with limit:
                await self.store.put(key, data)

        results = await asyncio.gather(
            *(one(k, d) for k, d in held.items()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def put(self, key: str, data: bytes) -> None:
        self._held[key] = bytes(data)

    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        self._held.pop(key, None)
        return await self.store.put_stream(key, blocks)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self._held.get(key)
        if data is None:
            return await self.store.get(key, offset, length)
        end = len(data) if length is None else min(len(data), offset + length)
        return data[offset:end]

    async def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        data = self._held.get(key)
        if data is None:
            async for block in self.store.get_stream(key, offset, length, block_size):
                yield block
            return
        end = len(data) if length is None else min(len(data), offset + length)
        for start in range(offset, end, block_size):
            yield data[start : min(end, start + block_size)]

    async def exists(self, key: str) -> bool:
        return key in self._held or await self.store.exists(key)

    async def stat(self, key: str) -> ObjectInfo:
        data = self._held.get(key)
        if data is None:
            return await self.store.stat(key)
        return ObjectInfo(key, len(data))

    async def delete(self, key: str) -> None:
        self._held.pop(key, None)
        await self.store.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self.store.list(prefix)

    async def touch(self, key: str) -> bool:
        # A held object is as good as written (it will be, by ``flush``).
        return key in self._held or await self.store.touch(key)
