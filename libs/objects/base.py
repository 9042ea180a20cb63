"""The object store interface: content lives here, never in NATS.

Keys are plain strings such as ``chunks/ab/abcdef…`` or ``trees/…``; the
content-addressed helpers in ``libs.objects.chunking`` choose them. Every
backend streams: ``put_stream`` takes an async iterator of byte blocks and
``get_stream`` yields blocks, so no call holds a whole object in memory.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from libs.errors import ObjectNotFound


@dataclass(frozen=True)
class ObjectInfo:
    """An object's key, size and last modification (unix seconds, the
    store's clock; S3 gives whole seconds). ``modified`` is left out of
    comparisons: an object compares by what it is, not when it was written."""

    key: str
    size: int
    modified: float = field(default=0.0, compare=False)


class ObjectStore(abc.ABC):
    """Async object store. Implementations: ``LocalObjectStore``, ``S3ObjectStore``,
    ``AzureObjectStore``."""

    @abc.abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (readers see all or nothing)."""

    @abc.abstractmethod
    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        """Store a stream under ``key`` atomically; returns the byte count."""

    @abc.abstractmethod
    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Read ``length`` bytes (all when None) from ``offset``; ObjectNotFound if absent."""

    @abc.abstractmethod
    def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yield the object in blocks of at most ``block_size`` bytes."""

    @abc.abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """ObjectNotFound if absent."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Deleting an absent key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, streamed."""

    @abc.abstractmethod
    async def touch(self, key: str) -> bool:
        """Set the object's modification time to now; False (and nothing
        written) when it is absent. A write that finds its content-addressed
        object already stored touches it, so garbage collection, which spares
        objects modified after its cutoff, does not delete it under the write."""

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Delete the object unless it was modified at or after ``cutoff``
        (unix seconds); True when deleted. Absent: False.

        This default checks, then deletes: a ``touch`` between the two is
        lost. Backends that can do better (``LocalObjectStore``) override it."""
        try:
            info = await self.stat(key)
        except ObjectNotFound:
            return False
        if info.modified >= cutoff:
            return False
        await self.delete(key)
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""
