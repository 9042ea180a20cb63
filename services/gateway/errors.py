"""The one place where the gateway turns a ``PachError`` into a gRPC status
or an HTTP response (via ``libs.errors.grpc_status`` / ``http_status``).

Servicers and HTTP handlers just raise; these two wrappers translate.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from libs.errors import PachError, grpc_status, http_status, to_wire


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], err: PachError) -> None:
    await context.abort(grpc_status(err), str(err))


class GrpcErrors(grpc.aio.ServerInterceptor):
    """Maps a ``PachError`` raised by any servicer to its gRPC status."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        kw: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary), **kw)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary), **kw)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_streaming(handler.unary_stream), **kw)
        behavior: Callable[..., Any] | None = handler.stream_stream
        if behavior is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(_streaming(behavior), **kw)


def _unary(behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await behavior(request, context)
        except PachError as err:
            await abort_with(context, err)

    return wrapped


def _streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except PachError as err:
            await abort_with(context, err)

    return wrapped


def error_response(err: PachError) -> web.Response:
    return web.json_response({"error": to_wire(err)}, status=http_status(err))


@web.middleware
async def http_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Maps a ``PachError`` raised by any HTTP handler to its status + JSON."""
    try:
        return await handler(request)
    except PachError as err:
        return error_response(err)
