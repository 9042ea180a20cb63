"""ResumingTask: an interruption is one warning however many retries it
takes, and its end is said (info) once the body runs again. long_fetch:
what arrives, or an early end when the NATS connection comes back."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from libs.events.background import ResumingTask, long_fetch, reconnected


async def test_one_warning_per_incident_and_resumed_when_running_again() -> None:
    failures = 3
    running = asyncio.Event()
    task: ResumingTask

    async def body() -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("nats is gone")
        task.ok()
        running.set()
        await asyncio.Event().wait()  # runs until stopped

    task = ResumingTask("demo", body, pause=0.01)
    with capture_logs() as logs:
        task.start()
        await asyncio.wait_for(running.wait(), 5)
        await task.stop()
    levels = [(e["log_level"], e["event"]) for e in logs]
    assert levels == [
        ("warning", "interrupted, resuming"),
        ("debug", "still interrupted"),
        ("debug", "still interrupted"),
        ("info", "resumed"),
    ]
    assert logs[-1]["attempts"] == 3 and not task.interrupted


async def test_ok_without_an_interruption_says_nothing() -> None:
    async def body() -> None:
        await asyncio.sleep(0)

    task = ResumingTask("quiet", body, pause=0.01)
    with capture_logs() as logs:
        task.ok()
    assert logs == []


class _Sub:
    """A pull subscription whose fetch waits for ``gate`` then returns ``msgs``."""

    def __init__(self, msgs: list[str]) -> None:
        self.msgs = msgs
        self.gate = asyncio.Event()
        self.cancelled = False

    async def fetch(self, batch: int, timeout: float) -> list[str]:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.msgs[:batch]


async def test_a_long_fetch_returns_what_arrives() -> None:
    sub = _Sub(["a", "b"])
    fetching = asyncio.create_task(long_fetch(sub, 5))
    await asyncio.sleep(0.01)
    sub.gate.set()
    assert await asyncio.wait_for(fetching, 1) == ["a", "b"]


async def test_a_long_fetch_ends_when_the_connection_comes_back() -> None:
    sub = _Sub(["a"])
    fetching = asyncio.create_task(long_fetch(sub, 5, timeout=600))
    await asyncio.sleep(0.01)
    reconnected()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(fetching, 1)
    assert sub.cancelled
