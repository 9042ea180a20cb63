"""Datums as values: their identity and how cross and union combine them.

A datum is a tuple of parts, one per atom input it reads, in input order.
Its id is a salted sha256 over every part's (input name, matched path,
matched node hash); a datum already processed under the same salt has the
same id, so it is skipped and its output reused (docs/decisions/0010-pps.md).

Order (the job's datum order, which is also the order outputs concatenate
in): an atom's datums in glob-match (path) order; ``cross`` is the product
with the first input outermost (its datums vary slowest); ``union`` is each
input's datums one input after the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

Part = tuple[str, str, str]  # (input name, matched path, matched node hash)
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Reiterable(Protocol[T_co]):
    """Datums that can be counted and iterated again (a list, or a spilled file)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[T_co]: ...


def datum_id(parts: Sequence[Part], salt: str) -> str:
    """The datum's id: sha256 hex over each part's name, path and hash, then the salt.

    The parts' count leads and every field is framed by its length
    (``<count>;`` then ``<len>:<text>`` per field, in UTF-8), so no two
    different datums, or the same datum under two salts, share an encoding."""
    text = [f"{len(parts)};"]
    for name, path, node_hash in parts:
        text.append(f"{len(name)}:{name}{len(path)}:{path}{len(node_hash)}:{node_hash}")
    text.append(f"{len(salt)}:{salt}")
    return hashlib.sha256("".join(text).encode("utf-8")).hexdigest()


def cross(
    first: Iterable[tuple[T, ...]], rest: Sequence[Reiterable[tuple[T, ...]]]
) -> Iterator[tuple[T, ...]]:
    """The product of the inputs' datums, the first input outermost.

    ``first`` is only iterated once (it may be a stream); each of ``rest`` is
    re-iterated (never copied) for every datum of the inputs before it. Any
    input without datums makes the product empty (and ``first`` is then not
    read)."""
    if any(len(r) == 0 for r in rest):
        return
    for head in first:
        for tail in _tails(rest, 0):
            yield head + tail


def _tails(rest: Sequence[Reiterable[tuple[T, ...]]], i: int) -> Iterator[tuple[T, ...]]:
    if i == len(rest):
        yield ()
        return
    for datum in rest[i]:
        for tail in _tails(rest, i + 1):
            yield datum + tail


def union(inputs: Iterable[Iterable[tuple[T, ...]]]) -> Iterator[tuple[T, ...]]:
    """Every input's datums, one input after the other."""
    for datums in inputs:
        yield from datums


def cross_count(counts: Sequence[int]) -> int:
    """How many datums a cross of inputs with these datum counts has (0 for none)."""
    if not counts:
        return 0
    total = 1
    for c in counts:
        total *= c
    return total


def union_count(counts: Sequence[int]) -> int:
    return sum(counts)
