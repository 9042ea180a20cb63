"""Who is calling: the ``authn-token`` metadata becomes the principal passed
to the bus (empty when absent). Checking the token is a later issue.

Servicers call backends through ``ask`` so the principal always travels."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from aiohttp import web
from google.protobuf.message import Message

from libs.bus import Bus

TOKEN_KEY = "authn-token"

Resp = TypeVar("Resp", bound=Message)


class HasMetadata(Protocol):
    def invocation_metadata(self) -> Any: ...


def grpc_principal(context: HasMetadata) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_KEY and isinstance(value, str):
            return value
    return ""


def http_principal(request: web.Request) -> str:
    return request.headers.get(TOKEN_KEY, "")


async def ask(
    bus: Bus,
    context: HasMetadata,
    service: str,
    name: str,
    request: Message,
    response_type: type[Resp],
    *,
    kind: str = "cmd",
) -> Resp:
    """Call ``<kind>.<service>.<name>`` on behalf of the gRPC caller."""
    return await bus.request(
        service, name, request, response_type, kind=kind, principal=grpc_principal(context)
    )
