"""The one place where the gateway turns a ``PachError`` into a gRPC status
or an HTTP response (via ``libs.errors.grpc_status`` / ``http_status``).

Servicers and HTTP handlers just raise; these two wrappers translate.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.message import Message

from libs.bounds import check_message
from libs.errors import (
    DiskFull,
    MalformedMessage,
    PachError,
    from_unexpected,
    grpc_status,
    http_status,
    to_wire,
)
from libs.observe import get_logger

_log = get_logger("gateway.errors")


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], err: PachError) -> None:
    await context.abort(grpc_status(err), str(err))


class _Malformed:
    """What the deserializer hands on for bytes that are not the request
    message; the servicer wrapper turns it into INVALID_ARGUMENT (grpc would
    report a deserializer's exception as UNKNOWN)."""

    def __init__(self, what: str, reason: str) -> None:
        self.error = MalformedMessage(what, reason)


def _safe_deserializer(
    deserialize: Callable[[bytes], Any] | None, method: str
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def wrapped(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, RecursionError, ...
            return _Malformed(f"request to {method}", f"{type(exc).__name__}: {exc}")

    return wrapped


def _checked(request: Any) -> Any:
    """The request, or its error: malformed, or a name or path over its bound
    (checked here, before any of it reaches NATS)."""
    if isinstance(request, _Malformed):
        raise request.error
    if isinstance(request, Message):
        check_message(request)
    return request


async def _checked_stream(requests: Any) -> Any:
    async for request in requests:
        yield _checked(request)


def _unexpected(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> PachError:
    err = from_unexpected(exc)
    if not isinstance(exc, PachError):
        _log.exception("servicer failed", error=str(err))
    return err


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
        method = handler_call_details.method
        kw: dict[str, Any] = {
            "request_deserializer": _safe_deserializer(handler.request_deserializer, method),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, False), **kw)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, True), **kw)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, False), **kw
            )
        behavior: Callable[..., Any] | None = handler.stream_stream
        if behavior is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(_streaming(behavior, True), **kw)


def _unary(behavior: Callable[..., Any], streamed: bool) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = _checked_stream(request) if streamed else _checked(request)
            return await behavior(request, context)
        except PachError as err:
            await abort_with(context, err)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort_with(context, _unexpected(context, exc))

    return wrapped


def _streaming(behavior: Callable[..., Any], streamed: bool) -> Callable[..., Any]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = _checked_stream(request) if streamed else _checked(request)
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except PachError as err:
            await abort_with(context, err)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await abort_with(context, _unexpected(context, exc))

    return wrapped


def error_response(err: PachError) -> web.Response:
    return web.json_response({"error": to_wire(err)}, status=http_status(err))


@web.middleware
async def http_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Maps a ``PachError`` raised by any HTTP handler to its status + JSON;
    a full disk is 507, anything unexpected a one-line 500."""
    try:
        return await handler(request)
    except PachError as err:
        return error_response(err)
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception as exc:
        failure = from_unexpected(exc, f"{request.method} {request.path}")
        if not isinstance(failure, DiskFull):
            _log.exception("http handler failed", error=str(failure))
        return error_response(failure)
