"""Cluster routes over HTTP:

- ``GET /api/admin/InspectCluster``: ``{"id": "<cluster id>"}``, the JSON
  form of ``admin.ClusterInfo``;
- ``GET /api/admin/extract``: the framed extract (what ``pachctl extract``
  writes), streamed as a download; ``?no_objects=true`` leaves the objects
  out. A failure before the first block is a JSON error with its status; a
  failure after it cuts the download short, which a restore refuses (the
  trailer is missing)."""

from __future__ import annotations

from aiohttp import web
from google.protobuf import json_format

from libs.api.admin import admin_pb2 as admin
from libs.bus import Bus
from libs.config import Config
from libs.errors import InvalidArgument
from libs.objects.base import ObjectStore
from libs.transfer import open_transfer_store
from services.gateway.app.admin import AdminClient
from services.gateway.principal import http_principal

BUS = web.AppKey("admin_bus", Bus)
TRANSFERS = web.AppKey("admin_transfers", ObjectStore)
TRUE = ("1", "true", "yes")
FALSE = ("", "0", "false", "no")


def _client(request: web.Request) -> AdminClient:
    return AdminClient(request.app[BUS], request.app[TRANSFERS], principal=http_principal(request))


async def inspect_cluster(request: web.Request) -> web.Response:
    info = admin.ClusterInfo(id=await _client(request).cluster_id())
    return web.json_response(json_format.MessageToDict(info))


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise InvalidArgument(f"{name} must be true or false, got {raw!r}", name=name)


async def extract(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    blocks = client.extract_bytes(objects=not _flag(request, "no_objects"))
    try:
        # The first block (the magic and the header frame) before the
        # status: an extract that cannot start is an error response, not a
        # short download.
        first = await anext(blocks, b"")
        cid = await client.cluster_id()
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="pachyderm-{cid}.extract"',
            }
        )
        await response.prepare(request)
        await response.write(first)
        async for block in blocks:
            await response.write(block)
        await response.write_eof()
        return response
    finally:
        await blocks.aclose()  # a client gone mid-download ends the extract's reads now


def mount(app: web.Application, cfg: Config, bus: Bus) -> None:
    """Register before the generic ``/api/{service}/{method}`` routes."""
    app[BUS] = bus
    app[TRANSFERS] = open_transfer_store(cfg.objects)
    app.router.add_get("/api/admin/InspectCluster", inspect_cluster)
    app.router.add_post("/api/admin/InspectCluster", inspect_cluster)
    app.router.add_get("/api/admin/extract", extract)
