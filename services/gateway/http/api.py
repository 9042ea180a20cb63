"""The HTTP JSON API: every unary RPC of pfs, pps, auth and enterprise as
``POST /api/<service>/<Method>`` with ``Content-Type: application/json``
(``GET`` also serves a read without fields, e.g. ``GET /api/pfs/ListRepo``;
a method that changes state answers 405 to GET and HEAD), e.g.
``POST /api/pfs/CreateRepo {"repo": {"name": "images"}}``. pps's
server-streaming RPCs (``ListJobStream``, ``FlushJob``, ``ListDatumStream``,
``GetLogs`` without ``follow``) answer a JSON array of their messages,
gathered up to the gRPC message limit.

Bodies and answers are the protobuf JSON forms of the gRPC messages, so the
two front doors cannot drift apart: the routes come from the services'
descriptors and go to the same bus commands and queries as gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from libs.api.auth import auth_pb2
from libs.api.enterprise import enterprise_pb2
from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2
from libs.api.pps import pps_pb2
from libs.bounds import check_json_depth, check_message
from libs.bus import Bus, kind_for
from libs.errors import InvalidArgument, NotFound, Unimplemented, to_wire
from services.gateway.app import file_pages, jobs
from services.gateway.app import ingest as files
from services.gateway.app.authn import AUTH_CHANGES, ENTERPRISE_CHANGES, rpc_kind
from services.gateway.app.gc import garbage_collect
from services.gateway.app.replies import MAX_REPLY, TooLarge
from services.gateway.app.unserved import REFUSED, refusal
from services.gateway.http.keys import AUTHN, BUS, STORE
from services.gateway.principal import Ask, http_ask, http_principal, http_token, timeout_for

R = TypeVar("R", bound=Message)


# URL segment -> (the gRPC service, the backend that serves it)
SERVICES: dict[str, tuple[ServiceDescriptor, str]] = {
    "pfs": (pfs_pb2.DESCRIPTOR.services_by_name["API"], "pfs"),
    "pps": (pps_pb2.DESCRIPTOR.services_by_name["API"], "pps"),
    "auth": (auth_pb2.DESCRIPTOR.services_by_name["API"], "auth"),
    "enterprise": (enterprise_pb2.DESCRIPTOR.services_by_name["API"], "enterprise"),
}
# What changes auth or enterprise state (the gateway's view catches up
# before answering, as over gRPC); the other RPCs of theirs only read.
CHANGES = {"auth": AUTH_CHANGES, "enterprise": ENTERPRISE_CHANGES}


def _kind(backend: str, name: str) -> str:
    changes = CHANGES.get(backend)
    return kind_for(name) if changes is None else rpc_kind(name, changes)


def _method(service: str, name: str) -> tuple[MethodDescriptor, str]:
    found = SERVICES.get(service)
    if found is None:
        raise NotFound(f"no API named {service!r}; try one of {sorted(SERVICES)}")
    descriptor, backend = found
    method = descriptor.methods_by_name.get(name)
    if method is None:
        raise NotFound(f"{descriptor.full_name} has no method {name!r}", method=name)
    streamed = method.server_streaming and (backend, name) in STREAMED
    if method.client_streaming or (method.server_streaming and not streamed):
        raise Unimplemented(f"{descriptor.full_name}/{name} streams; use gRPC", method=name)
    return method, backend


def parse_body(body: bytes, req: Message) -> None:
    """Fill ``req`` from a JSON body (empty: leave it empty); a body that is
    not UTF-8, not JSON, nested too deeply or not the message's shape is a
    400 naming the problem."""
    what = f"{req.DESCRIPTOR.name} body"
    if not body.strip():
        return
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{what} is not UTF-8: bad byte at offset {exc.start}") from None
    check_json_depth(what, text)
    try:
        json_format.Parse(text, req)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidArgument(f"bad {what}: {exc}") from None
    check_message(req)


async def call(request: web.Request) -> web.Response:
    method, backend = _method(request.match_info["service"], request.match_info["method"])
    if request.method != "POST" and _kind(backend, method.name) != "qry":
        err = InvalidArgument(
            f"{method.containing_service.full_name}/{method.name} changes state: "
            f"POST it with Content-Type: application/json (GET and HEAD only read)",
            method=method.name,
        )
        return web.json_response({"error": to_wire(err)}, status=405, headers={"Allow": "POST"})
    req: Message = message_factory.GetMessageClass(method.input_type)()
    parse_body(await request.read(), req)
    if method.server_streaming:
        items = STREAMED[(backend, method.name)](request, req)
        return web.json_response(await _gather_json(items, method.name))
    gathered = GATHERED.get((backend, method.name))
    if (backend, method.name) == ("auth", "WhoAmI"):  # about the token: only here
        reply: Message = request.app[AUTHN].whoami(http_token(request))
    elif gathered is not None:
        asked = ASKED_OF.get((backend, method.name), backend)
        reply = await gathered(request.app, http_ask(request.app[BUS], request, asked), req)
    else:
        reply = await request.app[BUS].request(
            backend,
            method.name,
            req,
            message_factory.GetMessageClass(method.output_type),
            kind=_kind(backend, method.name),
            principal=http_principal(request),
            timeout=timeout_for(method.name, request.app[BUS].timeout),
        )
        if method.name in CHANGES.get(backend, ()):
            await request.app[AUTHN].changed()
    return web.json_response(json_format.MessageToDict(reply))


async def _list_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await file_pages.gather(file_pages.list_file(ask, req), "ListFile", MAX_REPLY)


async def _glob_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await file_pages.gather(file_pages.glob_file(ask, req), "GlobFile", MAX_REPLY)


async def _diff_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await file_pages.diff_file(ask, req, MAX_REPLY)


async def _copy_file(app: web.Application, ask: Ask, req: Any) -> Message:
    return await files.copy_file(app[STORE], ask, req)


async def _inspect_job(app: web.Application, ask: Ask, req: Any) -> Message:
    # No deadline over HTTP: a blocking wait lasts until the client leaves.
    return await jobs.wait_for_job(ask, req, jobs.no_deadline)


async def _list_datum(app: web.Application, ask: Ask, req: Any) -> Message:
    return await jobs.gather_datums(ask, req, MAX_REPLY)


async def _garbage_collect(app: web.Application, ask: Ask, req: Any) -> Message:
    # Over HTTP the answer is what was kept, deleted and spared (gRPC sends
    # 1.7's empty reply and these counts in trailing metadata).
    return await garbage_collect(ask, req)


async def _restart_datum(app: web.Application, ask: Ask, req: Any) -> Message:
    # Over HTTP the answer is which datums were restarted (gRPC: trailing metadata).
    return await ask("RestartDatum", req, work.RestartDatumResult, "cmd")


def _refuse(rpc: str) -> Callable[[web.Application, Ask, Any], Awaitable[Message]]:
    async def refuse(app: web.Application, ask: Ask, req: Any) -> Message:
        raise refusal(rpc)

    return refuse


# A gathered RPC of one API that another service answers: pfs collects
# garbage for pps.API's GarbageCollect.
ASKED_OF = {("pps", "GarbageCollect"): "pfs"}

# RPCs the gateway answers itself, from pfs's and pps's pages or with the
# object store, as the gRPC servicers do.
GATHERED: dict[tuple[str, str], Callable[[web.Application, Ask, Any], Awaitable[Message]]] = {
    ("pfs", "ListFile"): _list_file,
    ("pfs", "GlobFile"): _glob_file,
    ("pfs", "DiffFile"): _diff_file,
    ("pfs", "CopyFile"): _copy_file,
    ("pps", "InspectJob"): _inspect_job,
    ("pps", "ListDatum"): _list_datum,
    ("pps", "GarbageCollect"): _garbage_collect,
    ("pps", "RestartDatum"): _restart_datum,
    **{("pps", rpc): _refuse(rpc) for rpc in REFUSED},
}


async def _list_job_stream(http: web.Request, req: Any) -> AsyncIterator[Message]:
    infos = await http_ask(http.app[BUS], http, "pps")("ListJob", req, pps_pb2.JobInfos, "qry")
    for info in infos.job_info:
        yield info


def _flush_job(http: web.Request, req: Any) -> AsyncIterator[Message]:
    bus = http.app[BUS]
    return jobs.flush_jobs(
        http_ask(bus, http, "pfs"), http_ask(bus, http, "pps"), req, jobs.no_deadline
    )


def _list_datum_stream(http: web.Request, req: Any) -> AsyncIterator[Message]:
    return jobs.list_datums(http_ask(http.app[BUS], http, "pps"), req)


def _get_logs(http: web.Request, req: Any) -> AsyncIterator[Message]:
    if req.follow:
        raise InvalidArgument("GetLogs with follow never ends; use gRPC to follow logs")
    return jobs.log_messages(http_ask(http.app[BUS], http, "pps"), req)


# Server-streaming RPCs answered as a JSON array of their messages.
STREAMED: dict[tuple[str, str], Callable[[web.Request, Any], AsyncIterator[Message]]] = {
    ("pps", "ListJobStream"): _list_job_stream,
    ("pps", "FlushJob"): _flush_job,
    ("pps", "ListDatumStream"): _list_datum_stream,
    ("pps", "GetLogs"): _get_logs,
}


async def _gather_json(items: AsyncIterator[Message], rpc: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    size = 0
    async for item in items:
        size += item.ByteSize() + 6
        if size > MAX_REPLY:
            raise TooLarge(rpc, f"gRPC {rpc}", MAX_REPLY)
        out.append(json_format.MessageToDict(item))
    return out


def mount(app: web.Application, bus: Bus) -> None:
    app[BUS] = bus
    app.router.add_post("/api/{service}/{method}", call)
    app.router.add_get("/api/{service}/{method}", call)
