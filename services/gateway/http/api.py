"""The HTTP JSON API: every unary RPC of a Pachyderm API as
``POST /api/<service>/<Method>`` (``GET`` for a request without fields),
e.g. ``POST /api/pfs/CreateRepo {"repo": {"name": "images"}}``.

Bodies and answers are the protobuf JSON forms of the gRPC messages, so the
two front doors cannot drift apart: the routes come from the services'
descriptors and go to the same bus commands and queries as gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from libs.api.pfs import pfs_pb2
from libs.bus import Bus, kind_for
from libs.errors import InvalidArgument, NotFound, Unimplemented
from services.gateway import file_pages, files
from services.gateway.http.keys import BUS, STORE
from services.gateway.principal import Ask, http_ask, http_principal, timeout_for

R = TypeVar("R", bound=Message)
# The largest JSON-bridged listing, as the gRPC message limit.
REPLY_LIMIT = 20 << 20


# URL segment -> (the gRPC service, the backend that serves it)
SERVICES: dict[str, tuple[ServiceDescriptor, str]] = {
    "pfs": (pfs_pb2.DESCRIPTOR.services_by_name["API"], "pfs"),
}


def _method(service: str, name: str) -> tuple[MethodDescriptor, str]:
    found = SERVICES.get(service)
    if found is None:
        raise NotFound(f"no API named {service!r}; try one of {sorted(SERVICES)}")
    descriptor, backend = found
    method = descriptor.methods_by_name.get(name)
    if method is None:
        raise NotFound(f"{descriptor.full_name} has no method {name!r}", method=name)
    if method.client_streaming or method.server_streaming:
        raise Unimplemented(f"{descriptor.full_name}/{name} streams; use gRPC", method=name)
    return method, backend


async def call(request: web.Request) -> web.Response:
    method, backend = _method(request.match_info["service"], request.match_info["method"])
    req: Message = message_factory.GetMessageClass(method.input_type)()
    body = await request.read()
    if body.strip():
        try:
            json_format.Parse(body, req)
        except json_format.ParseError as exc:
            raise InvalidArgument(f"bad {method.input_type.name} body: {exc}") from None
    gathered = GATHERED.get((backend, method.name))
    if gathered is not None:
        reply = await gathered(request.app, http_ask(request.app[BUS], request, backend), req)
    else:
        reply = await request.app[BUS].request(
            backend,
            method.name,
            req,
            message_factory.GetMessageClass(method.output_type),
            kind=kind_for(method.name),
            principal=http_principal(request),
            timeout=timeout_for(method.name, request.app[BUS].timeout),
        )
    return web.json_response(json_format.MessageToDict(reply))


async def _list_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await file_pages.gather(file_pages.list_file(ask, req), "ListFile", REPLY_LIMIT)


async def _glob_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await file_pages.gather(file_pages.glob_file(ask, req), "GlobFile", REPLY_LIMIT)


async def _diff_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await file_pages.diff_file(ask, req, REPLY_LIMIT)


async def _copy_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await files.copy_file(app[STORE], ask, req)


# RPCs the gateway answers itself, from pfs's pages or with the object store,
# as the gRPC servicer does.
GATHERED: dict[tuple[str, str], Callable[[web.Application, Ask, Any], Awaitable[Message]]] = {
    ("pfs", "ListFile"): _list_file,
    ("pfs", "GlobFile"): _glob_file,
    ("pfs", "DiffFile"): _diff_file,
    ("pfs", "CopyFile"): _copy_file,
}


def mount(app: web.Application, bus: Bus) -> None:
    app[BUS] = bus
    app.router.add_post("/api/{service}/{method}", call)
    app.router.add_get("/api/{service}/{method}", call)
