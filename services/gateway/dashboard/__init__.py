"""The dashboard: a static page at ``/`` that shows version, health and the
repos, and creates repos (through ``/version``, ``/health`` and the JSON API
under ``/api/``)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

INDEX = Path(__file__).with_name("index.html")


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(INDEX, headers={"Content-Type": "text/html; charset=utf-8"})


def mount(app: web.Application) -> None:
    app.router.add_get("/", index)
