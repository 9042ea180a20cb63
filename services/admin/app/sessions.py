"""Extract and restore sessions: the framed stream as parts in the object
store (``libs.transfer``), handed to and taken from the gateway by key.

An extract session writes parts ahead of the reader, at most ``AHEAD``
unread, and hands out their keys; the gateway streams each part to its
client and deletes it. A restore session takes the keys of the parts the
gateway stored, in order, and feeds their bytes to the restore engine,
deleting each part once read. A session nobody asks about for ``IDLE_S``
(its gateway died) is cancelled and its parts deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from libs.errors import FailedPrecondition, Internal, PachError, Unavailable
from libs.objects.base import ObjectStore
from libs.transfer import delete_parts, read_part, write_parts

_log = structlog.get_logger("admin.sessions")

AHEAD = 4  # parts written and not yet read, at most
POLL_S = 5.0  # the longest an ExtractParts request waits for a part
IDLE_S = 120.0


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class ExtractSession:
    """One extract, written into parts as the gateway reads them."""

    store: ObjectStore
    id: str = field(default_factory=new_id)
    keys: list[str] = field(default_factory=list)  # keys[i] is part i + 1
    consumed: int = 0
    handed: int = 0  # parts handed out: the reader deletes those
    busy: int = 0  # requests in flight
    done: bool = False
    error: BaseException | None = None
    last_seen: float = field(default_factory=time.monotonic)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _task: asyncio.Task[None] | None = None

    def start(self, blocks: AsyncIterator[bytes]) -> None:
        self._task = asyncio.create_task(self._run(blocks), name=f"extract {self.id}")

    async def _run(self, blocks: AsyncIterator[bytes]) -> None:
        async def on_part(key: str) -> None:
            async with self._changed:
                self.keys.append(key)
                self._changed.notify_all()
                await self._changed.wait_for(lambda: len(self.keys) - self.consumed < AHEAD)

        try:
            await write_parts(self.store, "extract", self.id, blocks, on_part)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the reader, whatever it is
            self.error = exc
        finally:
            async with self._changed:
                self.done = True
                self._changed.notify_all()

    async def next(self, consumed: int, have: int, wait: float = POLL_S) -> tuple[list[str], bool]:
        """The keys after ``have`` and whether the stream ends with them. The
        reader read and deleted every part up to ``consumed``; when it has
        nothing left (``have <= consumed``) this waits up to ``wait`` for a
        part. Raises the extract's error once every part before it is out."""
        self.last_seen = time.monotonic()
        async with self._changed:
            self.consumed = max(self.consumed, min(consumed, len(self.keys)))
            self._changed.notify_all()
            if have <= self.consumed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: len(self.keys) > have or self.done),
                        wait,
                    )
            keys = self.keys[have:]
            self.handed = max(self.handed, len(self.keys))
            if self.error is not None and not keys:
                raise _as_pach(self.error)
            return keys, self.done and self.error is None and self.handed == len(self.keys)

    async def close(self) -> None:
        """Stop writing and delete the parts never handed out."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await delete_parts(self.store, self.keys[self.handed :])


@dataclass
class RestoreSession:
    """One restore, fed the parts the gateway stores, in order."""

    store: ObjectStore
    id: str = field(default_factory=new_id)
    last_seen: float = field(default_factory=time.monotonic)
    busy: int = 0  # requests in flight
    _queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(AHEAD))
    _task: asyncio.Task[object] | None = None

    def start(self, restore: Callable[[AsyncIterator[bytes]], Coroutine[Any, Any, object]]) -> None:
        self._task = asyncio.create_task(restore(self._bytes()), name=f"restore {self.id}")

    async def _bytes(self) -> AsyncIterator[bytes]:
        while (key := await self._queue.get()) is not None:
            async for block in read_part(self.store, key):
                yield block

    async def add(self, keys: list[str], last: bool) -> object | None:
        """Queue ``keys`` (waiting for room); with ``last``, end the stream
        and return the restore's result. Raises the restore's error as soon
        as it has one; keys it did not take are deleted."""
        self.last_seen = time.monotonic()
        task = self._task
        if task is None:
            raise FailedPrecondition(f"restore {self.id} did not start")
        items: list[str | None] = [*keys, None] if last else list(keys)
        for i, item in enumerate(items):
            put = asyncio.ensure_future(self._queue.put(item))
            await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                put.cancel()
                await delete_parts(self.store, [k for k in items[i:] if k is not None])
                await self._drop_queued()
                return self._result(task, early=True)
        if last:
            await asyncio.wait({task})
            return self._result(task, early=False)
        return None

    def _result(self, task: asyncio.Task[object], *, early: bool) -> object:
        if task.cancelled():
            raise Unavailable(f"restore {self.id} was cancelled")
        exc = task.exception()
        if exc is not None:
            raise _as_pach(exc)
        if early:
            raise FailedPrecondition(f"restore {self.id} ended before its stream did")
        return task.result()

    async def _drop_queued(self) -> None:
        left: list[str] = []
        while not self._queue.empty():
            key = self._queue.get_nowait()
            if key is not None:
                left.append(key)
        await delete_parts(self.store, left)

    async def close(self) -> None:
        """Stop the restore (unless it finished) and delete the parts queued."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._drop_queued()


def _as_pach(exc: BaseException) -> PachError:
    if isinstance(exc, PachError):
        return exc
    return Internal(f"{type(exc).__name__}: {exc}")
