"""What both backends agree on: names, documents, indexed values and queries.

Every argument a caller passes is checked here, before a backend touches its
database, so bad input raises ``InvalidArgument`` naming what is wrong and
changes nothing.

Indexed values and their order
------------------------------
An indexed field holds ``None`` (or is missing, which counts as ``None``), a
number (``int`` within int64, or a finite ``float``), a ``str`` or a ``bool``.
Values of different kinds compare by kind first, in MongoDB's BSON order:

    null  <  numbers  <  strings  <  booleans

Numbers compare numerically (``1 == 1.0``), strings by their UTF-8 bytes
(the same as by code point), ``False < True``. Equal values are ordered by
key. Lists and objects cannot be indexed values (``InvalidArgument``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.errors import InvalidArgument
from libs.readmodels.base import Collection, Document

_COLLECTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

RANK_NULL, RANK_NUMBER, RANK_STRING, RANK_BOOL = 0, 1, 2, 3

Scalar = None | bool | int | float | str


def rank(value: Any, what: str) -> int:
    """The kind of an indexed value in the order above; rejects the rest."""
    if value is None:
        return RANK_NULL
    if isinstance(value, bool):
        return RANK_BOOL
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidArgument(f"{what} is an integer outside int64: {value}", what=what)
        return RANK_NUMBER
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{what} must be a finite number, got {value}", what=what)
        return RANK_NUMBER
    if isinstance(value, str):
        return RANK_STRING
    raise InvalidArgument(
        f"{what} must be null, a boolean, a number or a string, got {type(value).__name__}",
        what=what,
    )


def sort_key(value: Scalar) -> tuple[int, Any]:
    """The order of indexed values as a Python sort key (used by tests and docs)."""
    r = rank(value, "value")
    return (r, 0 if value is None else value)


@dataclass(frozen=True)
class Schema:
    """A validated ``Collection``: its name and indexed field paths."""

    name: str
    indexes: tuple[str, ...]

    @classmethod
    def of(cls, collection: Collection) -> Schema:
        if not isinstance(collection.name, str) or not _COLLECTION_RE.match(collection.name):
            raise InvalidArgument(
                f"collection name {collection.name!r} must be a letter followed by up to "
                "62 letters, digits or underscores",
                collection=collection.name,
            )
        indexes: list[str] = []
        for f in collection.indexes:
            if not isinstance(f, str) or not _FIELD_RE.match(f):
                raise InvalidArgument(
                    f"indexed field {f!r} of collection {collection.name!r} must be a "
                    "dot-separated path of identifiers",
                    collection=collection.name,
                    field=f,
                )
            if f not in indexes:
                indexes.append(f)
        return cls(collection.name, tuple(indexes))


def schemas_of(collections: Sequence[Collection]) -> list[Schema]:
    out = [Schema.of(c) for c in collections]
    seen: dict[str, Schema] = {}
    for s in out:
        if s.name in seen and seen[s.name] != s:
            raise InvalidArgument(
                f"collection {s.name!r} declared twice with different indexes",
                collection=s.name,
            )
        seen[s.name] = s
    return out


def lookup(schemas: Mapping[str, Schema], collection: Any) -> Schema:
    schema = schemas.get(collection) if isinstance(collection, str) else None
    if schema is None:
        raise InvalidArgument(
            f"unknown collection {collection!r} (known: {', '.join(sorted(schemas)) or 'none'})",
            collection=collection,
        )
    return schema


def check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise InvalidArgument(f"key must be a string, got {type(key).__name__}", key=repr(key))
    return key


def field_value(doc: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path; ``None`` when any step is missing."""
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def encode_document(schema: Schema, key: str, doc: Any) -> tuple[str, Document]:
    """Check a document and return its JSON text and a private JSON-normalised copy.

    Both backends store exactly what JSON can carry, so a document reads back
    the same from either (tuples become lists, and so on)."""
    if not isinstance(doc, dict):
        raise InvalidArgument(
            f"document {key!r} in {schema.name!r} must be an object, got {type(doc).__name__}",
            collection=schema.name,
            key=key,
        )
    try:
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(
            f"document {key!r} in {schema.name!r} is not JSON: {e}",
            collection=schema.name,
            key=key,
        ) from None
    normal: Document = json.loads(text)
    for f in schema.indexes:
        rank(field_value(normal, f), f"indexed field {f!r} of {schema.name!r} document {key!r}")
    return text, normal


def check_checkpoint(name: Any, sequence: Any) -> tuple[str, int]:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"checkpoint name must be a non-empty string, got {name!r}")
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise InvalidArgument(
            f"checkpoint {name!r} sequence must be an integer, got {type(sequence).__name__}",
            checkpoint=name,
        )
    if not 0 <= sequence <= _INT64_MAX:
        raise InvalidArgument(
            f"checkpoint {name!r} sequence must be within 0..2^63-1, got {sequence}",
            checkpoint=name,
        )
    return name, sequence


@dataclass(frozen=True)
class Query:
    """A validated query. ``order_by`` None means the key; ``start``/``end``
    bound the ordered field (``start <= v < end``), None meaning unbounded."""

    schema: Schema
    where: tuple[tuple[str, Scalar], ...]
    order_by: str | None
    descending: bool
    start: Scalar
    end: Scalar
    limit: int | None


def _indexed(schema: Schema, f: Any, role: str) -> str:
    if not isinstance(f, str) or f not in schema.indexes:
        raise InvalidArgument(
            f"cannot {role} field {f!r} of collection {schema.name!r}: it is not indexed "
            f"(indexed: {', '.join(schema.indexes) or 'none'})",
            collection=schema.name,
            field=f,
        )
    return f


def build_query(
    schema: Schema,
    where: Mapping[str, Any] | None,
    order_by: str | None,
    descending: bool,
    start: Any,
    end: Any,
    limit: int | None,
) -> Query:
    pairs: list[tuple[str, Scalar]] = []
    for f, v in (where or {}).items():
        _indexed(schema, f, "filter on")
        rank(v, f"value of {f!r} in the filter")
        pairs.append((f, v))
    if order_by is not None:
        _indexed(schema, order_by, "order by")
    bound = "key" if order_by is None else f"field {order_by!r}"
    for name, v in (("start", start), ("end", end)):
        if v is None:
            continue
        if order_by is None and not isinstance(v, str):
            raise InvalidArgument(
                f"{name} bounds the key, so it must be a string, got {type(v).__name__}",
                collection=schema.name,
            )
        rank(v, f"{name} of the range on {bound}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgument(f"limit must be a non-negative integer, got {limit!r}")
    return Query(schema, tuple(pairs), order_by, bool(descending), start, end, limit)
