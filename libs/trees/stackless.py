"""Recursion without the Python stack, for walks as deep as a path is long.

A path may hold ~2,000 directories (4,096 bytes), far past Python's recursion
limit, so a tree walk that recursed once per directory level would fail on
deep paths. The walks here keep their own stack instead:

- ``flatten``: a recursive async generator yields ``Descend(sub_generator)``
  where it would have written ``async for x in sub: yield x``; ``flatten``
  runs the sub-generator in its place with a list as the stack.
- ``run``: a recursive coroutine is written as an async generator that yields
  ``Call(sub_generator)`` where it would have awaited a recursive call (the
  sub-call's result is sent back in) and yields ``Return(value)`` last.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Descend(Generic[T]):
    """Yielded by a walk: run ``gen`` here, as if its items were our own."""

    gen: AsyncGenerator[T | Descend[T], None]


async def flatten(gen: AsyncGenerator[T | Descend[T], None]) -> AsyncGenerator[T, None]:
    """The items of ``gen`` with every ``Descend`` expanded in place, depth first."""
    stack: list[AsyncGenerator[T | Descend[T], None]] = [gen]
    try:
        while stack:
            try:
                item = await stack[-1].__anext__()
            except StopAsyncIteration:
                stack.pop()
                continue
            if isinstance(item, Descend):
                stack.append(item.gen)
            else:
                yield item
    finally:
        while stack:
            await stack.pop().aclose()


@dataclass(frozen=True)
class Call:
    """Yielded by a step: run ``gen`` and send its ``Return`` value back in."""

    gen: AsyncGenerator[Any, Any]


@dataclass(frozen=True)
class Return:
    """Yielded last by a step: its result."""

    value: Any


Step = AsyncGenerator[Call | Return, Any]


async def run(gen: Step) -> Any:
    """Drive ``gen`` (and every ``Call`` it makes) to its ``Return`` value.

    An exception in a call is thrown into its caller, as a real call would."""
    stack: list[Step] = [gen]
    value: Any = None
    error: BaseException | None = None
    try:
        while stack:
            top = stack[-1]
            try:
                if error is not None:
                    item = await top.athrow(error)
                else:
                    item = await top.asend(value)
            except StopAsyncIteration:
                item = Return(None)
            except BaseException as exc:
                stack.pop()
                if not stack:
                    raise
                error, value = exc, None
                continue
            error, value = None, None
            if isinstance(item, Call):
                stack.append(item.gen)
                continue
            await stack.pop().aclose()
            value = item.value
        return value
    finally:
        while stack:
            await stack.pop().aclose()
