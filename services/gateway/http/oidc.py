"""``GET /authorization-code/callback``: where the OpenID Connect provider
sends the browser back after a login ``pachctl auth login`` started
(``app/oidc.py`` checks the state, exchanges the code, verifies the ID
token and has a Pachyderm token issued). The page shows that token to
paste back into pachctl, as Pachyderm 1.7's GitHub login did.

Every page (the token or why not, with its 4xx/5xx status) is HTML with
everything that came from outside escaped, no script, a CSP that allows
nothing to load, ``Cache-Control: no-store`` and no referrer."""

from __future__ import annotations

import html

from aiohttp import web

from libs.errors import PachError, from_unexpected, http_status
from services.gateway.app.oidc import CALLBACK_PATH, OidcLogin

LOGIN = web.AppKey("oidc_login", OidcLogin)

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
        subject, token = await request.app[LOGIN].finish(
            q.get("state", ""), q.get("code", ""), q.get("error", "")
        )
    except PachError as err:
        return _failed(err)
    except Exception as exc:
        return _failed(from_unexpected(exc, f"GET {CALLBACK_PATH}"))
    return _page(
        "Pachyderm login",
        f"<p>You are logged in as <b>{html.escape(subject)}</b>. Paste this token into "
        "<code>pachctl auth login</code>:</p>\n"
        f'<pre id="token">{html.escape(token)}</pre>',
        200,
    )


def _failed(err: PachError) -> web.Response:
    return _page(
        "Pachyderm login failed",
        f'<p id="error">{html.escape(err.message)}</p>',
        http_status(err),
    )


def mount(app: web.Application, login: OidcLogin) -> None:
    app[LOGIN] = login
    app.router.add_get(CALLBACK_PATH, callback)
