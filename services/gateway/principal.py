"""Who is calling: the ``authn-token`` metadata (HTTP: also ``Authorization:
Bearer`` or the dashboard's session cookie) becomes the principal passed to
the bus. Once the gateway installed its ``Authenticator`` (``app/authn.py``),
the token is checked and the principal is the subject it stands for;
without one (a bare bus in a test) the token itself is passed on.

Servicers call backends through ``ask`` so the principal always travels."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from aiohttp import web
from google.protobuf.message import Message

from libs.bus import Bus
from services.gateway.app.authn import Authenticator

TOKEN_KEY = "authn-token"
# The dashboard's sign-in cookie (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "pach_session"

_authenticator: Authenticator | None = None


def install(authenticator: Authenticator | None) -> None:
    """Check every caller's token with ``authenticator`` from now on."""
    global _authenticator
    _authenticator = authenticator


def _who(token: str) -> str:
    return token if _authenticator is None else _authenticator.subject(token)


Resp = TypeVar("Resp", bound=Message)
R = TypeVar("R", bound=Message)


class Ask(Protocol):
    """A backend bus call on behalf of a caller (gRPC or HTTP)."""

    async def __call__(
        self, name: str, request: Message, response_type: type[R], kind: str
    ) -> R: ...


class HasMetadata(Protocol):
    def invocation_metadata(self) -> Any: ...

    def time_remaining(self) -> float | None: ...


# Commands whose work grows with the data (building a commit's tree) get
# this long when the caller set no deadline; others the bus's default.
# Commands whose work grows with the data: they wait as long as the caller
# allows, not the bus's default.
LONG_COMMANDS = frozenset(
    {"FinishCommit", "EndPut", "BuildCommit", "CreatePipeline", "DeletePipeline", "DeleteAll"}
    | {"GarbageCollect"}
)
LONG_TIMEOUT_S = 3600.0


def timeout_for(name: str, default: float, remaining: float | None = None) -> float:
    """How long to wait for backend command ``name``: ``LONG_COMMANDS`` until
    the caller's deadline (``remaining`` seconds), or ``LONG_TIMEOUT_S``
    without one; the others ``default``, or less if the deadline is sooner."""
    if name in LONG_COMMANDS:
        wait = LONG_TIMEOUT_S if remaining is None else remaining
    else:
        wait = default if remaining is None else min(default, remaining)
    return max(wait, 0.001)


def grpc_token(context: HasMetadata) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TOKEN_KEY and isinstance(value, str):
            return value
    return ""


def grpc_principal(context: HasMetadata) -> str:
    return _who(grpc_token(context))


def http_token(request: web.Request) -> str:
    """The HTTP caller's token: ``authn-token``, ``Authorization: Bearer``,
    or the dashboard's session cookie (``http/session.py``)."""
    token = request.headers.get(TOKEN_KEY, "")
    if not token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    if not token:
        token = request.cookies.get(SESSION_COOKIE, "")
    return token


def http_principal(request: web.Request) -> str:
    return _who(http_token(request))


def auth_active() -> bool:
    """Whether auth is active (as the gateway's view last saw it)."""
    return _authenticator is not None and _authenticator.view.state.active


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
    """Call ``<kind>.<service>.<name>`` on behalf of the gRPC caller, within
    its deadline."""
    return await bus.request(
        service,
        name,
        request,
        response_type,
        kind=kind,
        principal=grpc_principal(context),
        timeout=timeout_for(name, bus.timeout, context.time_remaining()),
    )


def http_ask(bus: Bus, http: web.Request, service: str) -> Ask:
    """Backend calls on behalf of the HTTP caller (its ``authn-token``)."""
    return _ask_as(bus, http_principal(http), service)


def token_ask(bus: Bus, token: str, service: str) -> Ask:
    """Backend calls on behalf of the caller holding ``token`` (the local
    read socket's requests carry it in their JSON)."""
    return _ask_as(bus, _who(token), service)


def _ask_as(bus: Bus, principal: str, service: str) -> Ask:
    async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
        return await bus.request(
            service,
            name,
            request,
            response_type,
            kind=kind,
            principal=principal,
            timeout=timeout_for(name, bus.timeout),
        )

    return call
