"""One log line and one span per front-door request.

``GrpcRequestLog`` is a grpc.aio server interceptor and
``http_request_log`` an aiohttp middleware. Each runs the handler inside a
SERVER span (continuing a caller's W3C trace context if it sent one), so
every bus call the handler makes continues the same trace into the
services, and logs exactly one line when the request ends: method, status
and duration_ms.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import propagate, trace

_tracer = trace.get_tracer("libs.observe.requests")
_log = structlog.get_logger("request")


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _grpc_code(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None) -> str:
    code_of = getattr(context, "code", None)
    code = code_of() if callable(code_of) else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if exc is None:
        return grpc.StatusCode.OK.name
    if isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.UNKNOWN.name
    return grpc.StatusCode.UNKNOWN.name


class GrpcRequestLog(grpc.aio.ServerInterceptor):
    """Wraps every RPC (all four kinds) in a span and one log line."""

    def __init__(self, logger: Any = None) -> None:
        self._log = logger or _log

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        metadata = {
            k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, metadata, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, metadata, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, metadata, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        behavior: Callable[..., Any] | None = handler.stream_stream
        if behavior is None:
            return handler
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(method, metadata, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _finish(
        self,
        method: str,
        started: float,
        context: grpc.aio.ServicerContext[Any, Any],
        exc: BaseException | None,
        span: trace.Span,
    ) -> None:
        status = _grpc_code(context, exc)
        span.set_attribute("rpc.grpc.status_code", status)
        if status != "OK":
            span.set_status(trace.Status(trace.StatusCode.ERROR, status))
        self._log.info(
            "grpc request", method=method, status=status, duration_ms=_elapsed_ms(started)
        )

    def _unary(
        self, method: str, metadata: dict[str, str], behavior: Callable[..., Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            parent = propagate.extract(metadata)
            with _tracer.start_as_current_span(
                method, context=parent, kind=trace.SpanKind.SERVER, record_exception=False
            ) as span:
                try:
                    result = await behavior(request, context)
                except BaseException as exc:
                    self._finish(method, started, context, exc, span)
                    raise
                self._finish(method, started, context, None, span)
                return result

        return wrapped

    def _streaming(
        self, method: str, metadata: dict[str, str], behavior: Callable[..., Any]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            parent = propagate.extract(metadata)
            with _tracer.start_as_current_span(
                method, context=parent, kind=trace.SpanKind.SERVER, record_exception=False
            ) as span:
                try:
                    result = behavior(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result
                except BaseException as exc:
                    self._finish(method, started, context, exc, span)
                    raise
                self._finish(method, started, context, None, span)

        return wrapped


def http_request_log(logger: Any = None) -> Middleware:
    """An aiohttp middleware: one span and one log line per HTTP request."""
    log = logger or _log

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        parent = propagate.extract(dict(request.headers))
        status = 500
        with _tracer.start_as_current_span(
            f"HTTP {request.method} {request.path}", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                span.set_attribute("http.status_code", status)
                log.info(
                    "http request",
                    method=request.method,
                    path=request.path,
                    status=status,
                    duration_ms=_elapsed_ms(started),
                )

    return middleware
