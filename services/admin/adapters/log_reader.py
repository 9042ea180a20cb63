"""Read a JetStream stream's stored messages in order, fast, up to a sequence.

An ephemeral pull consumer (no acks, in memory) delivers the stream from
sequence 1; we ask for big batches (bounded in bytes too) one after another
and stop exactly at ``last_seq``. A round trip per batch of a thousand
messages costs far less than handling them, so batches are not pipelined.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from libs.errors import DeadlineExceeded, FailedPrecondition, Unavailable

BATCH = 1000
BATCH_BYTES = 16 << 20
# Also the pull request's expiry: messages that exist arrive in milliseconds.
TIMEOUT_S = 10.0
# A slow caller may keep us between requests for long; a crashed extract's
# consumer (in memory, small) goes after this.
CONSUMER_IDLE_S = 3600.0


class StoredMessage(NamedTuple):
    seq: int
    subject: str
    data: bytes


def stream_seq(reply: str) -> int:
    """The stream sequence in a JetStream delivery's reply subject
    (``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>...`` or the form with
    domain and account hash)."""
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5])
    if len(tokens) >= 11:
        return int(tokens[7])
    raise Unavailable(f"unexpected JetStream delivery subject {reply!r}")


async def read_stream(
    js: JetStreamContext,
    stream: str,
    last_seq: int,
    *,
    batch: int = BATCH,
    batch_bytes: int = BATCH_BYTES,
    timeout: float = TIMEOUT_S,
) -> AsyncIterator[StoredMessage]:
    """Messages 1..``last_seq`` of ``stream``, in order, each exactly once.

    FailedPrecondition when the stream does not hold every one of them (a
    gap: a deleted message, or a stream that no longer starts at 1)."""
    if last_seq <= 0:
        return
    nc = js._nc
    prefix = js._prefix
    try:
        info = await js.add_consumer(
            stream,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.ALL,
                ack_policy=api.AckPolicy.NONE,
                inactive_threshold=CONSUMER_IDLE_S,
                mem_storage=True,
                num_replicas=1,
            ),
        )
    except nats.js.errors.NotFoundError:
        raise FailedPrecondition(f"event stream {stream} does not exist") from None
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        raise Unavailable(f"event stream {stream} unavailable") from None
    consumer = info.name
    inbox = nc.new_inbox()
    arrived: deque[Msg] = deque()
    wake = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        arrived.append(msg)
        wake.set()

    sub = await nc.subscribe(
        inbox, cb=on_msg, pending_msgs_limit=batch * 4, pending_bytes_limit=batch_bytes * 4
    )
    next_request = f"{prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
    next_seq = 1
    try:
        while next_seq <= last_seq:
            wanted = min(batch, last_seq - next_seq + 1)
            request = {
                "batch": wanted,
                "max_bytes": batch_bytes,
                "expires": int(timeout * 1_000_000_000),
            }
            await nc.publish(next_request, json.dumps(request).encode(), reply=inbox)
            got = 0
            while got < wanted:
                if not arrived:
                    # Only the wait counts against the timeout, not the
                    # time our caller takes with what we yielded.
                    wake.clear()
                    try:
                        async with asyncio.timeout(timeout + 5):
                            await wake.wait()
                    except TimeoutError:
                        raise DeadlineExceeded(
                            f"reading {stream}: message {next_seq} did not arrive "
                            f"within {timeout + 5:g}s"
                        ) from None
                    continue
                msg = arrived.popleft()
                if msg.reply:
                    seq = stream_seq(msg.reply)
                    if seq != next_seq:
                        raise FailedPrecondition(
                            f"event stream {stream} has a gap: message {next_seq} is "
                            f"missing (the next one stored is {seq})"
                        )
                    yield StoredMessage(seq, msg.subject, msg.data)
                    next_seq += 1
                    got += 1
                    continue
                # A status: the request ended (expired, over its bytes), or
                # a heartbeat, or the end of an earlier request.
                headers = msg.headers or {}
                status = headers.get("Status", "")
                about = headers.get("Description", "")
                if status == "100" or (status == "409" and about == "Batch Completed"):
                    continue
                if status == "409" and "MaxBytes" in about:
                    if got == 0:
                        # The next message alone is over the byte bound.
                        batch_bytes *= 2
                    break
                if status in ("404", "408") and got > 0:
                    break
                raise DeadlineExceeded(
                    f"reading {stream}: message {next_seq} of {last_seq} did not arrive "
                    f"({status} {about})".rstrip()
                    if status in ("404", "408")
                    else f"reading {stream}: unexpected status {status} {about}".rstrip()
                )
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
        # (else its inactive threshold removes it)
        with contextlib.suppress(nats.errors.Error, nats.js.errors.Error):
            await js.delete_consumer(stream, consumer)
