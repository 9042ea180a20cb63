"""The object store interface: content lives here, never in NATS.

Keys are plain strings such as ``chunks/ab/abcdef…`` or ``trees/…``; the
content-addressed helpers in ``libs.objects.chunking`` choose them. Every
backend streams: ``put_stream`` takes an async iterator of byte blocks and
``get_stream`` yields blocks, so no call holds a whole object in memory.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(abc.ABC):
    """Async object store. Implementations: ``LocalObjectStore``, ``S3ObjectStore``."""

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

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""
