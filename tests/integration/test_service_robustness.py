"""A real service process fed bad input: typed errors back, never a crash."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from libs.api.events.envelope_pb2 import Envelope, EventBatch
from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus
from libs.config import Config
from libs.errors import Unavailable
from libs.events import ensure_stream
from programs.cluster.natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 64 * 1024


@pytest.fixture
def pfs(nats_server: NatsServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PACH_NATS_URL": nats_server.url,
        "PACH_DATA_DIR": str(tmp_path / "data"),
        "PACH_MAX_MESSAGE_BYTES": str(LIMIT),
        "PACH_LOG_FORMAT": "json",
    }
    with open(tmp_path / "pfs.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.pfs"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


async def _ready(bus: Bus) -> HealthResponse:
    async with asyncio.timeout(20):
        while True:
            try:
                reply = await bus.request(
                    "pfs", "Health", HealthRequest(), HealthResponse, kind="qry", timeout=1
                )
                if reply.ready:
                    return reply
            except Unavailable:
                pass
            await asyncio.sleep(0.1)


async def test_bad_requests_and_bad_events_never_crash_a_service(
    nc: Client, pfs: subprocess.Popen[bytes]
) -> None:
    bus = Bus(nc, service="tester")
    # pfs alone: no admin makes the event log, so the test does (services never do).
    await ensure_stream(nc.jetstream(), Config())
    assert (await _ready(bus)).service == "pfs"

    # Not a protobuf message at all.
    reply = await nc.request("qry.pfs.Health", b"\xff\xff\xff\xff", timeout=5)
    assert json.loads((reply.headers or {})["Pach-Error"])["type"] == "MalformedMessage"
    # Over the service's message limit (but under NATS's own).
    reply = await nc.request("qry.pfs.Health", b"\x0a" * (LIMIT + 1), timeout=5)
    assert json.loads((reply.headers or {})["Pach-Error"])["type"] == "MessageTooLarge"
    # A command nobody serves.
    with pytest.raises(Unavailable):
        await bus.request("pfs", "NoSuchCommand", HealthRequest(), HealthResponse, timeout=2)

    # Garbage, a malformed envelope and an unknown event type on the event log.
    js = nc.jetstream()
    await js.publish("ev.pfs.repo.junk", b"\x00\x01\x02 not an event batch")
    await js.publish("ev.pfs.repo.junk", EventBatch(events=[Envelope()]).SerializeToString())
    unknown = Envelope(
        event_id="e1",
        type="pfs.NoSuchEvent",
        schema_version=1,
        aggregate_service="pfs",
        aggregate_type="repo",
        aggregate_id="junk",
        aggregate_version=1,
        payload=b"\x01",
    )
    await js.publish("ev.pfs.repo.junk", EventBatch(events=[unknown]).SerializeToString())

    await asyncio.sleep(0.5)
    assert pfs.poll() is None, "the service must still be running"
    assert (await _ready(bus)).ready
