"""The dashboard: a static page at ``/`` (``index.html``/``index.js``) that
draws the DAG of repos and pipelines, live from the gateway's change feed
(``/api/feed``), with each service's health and what it serves, and creates
repos (through ``/version``, ``/health`` and the JSON API under ``/api/``);
each repo, pipeline and job links to its server-rendered page (``pages.py``:
branches, commits, a file browser with previews, a commit's diff and
provenance, jobs with progress, datum timings and live logs through
``pages.js``); once auth is active, ``/login`` signs the browser in
(``session.js``, ``http/session.py``). No build step: plain files, no library."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from libs.bus import Bus
from libs.objects import ObjectStore
from services.gateway.dashboard import pages

INDEX = Path(__file__).with_name("index.html")
LOGIN = Path(__file__).with_name("login.html")
# The page's script and styles are files of their own: the Content-Security-
# Policy (default-src 'self') runs no inline script or style.
STATIC = {
    "index.js": "text/javascript",
    "index.css": "text/css",
    "pages.css": "text/css",
    "pages.js": "text/javascript",
    "session.js": "text/javascript",
}


async def index(_: web.Request) -> web.FileResponse:
    # never from the browser's cache: once auth is active, who may see it
    # is decided on each visit (a signed-out browser goes to /login)
    return web.FileResponse(
        INDEX, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    )


async def login(_: web.Request) -> web.FileResponse:
    """The sign-in page (``http/session.py`` takes what it sends)."""
    return web.FileResponse(
        LOGIN, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    )


async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    kind = STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    path = INDEX.with_name(name)
    return web.FileResponse(path, headers={"Content-Type": f"{kind}; charset=utf-8"})


def mount(app: web.Application, bus: Bus, store: ObjectStore) -> None:
    """Add the dashboard's routes to ``app``; its pages ask over ``bus`` and
    read file previews from ``store``."""
    app.router.add_get("/", index)
    app.router.add_get("/login", login)
    app.router.add_get("/static/{name}", static)
    pages.mount(app, bus, store)
