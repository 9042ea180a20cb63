"""``GET /authorization-code/callback``: where the OpenID Connect provider
sends the browser back after a login ``pachctl auth login`` started
(``app/oidc.py`` checks the state, exchanges the code, verifies the ID
token and has a Pachyderm token issued). The page shows that token to
paste back into pachctl, as Pachyderm 1.7's GitHub login did.

A dashboard sign-in (``POST /api/session/oidc`` from the login page) ends
differently: the callback must come from the browser that started it (a
``pach_oidc`` cookie holding the login's own secret, sent only to the
callback), and the token goes into the session cookie (``http/session.py``)
instead of onto the page.

Every page (the token or why not, with its 4xx/5xx status) is HTML with
everything that came from outside escaped, no script, a CSP that allows
nothing to load, ``Cache-Control: no-store`` and no referrer."""

from __future__ import annotations

import html
import json

from aiohttp import web

from libs.errors import InvalidArgument, PachError, from_unexpected, http_status
from services.gateway.app.oidc import CALLBACK_PATH, PENDING_TTL_S, OidcLogin
from services.gateway.http.keys import LOGIN
from services.gateway.http.session import safe_next, set_session

# The secret binding a dashboard sign-in to the browser that started it.
BROWSER_COOKIE = "pach_oidc"


HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'",
}


def _page(title: str, body: str, status: int) -> web.Response:
    text = (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        f"{body}\n</body></html>\n"
    )
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=HEADERS
    )


async def callback(request: web.Request) -> web.Response:
    q = request.query
    try:
        subject, token, login = await request.app[LOGIN].finish(
            q.get("state", ""),
            q.get("code", ""),
            q.get("error", ""),
            browser=request.cookies.get(BROWSER_COOKIE, ""),
        )
    except PachError as err:
        return _failed(err)
    except Exception as exc:
        return _failed(from_unexpected(exc, f"GET {CALLBACK_PATH}"))
    if login.browser:  # a dashboard sign-in: the browser keeps the token
        return _signed_in(request, subject, token, login.next)
    return _page(
        "Pachyderm login",
        f"<p>You are logged in as <b>{html.escape(subject)}</b>. Paste this token into "
        "<code>pachctl auth login</code>:</p>\n"
        f'<pre id="token">{html.escape(token)}</pre>',
        200,
    )


def _signed_in(request: web.Request, subject: str, token: str, next_path: str) -> web.Response:
    """The session cookie, and on to ``next_path`` by a navigation of this
    site's own (a redirect would still count as the provider's, and the
    SameSite=Strict cookie would not go with it)."""
    target = html.escape(safe_next(next_path), quote=True)
    response = _page(
        "Pachyderm login",
        f'<meta http-equiv="refresh" content="0;url={target}">'
        f"<p>Signed in as <b>{html.escape(subject)}</b>. "
        f'<a href="{target}">Continue</a>.</p>',
        200,
    )
    set_session(response, token, secure=request.secure)
    response.del_cookie(BROWSER_COOKIE, path=CALLBACK_PATH)
    return response


async def start_sign_in(request: web.Request) -> web.Response:
    """``POST /api/session/oidc`` ``{"next": path}``: a dashboard sign-in
    through the provider; answers ``{"url": ...}`` to go to, and binds the
    login to this browser (a short-lived cookie sent only to the callback)."""
    body = await request.read()
    try:
        wanted = json.loads(body.decode("utf-8") or "{}") if body.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument("the body is not JSON in UTF-8") from None
    if not isinstance(wanted, dict) or not isinstance(wanted.get("next", "/"), str):
        raise InvalidArgument('start a sign-in with {"next": "/path"}')
    url, login = await request.app[LOGIN].start_login(
        browser=True, next_path=safe_next(wanted.get("next", "/"))
    )
    response = web.json_response({"url": url}, headers={"Cache-Control": "no-store"})
    # Lax: it must come back with the provider's redirect (a top-level GET).
    response.set_cookie(
        BROWSER_COOKIE,
        login.browser,
        httponly=True,
        samesite="Lax",
        path=CALLBACK_PATH,
        max_age=int(PENDING_TTL_S),
        secure=request.secure,
    )
    return response


def _failed(err: PachError) -> web.Response:
    return _page(
        "Pachyderm login failed",
        f'<p id="error">{html.escape(err.message)}</p>',
        http_status(err),
    )


def mount(app: web.Application, login: OidcLogin) -> None:
    app[LOGIN] = login
    app.router.add_get(CALLBACK_PATH, callback)
    app.router.add_post("/api/session/oidc", start_sign_in)
