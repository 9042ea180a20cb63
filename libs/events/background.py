"""A long-running consumer loop in its own task: started, stopped, and
resumed after any failure (a lost connection, a deleted consumer) until it is
stopped. Projections and reactions both run this way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

_log = structlog.get_logger("events")


class ResumingTask:
    def __init__(self, name: str, body: Callable[[], Awaitable[None]], pause: float = 0.5) -> None:
        self.name = name
        self._body = body
        self._pause = pause
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("interrupted, resuming", task=self.name, error=repr(exc))
                await asyncio.sleep(self._pause)
