"""The pps work queue (PPS_WORK) on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from nats.aio.client import Client

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.errors import InvalidArgument
from services.pps.adapters import work_queue as wq


def _chunk(n: int, job: str = "j1", pipeline: str = "edges") -> pachinternal.WorkChunk:
    return pachinternal.WorkChunk(
        job_id=job,
        pipeline=pipeline,
        pipeline_version=1,
        chunk=n,
        datums=[pachinternal.DatumTask(id=f"d{n}", index=n)],
    )


async def _take(
    it: AsyncGenerator[wq.ReceivedChunk, None], timeout: float = 5.0
) -> wq.ReceivedChunk:
    return await asyncio.wait_for(anext(it), timeout)


async def test_chunks_in_order_once_and_duplicates_dropped(nc: Client) -> None:
    js = nc.jetstream()
    await wq.ensure_stream(js)
    await wq.ensure_stream(js)  # idempotent
    for n in range(3):
        await wq.publish_chunk(js, _chunk(n))
    await wq.publish_chunk(js, _chunk(1))  # a repeat: dropped
    await wq.publish_chunk(js, _chunk(9, pipeline="other"))
    it = wq.chunks(js, "edges", ack_wait=5)
    got = []
    for _ in range(3):
        received = await _take(it)
        got.append(received.chunk.chunk)
        assert received.deliveries == 1 and received.chunk.pipeline == "edges"
        await received.ack()
    assert got == [0, 1, 2]
    with pytest.raises(TimeoutError):
        await _take(it, 1.5)
    await it.aclose()
    info = await js.stream_info(wq.STREAM)
    assert info.state.messages == 1  # acked chunks leave; the other pipeline's stays


async def test_unacked_chunk_is_redelivered_after_ack_wait(nc: Client) -> None:
    js = nc.jetstream()
    await wq.ensure_stream(js)
    await wq.publish_chunk(js, _chunk(0))
    first = wq.chunks(js, "edges", ack_wait=1.0)
    assert (await _take(first)).chunk.chunk == 0
    await first.aclose()  # the worker dies holding it
    second = wq.chunks(js, "edges", ack_wait=1.0)
    again = await _take(second, 10)
    assert again.chunk.chunk == 0 and again.deliveries == 2
    await again.ack()
    await second.aclose()


async def test_in_progress_keeps_the_chunk_and_nak_gives_it_back(nc: Client) -> None:
    js = nc.jetstream()
    await wq.ensure_stream(js)
    await wq.publish_chunk(js, _chunk(0))
    a = wq.chunks(js, "edges", ack_wait=1.0)
    b = wq.chunks(js, "edges", ack_wait=1.0)
    held = await _take(a)
    waiter = asyncio.ensure_future(_take(b, 10))
    for _ in range(4):  # 2 s of work, twice ack_wait
        await asyncio.sleep(0.5)
        await held.in_progress()
    assert not waiter.done()
    await held.nak()
    redelivered = await waiter
    assert redelivered.chunk.chunk == 0 and redelivered.deliveries == 2
    await redelivered.ack()
    await a.aclose()
    await b.aclose()


async def test_delete_consumer_and_purge(nc: Client) -> None:
    js = nc.jetstream()
    await wq.ensure_stream(js)
    it = wq.chunks(js, "edges", ack_wait=2)
    await wq.publish_chunk(js, _chunk(0))
    assert (await _take(it)).chunk.chunk == 0  # the consumer exists now
    await it.aclose()
    await wq.delete_consumer(js, "edges")
    await wq.delete_consumer(js, "edges")  # absent: fine
    assert wq.consumer_name("edges") not in [c.name for c in await js.consumers_info(wq.STREAM)]
    await wq.publish_chunk(js, _chunk(1))
    await wq.purge(js, "edges")
    assert (await js.stream_info(wq.STREAM)).state.messages == 0


def test_names_and_ack_wait_env() -> None:
    assert wq.subject("edges") == "pps.work.edges"
    assert wq.consumer_name("edges") == "pps-worker-edges"
    assert wq.message_id(_chunk(4)) == "j1:4"
    with pytest.raises(InvalidArgument, match=r"pipeline name 'a\.b'"):
        wq.subject("a.b")
    assert wq.ack_wait_from_env({}) == 30.0
    assert wq.ack_wait_from_env({"PACH_PPS_ACK_WAIT_S": "2.5"}) == 2.5
    with pytest.raises(InvalidArgument, match="PACH_PPS_ACK_WAIT_S"):
        wq.ack_wait_from_env({"PACH_PPS_ACK_WAIT_S": "soon"})
