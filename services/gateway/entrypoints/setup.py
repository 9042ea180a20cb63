"""Wire the gateway: backend monitor, gRPC server, HTTP server with the
dashboard mounted on it. The transports (``grpc/``, ``http/``,
``dashboard/``) know nothing of each other; they meet only here.

Everything goes on the service's exit stack, so on SIGTERM the gateway
first reports NOT_SERVING and stops its servers (letting in-flight requests
finish), then the bus and NATS drain."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

from aiohttp import web
from nats.aio.client import Client

from libs.authz.view import AuthView
from libs.bus import Bus
from libs.config import Config
from libs.errors import DeadlineExceeded, PachError
from libs.objects import LocalObjectStore, open_object_store
from libs.service import ServiceContext
from services.gateway import dashboard, principal
from services.gateway.app.authn import Authenticator
from services.gateway.app.backends import BackendMonitor
from services.gateway.app.identity import ClusterIdentity, LocalAdvert
from services.gateway.app.oidc import OidcLogin, OidcSettings
from services.gateway.grpc.server import start_grpc
from services.gateway.http import feed, keys, oidc, session
from services.gateway.http.app import build_app, serve_http
from services.gateway.local.server import LocalReads

GRACE_S = 5.0
STARTUP_SYNC_S = 60.0


def loopback_only(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, maybe not loopback


async def start_http(
    cfg: Config,
    monitor: BackendMonitor,
    bus: Bus,
    nc: Client,
    authn: Authenticator,
    login: OidcLogin,
) -> web.AppRunner:
    """The HTTP front (JSON API, file download and upload), the dashboard
    (signed in with ``authn`` once auth is active) and its change feed
    (``nc``), the OIDC login's callback, on one aiohttp app."""
    app = build_app(cfg, monitor, bus)
    session.mount(app, bus, authn)
    feed.mount(app, nc)
    oidc.mount(app, login)
    dashboard.mount(app, bus, app[keys.STORE])
    return await serve_http(app, cfg)


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    monitor = BackendMonitor(ctx.nc, ctx.bus, hold_s=cfg.gateway_hold_s)
    ctx.bus.hold = monitor.hold  # the first calls wait for their backend
    # Authentication: the gateway's own view of tokens, admins and ACLs.
    view = AuthView(ctx.js, stream=cfg.events_stream)
    await view.start()
    ctx.stack.push_async_callback(view.stop)
    if await view.has_auth_events():  # serve with the log's auth state
        with contextlib.suppress(DeadlineExceeded):
            await view.sync(timeout=STARTUP_SYNC_S)
    authn = Authenticator(view)
    authn.attach(ctx.bus)
    principal.install(authn)
    ctx.stack.callback(principal.install, None)

    # OIDC login (off without PACH_OIDC_ISSUER): gRPC starts it, HTTP ends it.
    login = OidcLogin(OidcSettings.from_env(cfg), ctx.bus, authn)
    ctx.stack.push_async_callback(login.close)

    local = LocalAdvert(ClusterIdentity(ctx.bus))
    server, grpc_port = await start_grpc(cfg, monitor, ctx.bus, authn, login, local)

    async def stop_grpc() -> None:
        await server.stop(GRACE_S)

    ctx.stack.push_async_callback(stop_grpc)

    # The same-host read socket (local store only), bound once the gRPC port
    # is ours: its name carries that port (0039).
    store = open_object_store(cfg.objects)
    if isinstance(store, LocalObjectStore):
        try:
            reads = LocalReads.listen(cfg.data_dir, ctx.bus, store, local, grpc_port)
        except (OSError, PachError) as exc:  # get-file keeps HTTP and gRPC
            ctx.log.warning("no local read socket", error=str(exc))
        else:
            ctx.stack.push_async_callback(reads.close)

    runner = await start_http(cfg, monitor, ctx.bus, ctx.nc, authn, login)
    ctx.stack.push_async_callback(runner.cleanup)

    await monitor.check_once()
    task = asyncio.create_task(monitor.run(), name="backend-monitor")

    async def stop_monitor() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    ctx.stack.push_async_callback(stop_monitor)
    ctx.log.info(
        "gateway listening",
        grpc=f"{cfg.grpc_host}:{grpc_port}",
        http=f"{cfg.grpc_host}:{cfg.http_port}",
        serving=monitor.serving,
    )
    if not loopback_only(cfg.grpc_host):
        ctx.log.warning(
            "!!! the gateway listens beyond loopback WITHOUT AUTH: anyone who can reach "
            f"{cfg.grpc_host} ports {grpc_port} (gRPC) and {cfg.http_port} (HTTP) can read, "
            "change and delete every repo and pipeline; bind 127.0.0.1 (PACH_BIND_ADDRESS) "
            "unless this network is trusted !!!",
            bind=cfg.grpc_host,
        )
