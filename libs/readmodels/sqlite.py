"""The embedded document store: one SQLite file in WAL mode.

All SQLite work runs on one dedicated thread (a single-worker executor owning
the only connection), so the event loop never blocks on disk and the
connection is never shared between threads. ``batch()`` is one
``BEGIN IMMEDIATE … COMMIT`` holding the documents and the checkpoint rows.

``synchronous = NORMAL``: in WAL mode a commit is atomic and survives a crash
of the process; only a power loss or OS crash may lose the last few commits,
never corrupt the file and never split a transaction. Since the checkpoint is
written in the same transaction as the documents, what survives always
agrees: a lost commit loses its checkpoint too, and the projection re-applies
those events from JetStream. ``FULL`` would fsync every commit for no gain in
consistency. See docs/decisions/0003-read-models.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from libs.errors import FailedPrecondition, InvalidArgument, Unavailable
from libs.readmodels import sqlite_sql as sql
from libs.readmodels.base import Batch, Collection, Document, DocumentStore
from libs.readmodels.batch import BufferedBatch, Delete, Op, Put
from libs.readmodels.schema import (
    Query,
    Schema,
    build_query,
    check_key,
    encode_document,
    lookup,
    schemas_of,
)

T = TypeVar("T")


class SqliteDocumentStore(DocumentStore):
    def __init__(self, path: Path, page_size: int = 500) -> None:
        if page_size < 1:
            raise InvalidArgument(f"page_size must be at least 1, got {page_size}")
        self.path = Path(path)
        self.page_size = page_size
        self._schemas: dict[str, Schema] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="readmodel-sqlite")
        self._db: sqlite3.Connection | None = None  # touched only on the executor's thread
        self._closed = False

    # --- the SQLite thread -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute(sql.CHECKPOINTS_DDL)
            self._db = db
        return self._db

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._connect())
        except sqlite3.Error as e:
            raise Unavailable(f"read model {self.path}: {e}", path=str(self.path)) from e

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise FailedPrecondition(f"read model {self.path} is closed", path=str(self.path))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    @staticmethod
    def _transaction(db: sqlite3.Connection, body: Callable[[], None]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            body()
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # --- DocumentStore -----------------------------------------------------

    async def open(self, collections: Sequence[Collection]) -> None:
        schemas = [self._merged(s) for s in schemas_of(collections)]

        def create(db: sqlite3.Connection) -> None:
            def body() -> None:
                for s in schemas:
                    db.execute(sql.create_table(s))
                    cols = {r[1] for r in db.execute(f"PRAGMA table_xinfo({sql.table(s.name)})")}
                    for f in s.indexes:
                        if f"r.{f}" not in cols:
                            for stmt in sql.add_columns(s, f):
                                db.execute(stmt)
                        db.execute(sql.create_index(s, f))

            self._transaction(db, body)

        await self._run(create)
        self._schemas.update((s.name, s) for s in schemas)

    def _merged(self, s: Schema) -> Schema:
        """Opening a known collection again may add indexes, never remove them."""
        known = self._schemas.get(s.name)
        return (
            s if known is None else Schema(s.name, tuple(dict.fromkeys(known.indexes + s.indexes)))
        )

    async def get(self, collection: str, key: str) -> Document | None:
        schema = lookup(self._schemas, collection)
        k = check_key(key)

        def read(db: sqlite3.Connection) -> Document | None:
            row = db.execute(sql.get(schema.name), (k,)).fetchone()
            return None if row is None else dict(json.loads(row[0]))

        return await self._run(read)

    async def put(self, collection: str, key: str, doc: Document) -> None:
        schema = lookup(self._schemas, collection)
        k = check_key(key)
        text, _ = encode_document(schema, k, doc)

        def write(db: sqlite3.Connection) -> None:
            db.execute(sql.upsert(schema.name), (k, text))

        await self._run(write)

    async def delete(self, collection: str, key: str) -> None:
        schema = lookup(self._schemas, collection)
        k = check_key(key)

        def remove(db: sqlite3.Connection) -> None:
            db.execute(sql.delete(schema.name), (k,))

        await self._run(remove)

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
        """Keyset paging: each page is its own short read that resumes after the
        last row yielded, so nothing holds the whole result or a long read lock."""
        remaining = q.limit
        after: tuple[Any, ...] | None = None
        while remaining is None or remaining > 0:
            size = self.page_size if remaining is None else min(self.page_size, remaining)
            select = sql.page(q, after, size)

            def fetch(db: sqlite3.Connection, s: sql.Select = select) -> list[tuple[Any, ...]]:
                return db.execute(s.sql, s.params).fetchall()

            rows = await self._run(fetch)
            for row in rows:
                yield dict(json.loads(row[-1]))
            if len(rows) < size:
                return
            after = tuple(rows[-1][: select.width])
            if remaining is not None:
                remaining -= len(rows)

    async def count(self, collection: str, where: dict[str, Any] | None = None) -> int:
        schema = lookup(self._schemas, collection)
        select = sql.count(build_query(schema, where, None, False, None, None, None))

        def run(db: sqlite3.Connection) -> int:
            return int(db.execute(select.sql, select.params).fetchone()[0])

        return await self._run(run)

    def batch(self) -> Batch:
        return _SqliteBatch(self)

    async def _commit(self, ops: list[Op], checkpoints: Mapping[str, int]) -> None:
        def write(db: sqlite3.Connection) -> None:
            def body() -> None:
                # consecutive writes of one kind to one collection go in one executemany
                for (kind, coll), run in itertools.groupby(
                    ops, key=lambda o: (type(o), o.collection)
                ):
                    if kind is Put:
                        rows = [(o.key, o.text) for o in run if isinstance(o, Put)]
                        db.executemany(sql.upsert(coll), rows)
                    else:
                        db.executemany(sql.delete(coll), [(o.key,) for o in run])
                db.executemany(sql.UPSERT_CHECKPOINT, list(checkpoints.items()))

            self._transaction(db, body)

        await self._run(write)

    async def checkpoint(self, name: str) -> int:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"checkpoint name must be a non-empty string, got {name!r}")

        def read(db: sqlite3.Connection) -> int:
            row = db.execute(sql.SELECT_CHECKPOINT, (name,)).fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(read)

    async def drop(self, collections: Sequence[str] | None = None) -> None:
        """Empties collection tables (all, or the named ones) in one
        transaction; tables and indexes stay, so the store is usable at once."""
        if collections is not None:
            for name in collections:
                lookup(self._schemas, name)  # unknown collection -> InvalidArgument

        def clear(db: sqlite3.Connection) -> None:
            def body() -> None:
                if collections is None:
                    for (name,) in db.execute(sql.DOC_TABLES).fetchall():
                        db.execute(f'DELETE FROM "{name}"')
                    db.execute("DELETE FROM _checkpoints")
                else:
                    for name in collections:
                        db.execute(f"DELETE FROM {sql.table(name)}")

            self._transaction(db, body)

        await self._run(clear)

    async def reset_checkpoint(self, name: str) -> None:
        def clear(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM _checkpoints WHERE name = ?", (name,))

        await self._run(clear)

    async def close(self) -> None:
        if self._closed:
            return

        def shut(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA optimize")
            db.close()
            self._db = None

        try:
            if self._db is not None:
                await self._run(shut)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)


class _SqliteBatch(BufferedBatch):
    def __init__(self, store: SqliteDocumentStore) -> None:
        super().__init__(lambda: store._schemas)
        self._store = store

    async def commit(self, ops: list[Op], checkpoints: dict[str, int]) -> None:
        await self._store._commit(ops, checkpoints)


__all__ = ["Delete", "Put", "SqliteDocumentStore"]
