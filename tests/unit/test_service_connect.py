"""A service waiting for NATS at start-up stops when told to, even while
nats-py is still retrying its first connect."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog

from libs.config import Config
from libs.service import connect_nats
from programs.cluster.natsserver import free_port


async def test_stop_ends_the_wait_for_an_absent_nats() -> None:
    cfg = Config(nats_url=f"nats://127.0.0.1:{free_port()}")  # nothing listens
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(connect_nats(cfg, structlog.get_logger("t"), stop))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    started = time.monotonic()
    stop.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert time.monotonic() - started < 1.0
