"""HTTP routes: ``GET /health`` (200 when serving, else 503),
``GET /version``, the JSON API under ``/api/`` (``http/api.py``), file
download and upload under ``/pfs/`` (``http/files.py``), all behind the
checks of ``http/guard.py``. ``serve_http``
listens with the app once the entrypoint has added the rest (the dashboard
at ``/``)."""

from __future__ import annotations

from aiohttp import web

from libs import version
from libs.bus import Bus
from libs.config import Config
from libs.errors import Unavailable
from libs.objects import open_object_store
from libs.observe import http_request_log
from services.gateway.app.backends import BackendMonitor
from services.gateway.errors import http_errors
from services.gateway.http import admin, api, files, githook
from services.gateway.http.guard import GuardSettings, guard, security_headers
from services.gateway.http.session import require_session

MONITOR = web.AppKey("monitor", BackendMonitor)


async def health(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR]
    body = monitor.snapshot()
    return web.json_response(body, status=200 if monitor.serving else 503)


async def get_version(_: web.Request) -> web.Response:
    v = version.current()
    return web.json_response(
        {
            "major": v.major,
            "minor": v.minor,
            "micro": v.micro,
            "additional": v.additional,
            "pretty": v.pretty(),
        }
    )


def build_app(
    cfg: Config, monitor: BackendMonitor, bus: Bus, guarded: GuardSettings | None = None
) -> web.Application:
    """The routes behind ``guard`` (Host, Origin and content-type checks;
    ``guarded`` defaults to the environment's settings) with the security
    headers on every response."""
    settings = guarded or GuardSettings.from_env(cfg)
    app = web.Application(
        middlewares=[http_request_log(), http_errors, guard(settings), require_session],
        client_max_size=cfg.max_message_bytes,
    )
    app.on_response_prepare.append(security_headers)
    app[MONITOR] = monitor
    app.router.add_get("/health", health)
    app.router.add_get("/version", get_version)
    admin.mount(app, cfg, bus)
    api.mount(app, bus)
    files.mount(app, open_object_store(cfg.objects))
    githook.mount(app)
    return app


async def serve_http(app: web.Application, cfg: Config) -> web.AppRunner:
    """Listen for HTTP with ``app`` on the configured host and port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.grpc_host, cfg.http_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise Unavailable(
            f"cannot listen for HTTP on {cfg.grpc_host}:{cfg.http_port}: {exc.strerror or exc}",
            port=cfg.http_port,
        ) from None
    return runner
