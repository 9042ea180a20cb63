"""The datum work queue: JetStream stream ``PPS_WORK`` (work-queue retention).

pps publishes a job's datums as ``WorkChunk``s on ``pps.work.<pipeline>``
with ``Nats-Msg-Id`` ``<job>:<chunk>`` (a repeated publish within the
duplicate window is dropped). The workers of a pipeline share the durable
pull consumer ``pps-worker-<pipeline>``: each takes one chunk at a time,
sends ``in_progress`` while it works, and acks once pps has its report. A
chunk not acked within ``ack_wait`` (its worker died) goes to another worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext, api

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.errors import InvalidArgument
from libs.events.background import long_fetch

STREAM = "PPS_WORK"
SUBJECT_PREFIX = "pps.work"
DUPLICATE_WINDOW_S = 300.0
DEFAULT_ACK_WAIT_S = 30.0
# Chunks handed out and not yet acked, over all workers of one pipeline.
MAX_ACK_PENDING = 256
# A worker waits for its next chunk in one long fetch (an idle worker costs
# nothing); it expires server-side just before the client gives up.
_FETCH_WAIT_S = 20.0
_ACK_TIMEOUT_S = 5.0


def ack_wait_from_env(env: Mapping[str, str] | None = None) -> float:
    """``PACH_PPS_ACK_WAIT_S`` (seconds, default 30)."""
    raw = (os.environ if env is None else env).get("PACH_PPS_ACK_WAIT_S", "")
    if not raw:
        return DEFAULT_ACK_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(
            f"PACH_PPS_ACK_WAIT_S must be a number of seconds, got {raw!r}",
            name="PACH_PPS_ACK_WAIT_S",
        ) from None
    if value <= 0:
        raise InvalidArgument(
            f"PACH_PPS_ACK_WAIT_S must be > 0, got {raw!r}", name="PACH_PPS_ACK_WAIT_S"
        )
    return value


def check_token(value: str, what: str) -> str:
    """A pipeline name or job id as one NATS subject token."""
    if not value or any(c in value for c in ".*> \t\r\n"):
        raise InvalidArgument(
            f"{what} {value!r} cannot be used in a subject (empty, or has '.', '*', '>' or space)",
            **{what.replace(" ", "_"): value},
        )
    return value


def subject(pipeline: str) -> str:
    return f"{SUBJECT_PREFIX}.{check_token(pipeline, 'pipeline name')}"


def consumer_name(pipeline: str) -> str:
    return f"pps-worker-{check_token(pipeline, 'pipeline name')}"


def message_id(chunk: pachinternal.WorkChunk) -> str:
    return f"{chunk.job_id}:{chunk.chunk}"


async def ensure_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create ``PPS_WORK`` if missing (idempotent; safe to race)."""
    config = api.StreamConfig(
        name=STREAM,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.WORK_QUEUE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if "already in use" not in str(exc.description or ""):
            raise


async def publish_chunk(js: JetStreamContext, chunk: pachinternal.WorkChunk) -> None:
    """Queue ``chunk`` for its pipeline's workers (a repeat is dropped)."""
    await js.publish(
        subject(chunk.pipeline),
        chunk.SerializeToString(),
        stream=STREAM,
        headers={"Nats-Msg-Id": message_id(chunk)},
    )


async def delete_consumer(js: JetStreamContext, pipeline: str) -> None:
    """Drop the pipeline's consumer (its workers stop getting chunks)."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(STREAM, consumer_name(pipeline))


async def purge(js: JetStreamContext, pipeline: str) -> None:
    """Drop every chunk still queued for ``pipeline``."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.purge_stream(STREAM, subject=subject(pipeline))


@dataclass
class ReceivedChunk:
    """A chunk handed to this worker; ``deliveries`` counts this delivery too."""

    chunk: pachinternal.WorkChunk
    deliveries: int
    _msg: Any

    async def ack(self) -> None:
        """Done: the chunk leaves the queue (waits for the server to confirm)."""
        await self._msg.ack_sync(timeout=_ACK_TIMEOUT_S)

    async def nak(self, delay: float | None = None) -> None:
        """Give the chunk back, to be handed out again after ``delay`` seconds."""
        await self._msg.nak(delay=delay)

    async def in_progress(self) -> None:
        """Still working: restart the chunk's ``ack_wait``."""
        await self._msg.in_progress()


def consumer_config(pipeline: str, ack_wait: float) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=consumer_name(pipeline),
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        filter_subject=subject(pipeline),
        ack_wait=ack_wait,
        max_deliver=-1,
        max_ack_pending=MAX_ACK_PENDING,
    )


async def chunks(
    js: JetStreamContext, pipeline: str, *, ack_wait: float = DEFAULT_ACK_WAIT_S
) -> AsyncGenerator[ReceivedChunk, None]:
    """The pipeline's chunks, one at a time, forever: take the next only
    after settling (ack/nak) the one before, or it stays out until
    ``ack_wait`` passes. A message that is not a WorkChunk is dropped."""
    sub = await js.pull_subscribe(
        subject(pipeline),
        durable=consumer_name(pipeline),
        stream=STREAM,
        config=consumer_config(pipeline, ack_wait),
    )
    try:
        while True:
            try:
                msgs = await long_fetch(sub, 1, _FETCH_WAIT_S)
            except TimeoutError:  # idle: no chunk yet
                continue
            for msg in msgs:
                try:
                    chunk = pachinternal.WorkChunk.FromString(msg.data)
                except DecodeError:
                    await msg.term()
                    continue
                yield ReceivedChunk(chunk, int(msg.metadata.num_delivered), msg)
    finally:
        # A pull request still open on the server would take a chunk this
        # worker never sees (it would come back only after ack_wait).
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
