"""A validated ``Query`` as a MongoDB filter and sort.

Documents are stored as ``{"_id": key, "d": document}``, so an indexed field
``f`` is the path ``d.f`` and a user's document can use any field name,
``_id`` included.

MongoDB compares values of different BSON types by type order, which is the
order ``schema`` documents (null < numbers < strings < booleans), but its
range operators only match values of the bound's own type ("type
bracketing"). A range whose bounds are of different kinds therefore becomes
an ``$or`` of one clause per kind it spans, so both backends return the same
documents for the same range. Every clause on a number or a boolean also
names its ``$type``: MongoDB never equates ``true`` with ``1``, and saying so
keeps any driver-side evaluator (mongomock compares with Python's ``==``,
where ``True == 1``) to the same answer.
"""

from __future__ import annotations

from typing import Any

from libs.readmodels.schema import (
    RANK_BOOL,
    RANK_NULL,
    RANK_NUMBER,
    RANK_STRING,
    Query,
    Scalar,
    rank,
)

ASCENDING, DESCENDING = 1, -1
MATCH_NOTHING: dict[str, Any] = {"_id": {"$in": []}}

_TYPE = {RANK_NUMBER: "number", RANK_STRING: "string", RANK_BOOL: "bool"}


def path(field: str) -> str:
    return f"d.{field}"


def _equal(value: Scalar) -> Any:
    r = rank(value, "value")
    return value if r in (RANK_NULL, RANK_STRING) else {"$eq": value, "$type": _TYPE[r]}


def _kind_clause(r: int, lower: Scalar, upper: Scalar) -> Any:
    if r == RANK_NULL:
        return None  # null or missing; the only kind below every bound
    cond: dict[str, Any] = {"$type": _TYPE[r]}
    if lower is not None:
        cond["$gte"] = lower
    if upper is not None:
        cond["$lt"] = upper
    return cond


def _range(start: Scalar, end: Scalar) -> list[Any] | None:
    """One condition per kind between ``start`` and ``end``; None = unbounded."""
    if start is None and end is None:
        return None
    first = RANK_NULL if start is None else rank(start, "start")
    last = RANK_BOOL if end is None else rank(end, "end")
    return [
        _kind_clause(
            r,
            start if (start is not None and r == first) else None,
            end if (end is not None and r == last) else None,
        )
        for r in range(first, last + 1)
    ]


def mongo_filter(q: Query) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{path(f): _equal(v)} for f, v in q.where]
    if q.order_by is None:
        key: dict[str, Any] = {}
        if q.start is not None:
            key["$gte"] = q.start
        if q.end is not None:
            key["$lt"] = q.end
        if key:
            clauses.append({"_id": key})
    else:
        kinds = _range(q.start, q.end)
        if kinds is not None:
            p = path(q.order_by)
            if not kinds:
                return dict(MATCH_NOTHING)
            clauses.append({p: kinds[0]} if len(kinds) == 1 else {"$or": [{p: c} for c in kinds]})
    if not clauses:
        return {}
    if len(clauses) == 1:
        return clauses[0]
    return {"$and": clauses}


def mongo_sort(q: Query) -> list[tuple[str, int]]:
    direction = DESCENDING if q.descending else ASCENDING
    if q.order_by is None:
        return [("_id", direction)]
    return [(path(q.order_by), direction), ("_id", direction)]
