"""Who is calling: the ``authn-token`` metadata becomes the principal passed
to the bus (empty when absent). Checking the token is a later issue."""

from __future__ import annotations

from typing import Any

import grpc.aio
from aiohttp import web

TOKEN_KEY = "authn-token"


def grpc_principal(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_KEY and isinstance(value, str):
            return value
    return ""


def http_principal(request: web.Request) -> str:
    return request.headers.get(TOKEN_KEY, "")
