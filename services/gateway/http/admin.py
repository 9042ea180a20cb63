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
from libs.config import Config
from libs.errors import InvalidArgument
from services.gateway.grpc.admin import cluster_id, extract_frames

CONFIG = web.AppKey("admin_config", Config)
TRUE = ("1", "true", "yes")
FALSE = ("", "0", "false", "no")


async def inspect_cluster(request: web.Request) -> web.Response:
    info = admin.ClusterInfo(id=await cluster_id(request.app[CONFIG]))
    return web.json_response(json_format.MessageToDict(info))


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise InvalidArgument(f"{name} must be true or false, got {raw!r}", name=name)


async def extract(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    blocks = extract_frames(cfg, objects=not _flag(request, "no_objects"))
    try:
        # The magic and the header frame before the status: an extract that
        # cannot start is an error response, not a short download.
        first = await anext(blocks, b"") + await anext(blocks, b"")
        cid = await cluster_id(cfg)
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


def mount(app: web.Application, cfg: Config) -> None:
    """Register before the generic ``/api/{service}/{method}`` routes."""
    app[CONFIG] = cfg
    app.router.add_get("/api/admin/InspectCluster", inspect_cluster)
    app.router.add_post("/api/admin/InspectCluster", inspect_cluster)
    app.router.add_get("/api/admin/extract", extract)
