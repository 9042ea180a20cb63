"""The gRPC answer to every method nothing else serves: UNIMPLEMENTED with
one line saying so (``services.gateway.app.unserved``), whatever the call's
shape (unary or streaming), instead of the bare "Method not found!".

Register it after every served API: gRPC asks generic handlers in order, so
it only answers what none of them took."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from services.gateway.app.unserved import unserved_method
from services.gateway.errors import abort_with


class Unserved(grpc.GenericRpcHandler):
    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method = str(handler_call_details.method)  # type: ignore[attr-defined]

        async def refuse(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            await abort_with(context, unserved_method(method))
            yield b""  # pragma: no cover - abort raises

        return grpc.stream_stream_rpc_method_handler(refuse)


def register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((Unserved(),))
