"""An object store view that keeps recently read tree objects in memory.

Every datum of a job reads the same input trees: their root, the pages of
a large directory, the nodes above its file. Tree objects are named by the
hash of their content and never change, so a worker keeps the last ones it
read (``TREE_CACHE_BYTES`` of them at most) instead of reading them again
for each datum. Everything else goes straight to the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator

from libs.objects import ObjectStore
from libs.objects.base import ObjectInfo

TREE_CACHE_BYTES = 16 << 20
_LARGEST = 1 << 20  # a bigger object is not kept
_PREFIX = "trees/"


class TreeCachingStore(ObjectStore):
    def __init__(self, store: ObjectStore, limit: int = TREE_CACHE_BYTES) -> None:
        self._store = store
        self._limit = limit
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self.hits = 0

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if not key.startswith(_PREFIX) or offset or length is not None:
            return await self._store.get(key, offset, length)
        data = self._kept.get(key)
        if data is not None:
            self._kept.move_to_end(key)
            self.hits += 1
            return data
        data = await self._store.get(key)
        if len(data) <= _LARGEST:
            self._kept[key] = data
            self._bytes += len(data)
            while self._bytes > self._limit:
                _, dropped = self._kept.popitem(last=False)
                self._bytes -= len(dropped)
        return data

    async def put(self, key: str, data: bytes) -> None:
        await self._store.put(key, data)

    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        return await self._store.put_stream(key, blocks)

    def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        return self._store.get_stream(key, offset, length, block_size)

    async def exists(self, key: str) -> bool:
        return await self._store.exists(key)

    async def stat(self, key: str) -> ObjectInfo:
        return await self._store.stat(key)

    async def delete(self, key: str) -> None:
        dropped = self._kept.pop(key, None)
        if dropped is not None:
            self._bytes -= len(dropped)
        await self._store.delete(key)

    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        return self._store.list(prefix)

    async def touch(self, key: str) -> bool:
        return await self._store.touch(key)

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        deleted = await self._store.delete_if_older(key, cutoff)
        if deleted:
            dropped = self._kept.pop(key, None)
            if dropped is not None:
                self._bytes -= len(dropped)
        return deleted

    async def close(self) -> None:
        self._kept.clear()
        self._bytes = 0


__all__ = ["TREE_CACHE_BYTES", "TreeCachingStore"]
