"""The gateway's hold on a backend that has not served since it started:
bounded by the start's window (a gRPC caller's deadline cancels it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.gateway.app.backends import BackendMonitor


def monitor(hold_s: float) -> BackendMonitor:
    nothing: Any = None  # hold() talks to neither NATS nor the bus
    return BackendMonitor(nothing, nothing, hold_s=hold_s)


async def test_a_held_call_waits_no_longer_than_the_window() -> None:
    m = monitor(hold_s=0.3)
    start = time.monotonic()
    await m.hold("pfs")
    assert 0.25 <= time.monotonic() - start < 2


async def test_no_window_means_no_hold() -> None:
    m = monitor(hold_s=0)
    start = time.monotonic()
    await m.hold("pfs")
    assert time.monotonic() - start < 0.2


async def test_a_held_call_goes_on_once_its_backend_served() -> None:
    m = monitor(hold_s=60)
    held = asyncio.ensure_future(m.hold("pps"))
    await asyncio.sleep(0.1)
    assert not held.done()
    m._served["pps"].set()  # what a check does when pps answers ready
    await asyncio.wait_for(held, 1)


async def test_other_services_are_never_held() -> None:
    m = monitor(hold_s=60)
    await asyncio.wait_for(m.hold("no-such-service"), 0.2)
