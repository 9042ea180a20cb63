"""Signing in to the dashboard once auth is active.

A browser cannot put a token on every request (an ``EventSource`` sends no
headers), so the dashboard keeps the caller's Pachyderm token in a cookie
the gateway sets: ``POST /api/session/login`` with ``{"token": ...}`` (a
token from ``pachctl auth get-auth-token`` or a login page) or
``{"one_time_password": ...}`` (``pachctl auth get-otp``, exchanged through
the auth service's ``Authenticate`` as gRPC callers do). The cookie is
``HttpOnly`` (no script reads it) and ``SameSite=Strict`` (another site's
pages never send it); what it carries is checked on every request exactly as
an ``Authorization: Bearer`` token is (``principal.http_token``), so a
revoked token or a removed ACL holds from the next request on.
``POST /api/session/logout`` forgets it; ``GET /api/session`` says whether
auth is active and who is signed in.

While auth is active, a dashboard page asked for without a live token is
redirected to ``/login`` (``require_session``); the JSON API and downloads
answer 401 as they do to any caller without one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from libs.api.auth import auth_pb2 as auth
from libs.bounds import check_json_depth
from libs.bus import Bus
from libs.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from services.gateway.app.authn import Authenticator
from services.gateway.http.keys import AUTHN, LOGIN
from services.gateway.principal import SESSION_COOKIE, http_token

SESSION_BUS = web.AppKey("session-bus", Bus)
# The dashboard's own pages: while auth is active they need a signed-in caller.
PAGES = ("/", "/pipelines")
PAGE_PREFIXES = ("/pipelines/", "/jobs/", "/repos/")
MAX_CREDENTIAL = 512
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_page(path: str) -> bool:
    return path in PAGES or path.startswith(PAGE_PREFIXES)


def safe_next(value: str) -> str:
    """Where to go after signing in: a path of this site, never another's
    (``//evil.example`` and ``/\\evil.example`` are other sites to a browser)."""
    if not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return "/"
    if any(ord(c) < 0x21 for c in value):
        return "/"
    return value


def _credentials(raw: bytes) -> tuple[str, str]:
    """``(token, one_time_password)`` from a sign-in body: exactly one set."""
    try:
        text = raw.decode("utf-8")
        check_json_depth("sign-in body", text)
        body: Any = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument("the sign-in body is not JSON in UTF-8") from None
    if not isinstance(body, dict) or set(body) - {"token", "one_time_password"}:
        raise InvalidArgument('sign in with {"token": ...} or {"one_time_password": ...}')
    token, otp = body.get("token") or "", body.get("one_time_password") or ""
    if not isinstance(token, str) or not isinstance(otp, str) or bool(token) == bool(otp):
        raise InvalidArgument("sign in with exactly one of a token or a one-time password")
    if len(token) > MAX_CREDENTIAL or len(otp) > MAX_CREDENTIAL:
        raise InvalidArgument(
            f"a token or one-time password is at most {MAX_CREDENTIAL} characters"
        )
    return token, otp


def _signed_in(request: web.Request) -> str:
    """The subject of the caller's token ("" if none or not live)."""
    try:
        return request.app[AUTHN].subject(http_token(request))
    except Unauthenticated:  # expired or revoked: signed out
        return ""


@web.middleware
async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """While auth is active, a dashboard page without a live token goes to
    ``/login`` (with where it was going)."""
    authn = request.app.get(AUTHN)
    if (
        authn is not None
        and request.method in ("GET", "HEAD")
        and _is_page(request.path)
        and authn.view.state.active
        and not _signed_in(request)
    ):
        target = quote(safe_next(request.path_qs), safe="/")
        raise web.HTTPSeeOther(f"/login?next={target}")
    return await handler(request)


async def whoami(request: web.Request) -> web.Response:
    active = request.app[AUTHN].view.state.active
    login = request.app.get(LOGIN)
    body = {
        "auth_active": active,
        "subject": _signed_in(request) if active else "",
        "oidc": login is not None and login.configured,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def login(request: web.Request) -> web.Response:
    authn = request.app[AUTHN]
    if not authn.view.state.active:
        raise FailedPrecondition("auth is not active: the dashboard needs no sign-in")
    token, otp = _credentials(await request.read())
    if otp:
        try:
            reply = await request.app[SESSION_BUS].request(
                "auth",
                "Authenticate",
                auth.AuthenticateRequest(one_time_password=otp),
                auth.AuthenticateResponse,
                kind="cmd",
            )
        except NotFound:  # to a sign-in, a credential that does not work
            raise Unauthenticated(
                "that one-time password is unknown, expired or already used"
            ) from None
        await authn.changed()  # the new token is live from the next request on
        token = reply.pach_token
    subject = authn.subject(token)
    if not subject:
        raise Unauthenticated("that token is not a live Pachyderm token (expired or revoked?)")
    response = web.json_response({"subject": subject}, headers={"Cache-Control": "no-store"})
    set_session(response, token, secure=request.secure)
    return response


def set_session(response: web.StreamResponse, token: str, *, secure: bool) -> None:
    """Keep ``token`` in the browser: no script reads it, no other site's
    page sends it."""
    response.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=secure
    )


async def logout(_: web.Request) -> web.Response:
    response = web.json_response({}, headers={"Cache-Control": "no-store"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def mount(app: web.Application, bus: Bus, authn: Authenticator) -> None:
    """Add the sign-in API (the page itself, ``/login``, is the dashboard's);
    ``require_session`` must be among the app's middlewares (``build_app``
    puts it there)."""
    app[AUTHN] = authn
    app[SESSION_BUS] = bus
    app.router.add_get("/api/session", whoami)
    app.router.add_post("/api/session/login", login)
    app.router.add_post("/api/session/logout", logout)
