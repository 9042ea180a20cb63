"""``POST /v1/handle/push``: git inputs' push webhook (Pachyderm 1.7 served
it on its own githook port, 999; here it is on the gateway's HTTP port).

The body is GitHub's push payload, signed with ``PACH_GIT_WEBHOOK_SECRET``
(``X-Hub-Signature-256`` or ``X-Hub-Signature``): unsigned 401, a wrong
signature (or no secret configured) 403, and nothing changes. A ``ping``
event answers ``{"ok": true}``; other events than ``push`` are ignored.
A push for a git input's branch commits the pushed tree into that input's
repo (``services.gateway.app.githook``) and answers 200 with the commits
made."""

from __future__ import annotations

from aiohttp import web

from services.gateway.app.githook import (
    PATH,
    GitFetcher,
    GithookConfig,
    PushHandler,
    parse_push,
    verify,
)
from services.gateway.http.keys import BUS, STORE
from services.gateway.principal import http_ask

CONFIG = web.AppKey("githook", GithookConfig)


async def handle_push(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    body = await request.read()
    verify(cfg.secret, body, request.headers)
    event = request.headers.get("X-GitHub-Event", "push")
    if event == "ping":
        return web.json_response({"ok": True})
    if event != "push":
        return web.json_response({"ignored": event})
    push = parse_push(body, request.content_type)
    bus = request.app[BUS]
    handler = PushHandler(
        ask_pfs=http_ask(bus, request, "pfs"),
        ask_pps=http_ask(bus, request, "pps"),
        store=request.app[STORE],
        config=cfg,
        fetcher=GitFetcher(timeout_s=cfg.fetch_timeout_s),
    )
    commits = await handler.handle(push)
    return web.json_response({"ref": push.ref, "after": push.after, "commits": commits})


def mount(app: web.Application) -> None:
    """Add the route (after ``files.mount``, which puts the store on the app)."""
    app[CONFIG] = GithookConfig.from_env()
    app.router.add_post(PATH, handle_push)
