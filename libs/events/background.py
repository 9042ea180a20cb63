"""A long-running consumer loop in its own task: started, stopped, and
resumed after any failure (a lost connection, a deleted consumer) until it is
stopped. Projections and reactions both run this way.

An interruption is logged at warning level once per incident, not once per
attempt: the loop says ``resumed`` (and how long it was out) when the body
tells it, with ``ok()``, that it is running again (e.g. its consumer is
subscribed again). Retries back off from ``pause`` up to ``MAX_PAUSE_S``.

``LONG_POLL_S``: how long a consumer loop's fetch waits for the next message.
An idle fetch that expires is the normal idle state, not an interruption:
loops catch ``TimeoutError`` (nats-py raises its own subclass and, in some
paths, the builtin) and fetch again. ``long_fetch`` also ends (as an idle
expiry) when the process's NATS connection comes back (``reconnected``,
called by ``libs.service``): a pull request the server lost with the old
connection would otherwise keep the loop waiting for the whole long poll."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

_log = structlog.get_logger("events")

LONG_POLL_S = 20.0  # below the ephemeral consumers' inactive_threshold (30 s)
MAX_PAUSE_S = 5.0

_kicks: set[asyncio.Future[None]] = set()  # the long fetches waiting now


def reconnected() -> None:
    """The NATS connection is back: end every long fetch of this process."""
    for kick in list(_kicks):
        if not kick.done():
            kick.set_result(None)


async def long_fetch(sub: Any, batch: int, timeout: float = LONG_POLL_S) -> list[Any]:
    """``sub.fetch(batch, timeout)``, ended early by ``reconnected`` (raising
    ``TimeoutError`` like an idle expiry). A message the server delivers to
    the cancelled fetch stays in the subscription's queue: the next fetch
    takes it first."""
    kick: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _kicks.add(kick)
    fetch = asyncio.ensure_future(sub.fetch(batch, timeout=timeout))
    try:
        await asyncio.wait({fetch, kick}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        _kicks.discard(kick)
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
    if fetch.cancelled():
        raise TimeoutError("the connection came back: fetch again")
    msgs: list[Any] = fetch.result()
    return msgs


class ResumingTask:
    def __init__(self, name: str, body: Callable[[], Awaitable[None]], pause: float = 0.5) -> None:
        self.name = name
        self._body = body
        self._pause = pause
        self._task: asyncio.Task[None] | None = None
        self._since: float | None = None  # when the current interruption began
        self._attempts = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def interrupted(self) -> bool:
        return self._since is not None

    def ok(self) -> None:
        """The body runs again: close the current interruption, if any."""
        if self._since is not None:
            _log.info(
                "resumed",
                task=self.name,
                after_s=round(time.monotonic() - self._since, 1),
                attempts=self._attempts,
            )
            self._since = None
            self._attempts = 0

    async def _run(self) -> None:
        while True:
            try:
                await self._body()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._attempts += 1
                if self._since is None:
                    self._since = time.monotonic()
                    _log.warning("interrupted, resuming", task=self.name, error=repr(exc))
                else:
                    _log.debug("still interrupted", task=self.name, error=repr(exc))
                pause = min(MAX_PAUSE_S, self._pause * 2 ** (self._attempts - 1))
                await asyncio.sleep(pause)
