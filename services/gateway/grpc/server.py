"""Build the gateway's grpc.aio server: the Pachyderm APIs, the standard
``grpc.health.v1.Health`` service (driven by the backend monitor), request
logging and the PachError mapping."""

from __future__ import annotations

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from libs.bus import Bus
from libs.config import Config
from libs.errors import Unavailable
from libs.objects import open_object_store
from libs.observe import GrpcRequestLog
from services.gateway.app.authn import Authenticator
from services.gateway.app.backends import BackendMonitor
from services.gateway.app.identity import LocalAdvert
from services.gateway.app.oidc import OidcLogin
from services.gateway.errors import GrpcErrors
from services.gateway.grpc import admin, auth, pfs, pps, unserved, version

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def start_grpc(
    cfg: Config,
    monitor: BackendMonitor,
    bus: Bus,
    authn: Authenticator,
    oidc: OidcLogin | None = None,
    local: LocalAdvert | None = None,
) -> tuple[aio.Server, int]:
    server = aio.server(
        interceptors=[GrpcRequestLog(), GrpcErrors()],
        options=[
            ("grpc.max_receive_message_length", cfg.grpc_max_message_bytes),
            ("grpc.max_send_message_length", cfg.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    version.register(server, bus)
    store = open_object_store(cfg.objects)
    pfs.register(
        server, bus, store, cfg.grpc_max_message_bytes, http_port=cfg.http_port, local=local
    )
    pps.register(server, bus, cfg.grpc_max_message_bytes)
    admin.register(server, bus, cfg)
    auth.register(server, bus, authn, oidc)

    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)

    async def publish(m: BackendMonitor) -> None:
        await health.set("", SERVING if m.serving else NOT_SERVING)
        for name, status in m.statuses.items():
            await health.set(name, SERVING if status.ok else NOT_SERVING)

    await health.set("", NOT_SERVING)
    monitor.on_change(publish)
    unserved.register(server)  # last: answers only what no service above serves
    address = f"{cfg.grpc_host}:{cfg.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise Unavailable(f"cannot listen for gRPC on {address}: {exc}", address=address) from None
    if port == 0:
        raise Unavailable(f"cannot listen for gRPC on {address}", address=address)
    await server.start()
    return server, port
