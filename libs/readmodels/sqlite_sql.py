"""The SQL text for the SQLite document store: tables, materialised index
columns, and keyset-paged queries.

A collection ``c`` is the table ``doc_c(k TEXT PRIMARY KEY, doc TEXT)`` with
the document as JSON. Each indexed field ``f`` is materialised as two VIRTUAL
generated columns over ``json_type``/``json_extract``:

- ``"r.f"``: the kind of the value (0 null/missing, 1 number, 2 string,
  3 boolean — see ``schema``'s order),
- ``"v.f"``: the value (0 for null, 0/1 for booleans),

with the index ``("r.f", "v.f", k)``. Ordering by ``(r, v, k)`` is the
documented order, and no kind ever meets another inside one ``v`` comparison,
so mixed kinds cannot crash or compare oddly. Generated columns can be added to
an existing table (``ALTER TABLE ADD COLUMN``) and the index is then built from
the stored JSON, so declaring a new index on an old collection just works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from libs.readmodels.schema import (
    RANK_BOOL,
    RANK_NULL,
    RANK_NUMBER,
    RANK_STRING,
    Query,
    Scalar,
    Schema,
    rank,
)

CHECKPOINTS_DDL = (
    "CREATE TABLE IF NOT EXISTS _checkpoints (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)"
)
UPSERT_CHECKPOINT = (
    "INSERT INTO _checkpoints(name, seq) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq"
)
SELECT_CHECKPOINT = "SELECT seq FROM _checkpoints WHERE name = ?"
DOC_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'doc\\_%' ESCAPE '\\'"
)


def table(name: str) -> str:
    return f'"doc_{name}"'  # names are checked by schema.Schema: letters, digits, _


def rank_col(f: str) -> str:
    return f'"r.{f}"'  # fields are checked dotted identifiers


def value_col(f: str) -> str:
    return f'"v.{f}"'


def create_table(schema: Schema) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table(schema.name)} (k TEXT PRIMARY KEY, doc TEXT NOT NULL)"
    )


def add_columns(schema: Schema, f: str) -> list[str]:
    path = f"'$.{f}'"
    kind = (
        f"CASE json_type(doc, {path}) WHEN 'integer' THEN {RANK_NUMBER} "
        f"WHEN 'real' THEN {RANK_NUMBER} WHEN 'text' THEN {RANK_STRING} "
        f"WHEN 'true' THEN {RANK_BOOL} WHEN 'false' THEN {RANK_BOOL} ELSE {RANK_NULL} END"
    )
    t = table(schema.name)
    return [
        f"ALTER TABLE {t} ADD COLUMN {rank_col(f)} INTEGER GENERATED ALWAYS AS ({kind}) VIRTUAL",
        f"ALTER TABLE {t} ADD COLUMN {value_col(f)} GENERATED ALWAYS AS "
        f"(coalesce(json_extract(doc, {path}), 0)) VIRTUAL",
    ]


def create_index(schema: Schema, f: str) -> str:
    return (
        f'CREATE INDEX IF NOT EXISTS "ix_{schema.name}_{f}" ON {table(schema.name)} '
        f"({rank_col(f)}, {value_col(f)}, k)"
    )


def upsert(collection: str) -> str:
    return (
        f"INSERT INTO {table(collection)}(k, doc) VALUES (?, ?) "
        "ON CONFLICT(k) DO UPDATE SET doc = excluded.doc"
    )


def delete(collection: str) -> str:
    return f"DELETE FROM {table(collection)} WHERE k = ?"


def get(collection: str) -> str:
    return f"SELECT doc FROM {table(collection)} WHERE k = ?"


def bind(value: Scalar) -> tuple[int, Any]:
    """An indexed value as the ``(r, v)`` pair stored in its columns."""
    r = rank(value, "value")
    if value is None:
        return r, 0
    if isinstance(value, bool):
        return r, int(value)
    return r, value


@dataclass(frozen=True)
class Select:
    sql: str
    params: list[Any]
    width: int  # how many leading result columns form the keyset position


def _filters(q: Query, resumed: bool = False) -> tuple[list[str], list[Any]]:
    """The WHERE conditions of ``q``. When a page resumes after a keyset
    position, that position is the tighter bound on the side the scan starts
    from, so the range bound on that side is left out: SQLite then seeks the
    index straight to the position instead of rescanning from the range start."""
    conds: list[str] = []
    params: list[Any] = []
    for f, v in q.where:
        conds.append(f"{rank_col(f)} = ? AND {value_col(f)} = ?")
        params.extend(bind(v))
    start = None if resumed and not q.descending else q.start
    end = None if resumed and q.descending else q.end
    if q.order_by is None:
        if start is not None:
            conds.append("k >= ?")
            params.append(start)
        if end is not None:
            conds.append("k < ?")
            params.append(end)
    else:
        pair = f"({rank_col(q.order_by)}, {value_col(q.order_by)})"
        if start is not None:
            conds.append(f"{pair} >= (?, ?)")
            params.extend(bind(start))
        if end is not None:
            conds.append(f"{pair} < (?, ?)")
            params.extend(bind(end))
    return conds, params


def count(q: Query) -> Select:
    conds, params = _filters(q)
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    return Select(f"SELECT count(*) FROM {table(q.schema.name)}{where}", params, 0)


def page(q: Query, after: Sequence[Any] | None, size: int) -> Select:
    """One page of ``q`` after the keyset position ``after`` (exclusive)."""
    conds, params = _filters(q, resumed=after is not None)
    cols = ["k"] if q.order_by is None else [rank_col(q.order_by), value_col(q.order_by), "k"]
    direction = "DESC" if q.descending else "ASC"
    if after is not None:
        op = "<" if q.descending else ">"
        conds.append(f"({', '.join(cols)}) {op} ({', '.join('?' * len(cols))})")
        params.extend(after)
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    order = ", ".join(f"{c} {direction}" for c in cols)
    sql = (
        f"SELECT {', '.join(cols)}, doc FROM {table(q.schema.name)}{where} ORDER BY {order} LIMIT ?"
    )
    params.append(size)
    return Select(sql, params, len(cols))
