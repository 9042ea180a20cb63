"""The read-model interface: a small document store for projections.

A document is a JSON-compatible ``dict``. Each collection declares the fields
it indexes (``Collection``); ``query`` filters by equality on indexed fields
and orders/ranges on one indexed field. A projection writes its documents and
its checkpoint (the last applied stream sequence) in one ``batch()``, so after
a crash the data and the checkpoint always agree.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

Document = dict[str, Any]


@dataclass(frozen=True)
class Collection:
    name: str
    indexes: Sequence[str] = field(default_factory=tuple)


class Batch(abc.ABC):
    """Writes gathered inside ``async with store.batch() as b:`` commit together
    on a clean exit and are all discarded if the block raises."""

    @abc.abstractmethod
    def put(self, collection: str, key: str, doc: Document) -> None: ...

    @abc.abstractmethod
    def delete(self, collection: str, key: str) -> None: ...

    @abc.abstractmethod
    def set_checkpoint(self, name: str, sequence: int) -> None: ...

    @abc.abstractmethod
    async def __aenter__(self) -> Batch: ...

    @abc.abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class DocumentStore(abc.ABC):
    @abc.abstractmethod
    async def open(self, collections: Sequence[Collection]) -> None:
        """Create tables/collections and indexes if missing. Idempotent."""

    @abc.abstractmethod
    async def get(self, collection: str, key: str) -> Document | None: ...

    @abc.abstractmethod
    async def put(self, collection: str, key: str, doc: Document) -> None: ...

    @abc.abstractmethod
    async def delete(self, collection: str, key: str) -> None: ...

    @abc.abstractmethod
    def query(
        self,
        collection: str,
        where: dict[str, Any] | None = None,
        order_by: str | None = None,
        descending: bool = False,
        start: Any = None,
        end: Any = None,
        limit: int | None = None,
    ) -> AsyncIterator[Document]:
        """Documents matching every ``where`` equality (indexed fields), ordered
        by ``order_by`` (an indexed field, or the key when None), restricted to
        ``start <= value < end`` on that field, streamed."""

    @abc.abstractmethod
    async def count(self, collection: str, where: dict[str, Any] | None = None) -> int: ...

    @abc.abstractmethod
    def batch(self) -> Batch: ...

    @abc.abstractmethod
    async def checkpoint(self, name: str) -> int:
        """The last sequence recorded by ``Batch.set_checkpoint`` (0 when none)."""

    @abc.abstractmethod
    async def drop(self, collections: Sequence[str] | None = None) -> None:
        """Remove every document and every checkpoint; with ``collections``,
        only the documents of those collections (checkpoints stay: see
        ``reset_checkpoint``). Several projections may share one store, so a
        projection rebuilding itself drops only its own collections."""

    @abc.abstractmethod
    async def reset_checkpoint(self, name: str) -> None:
        """Forget one checkpoint (it reads as 0 again)."""

    @abc.abstractmethod
    async def close(self) -> None: ...
