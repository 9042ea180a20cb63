"""``closed_by_client`` over real gRPC on loopback: a stream the client
cancelled half-way never reads as ended, however the race between the
stream's end and the cancellation falls; a stream the client closed does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from services.gateway.grpc.streams import closed_by_client

TRIES = 400


class Recorder:
    """A client-streaming handler that counts how each stream ended."""

    def __init__(self) -> None:
        self.ended: list[bytes] = []  # what streams that read as closed carried
        self.cancelled = 0

    async def put(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        got = []
        try:
            async for block in closed_by_client(requests, context):
                got.append(block)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.ended.append(b"".join(got))
        return b"recorded"


async def test_cancelled_streams_never_end_and_closed_ones_do() -> None:
    recorder = Recorder()
    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_unary_rpc_method_handler(recorder.put)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Streams", {"Put": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            put: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
                "/test.Streams/Put"
            )

            async def gives_up() -> AsyncIterator[bytes]:
                yield b"half of it"
                raise RuntimeError("the client gave up")  # grpc.aio cancels the call

            async def whole() -> AsyncIterator[bytes]:
                yield b"all "
                yield b"of it"

            for i in range(TRIES):
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                    await put(gives_up(), timeout=30)
                if i % 10 == 0:
                    assert await put(whole(), timeout=30) == b"recorded"
        await asyncio.sleep(0.5)  # the last cancellations reach their handlers
    finally:
        await server.stop(None)
    assert recorder.ended == [b"all of it"] * (TRIES // 10)
    assert recorder.cancelled == TRIES
