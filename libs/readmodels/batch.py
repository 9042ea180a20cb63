"""A batch that gathers checked writes in memory and hands them to its
backend's ``commit`` on a clean exit (nothing at all when the block raises).

Documents are independent of one another (no constraint spans two), so only
the last write of each document decides what it holds: the backend gets
that one write per document, grouped by collection. A projection catching
up after a restore rewrites the same documents again and again (a repo's
size after each of its commits, a commit's document when it starts and when
it finishes); each group of events then costs one write per document it
touched, not one per event."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

from libs.errors import FailedPrecondition
from libs.readmodels.base import Batch, Document
from libs.readmodels.schema import Schema, check_checkpoint, check_key, encode_document, lookup


@dataclass(frozen=True)
class Put:
    collection: str
    key: str
    text: str  # the document as JSON
    doc: Document  # the same, as a private copy


@dataclass(frozen=True)
class Delete:
    collection: str
    key: str


Op = Put | Delete


class BufferedBatch(Batch, abc.ABC):
    def __init__(self, schemas: Callable[[], Mapping[str, Schema]]) -> None:
        self._schemas = schemas
        self._ops: list[Op] = []
        self._checkpoints: dict[str, int] = {}
        self._state = "new"  # new -> open -> done

    def _check_open(self) -> None:
        if self._state != "open":
            raise FailedPrecondition("use a batch inside 'async with store.batch() as b:'")

    def put(self, collection: str, key: str, doc: Document) -> None:
        self._check_open()
        schema = lookup(self._schemas(), collection)
        k = check_key(key)
        text, normal = encode_document(schema, k, doc)
        self._ops.append(Put(schema.name, k, text, normal))

    def delete(self, collection: str, key: str) -> None:
        self._check_open()
        schema = lookup(self._schemas(), collection)
        self._ops.append(Delete(schema.name, check_key(key)))

    def set_checkpoint(self, name: str, sequence: int) -> None:
        self._check_open()
        n, seq = check_checkpoint(name, sequence)
        self._checkpoints[n] = seq

    async def __aenter__(self) -> BufferedBatch:
        if self._state != "new":
            raise FailedPrecondition("a batch can be entered only once")
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "done"
        ops, checkpoints = self._ops, self._checkpoints
        self._ops, self._checkpoints = [], {}
        if exc_type is None and (ops or checkpoints):
            await self.commit(coalesce(ops), checkpoints)

    @abc.abstractmethod
    async def commit(self, ops: list[Op], checkpoints: dict[str, int]) -> None:
        """Apply ``ops`` (at most one per document) and record ``checkpoints``."""


def coalesce(ops: list[Op]) -> list[Op]:
    """The last of ``ops`` for each document, puts before deletes within each
    collection, collections in the order first written."""
    last: dict[tuple[str, str], Op] = {}
    for op in ops:
        last[(op.collection, op.key)] = op
    kept = list(last.values())
    order = {c: i for i, c in enumerate(dict.fromkeys(op.collection for op in kept))}
    return sorted(kept, key=lambda op: (order[op.collection], isinstance(op, Delete)))
