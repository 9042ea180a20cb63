"""The cluster document store: MongoDB through motor.

One Mongo collection per collection, documents stored as
``{"_id": key, "d": document}``, an index ``(d.f, _id)`` per indexed field,
checkpoints in ``_checkpoints`` as ``{"_id": name, "seq": n}``.

``batch()`` is a multi-document transaction when the server supports them (a
replica set or a sharded cluster). Otherwise it is ordered bulk writes, one per
run of writes to one collection, with the checkpoint written last: a crash in
the middle leaves some documents newer than the checkpoint, and the projection
re-applies those events on restart, which is harmless because projection
handlers set state rather than increment it (see
docs/decisions/0003-read-models.md).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pymongo import DeleteOne, ReplaceOne
from pymongo.errors import ConnectionFailure

from libs.errors import InvalidArgument, Unavailable
from libs.readmodels.base import Batch, Collection, Document, DocumentStore
from libs.readmodels.batch import BufferedBatch, Op, Put
from libs.readmodels.mongo_filters import ASCENDING, mongo_filter, mongo_sort, path
from libs.readmodels.schema import (
    Query,
    Schema,
    build_query,
    check_key,
    encode_document,
    lookup,
    schemas_of,
)

CHECKPOINTS = "_checkpoints"


@contextmanager
def _unavailable(db_name: str) -> Iterator[None]:
    try:
        yield
    except ConnectionFailure as e:
        raise Unavailable(f"read model database {db_name}: {e}", database=db_name) from e


class MongoDocumentStore(DocumentStore):
    def __init__(
        self, client: Any, db_name: str, page_size: int = 500, owns_client: bool = False
    ) -> None:
        if page_size < 1:
            raise InvalidArgument(f"page_size must be at least 1, got {page_size}")
        self._client = client
        self._db_name = db_name
        self._db = client[db_name]
        self.page_size = page_size
        self._owns_client = owns_client
        self._schemas: dict[str, Schema] = {}
        self._transactions: bool | None = None

    async def _supports_transactions(self) -> bool:
        if self._transactions is None:
            try:
                hello = await self._client.admin.command("hello")
            except ConnectionFailure as e:
                raise Unavailable(f"read model database {self._db_name}: {e}") from e
            except Exception:  # a server or mock without 'hello': no transactions
                hello = {}
            self._transactions = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
        return self._transactions

    async def _create_indexes(self, schemas: Sequence[Schema]) -> None:
        for s in schemas:
            for f in s.indexes:
                await self._db[s.name].create_index(
                    [(path(f), ASCENDING), ("_id", ASCENDING)], name=f"ix_{f}"
                )

    async def open(self, collections: Sequence[Collection]) -> None:
        schemas = []
        for s in schemas_of(collections):
            known = self._schemas.get(s.name)
            merged = s.indexes if known is None else tuple(dict.fromkeys(known.indexes + s.indexes))
            schemas.append(Schema(s.name, merged))
        with _unavailable(self._db_name):
            await self._supports_transactions()
            await self._create_indexes(schemas)
        self._schemas.update((s.name, s) for s in schemas)

    async def get(self, collection: str, key: str) -> Document | None:
        schema = lookup(self._schemas, collection)
        k = check_key(key)
        with _unavailable(self._db_name):
            raw = await self._db[schema.name].find_one({"_id": k}, {"d": 1})
        return None if raw is None else dict(raw["d"])

    async def put(self, collection: str, key: str, doc: Document) -> None:
        schema = lookup(self._schemas, collection)
        k = check_key(key)
        _, normal = encode_document(schema, k, doc)
        with _unavailable(self._db_name):
            await self._db[schema.name].replace_one(
                {"_id": k}, {"_id": k, "d": normal}, upsert=True
            )

    async def delete(self, collection: str, key: str) -> None:
        schema = lookup(self._schemas, collection)
        k = check_key(key)
        with _unavailable(self._db_name):
            await self._db[schema.name].delete_one({"_id": k})

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
        schema = lookup(self._schemas, collection)
        q = build_query(schema, where, order_by, descending, start, end, limit)
        return self._stream(q)

    async def _stream(self, q: Query) -> AsyncIterator[Document]:
        """A server-side cursor fetched ``page_size`` documents at a time."""
        if q.limit == 0:  # Mongo reads limit 0 as "no limit"
            return
        cursor = self._db[q.schema.name].find(mongo_filter(q), {"d": 1})
        cursor = cursor.sort(mongo_sort(q)).batch_size(self.page_size)
        if q.limit is not None:
            cursor = cursor.limit(q.limit)
        with _unavailable(self._db_name):
            async for raw in cursor:
                yield dict(raw["d"])

    async def count(self, collection: str, where: dict[str, Any] | None = None) -> int:
        schema = lookup(self._schemas, collection)
        q = build_query(schema, where, None, False, None, None, None)
        with _unavailable(self._db_name):
            return int(await self._db[schema.name].count_documents(mongo_filter(q)))

    def batch(self) -> Batch:
        return _MongoBatch(self)

    async def _write(
        self, ops: list[Op], checkpoints: Mapping[str, int], session: Any = None
    ) -> None:
        extra = {} if session is None else {"session": session}
        for coll, run in itertools.groupby(ops, key=lambda o: o.collection):
            requests: list[Any] = [
                ReplaceOne({"_id": o.key}, {"_id": o.key, "d": o.doc}, upsert=True)
                if isinstance(o, Put)
                else DeleteOne({"_id": o.key})
                for o in run
            ]
            await self._db[coll].bulk_write(requests, ordered=True, **extra)
        if checkpoints:
            marks = [
                ReplaceOne({"_id": n}, {"_id": n, "seq": seq}, upsert=True)
                for n, seq in checkpoints.items()
            ]
            await self._db[CHECKPOINTS].bulk_write(marks, ordered=True, **extra)

    async def _commit(self, ops: list[Op], checkpoints: Mapping[str, int]) -> None:
        with _unavailable(self._db_name):
            if not await self._supports_transactions():
                await self._write(ops, checkpoints)
                return
            async with await self._client.start_session() as session:

                async def body(s: Any) -> None:
                    await self._write(ops, checkpoints, s)

                await session.with_transaction(body)

    async def checkpoint(self, name: str) -> int:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"checkpoint name must be a non-empty string, got {name!r}")
        with _unavailable(self._db_name):
            raw = await self._db[CHECKPOINTS].find_one({"_id": name})
        return 0 if raw is None else int(raw["seq"])

    async def drop(self, collections: Sequence[str] | None = None) -> None:
        """Drops every collection of this database (or the named ones), then
        recreates the indexes of the collections opened so far, so the store
        is usable right away."""
        if collections is not None:
            for name in collections:
                lookup(self._schemas, name)  # unknown collection -> InvalidArgument
        with _unavailable(self._db_name):
            names = await self._db.list_collection_names() if collections is None else collections
            for name in names:
                await self._db.drop_collection(name)
            await self._create_indexes(list(self._schemas.values()))

    async def reset_checkpoint(self, name: str) -> None:
        with _unavailable(self._db_name):
            await self._db[CHECKPOINTS].delete_one({"_id": name})

    async def close(self) -> None:
        if self._owns_client:
            self._client.close()


class _MongoBatch(BufferedBatch):
    def __init__(self, store: MongoDocumentStore) -> None:
        super().__init__(lambda: store._schemas)
        self._store = store

    async def commit(self, ops: list[Op], checkpoints: dict[str, int]) -> None:
        await self._store._commit(ops, checkpoints)
