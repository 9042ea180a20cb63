"""ResumingTask: an interruption is one warning however many retries it
takes, and its end is said (info) once the body runs again."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from libs.events.background import ResumingTask


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
