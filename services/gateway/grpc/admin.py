"""``admin.API`` (docs/decisions/0011-extract-restore-gc.md, 0012):

- ``Extract`` streams the cluster as ``Op{record}`` (this project's extract
  records), with ``framed`` as ``Op{frames}`` blocks of the extract file's
  bytes (what pachctl asks for: a few hundred messages instead of one per
  record), or with ``URL`` set has admin write the framed stream there and
  streams nothing (an ``s3://`` object, or a file under admin's backup
  directory, ``PACH_BACKUP_DIR``: anything else is PermissionDenied);
  ``no_objects`` leaves the objects out;
- ``Restore`` takes those records, or those blocks (or one request naming a
  ``URL``) into an empty cluster, and returns once pfs and pps have applied
  the restored log;
- ``InspectCluster`` answers the cluster's id;
- ``ExtractPipeline`` answers the request a pipeline was created (or last
  updated) with, asked of pps (``GetPipelineSpec``), as one 1.7 restore op.

Extract, restore and the cluster id are the admin service's; this servicer
only moves bytes (``services.gateway.app.admin``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc.aio
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.internal import backup_pb2
from libs.api.internal import pps_work_pb2 as internal
from libs.bus import Bus
from libs.config import Config
from libs.errors import InvalidArgument
from libs.extract_format import decode_frames, encode_frames
from libs.objects.base import ObjectStore
from libs.transfer import open_transfer_store
from services.gateway.app.admin import LONG_TIMEOUT_S, AdminClient
from services.gateway.grpc.streams import closed_by_client
from services.gateway.principal import Ask, ask, grpc_principal

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)

FRAMES_BLOCK = 256 << 10  # bytes per Op.frames message
NOT_WHOLE = (
    "not supported: an extract is the whole event log (no_repos and no_pipelines "
    "cannot leave parts of it out)"
)
OLD_FORMAT = (
    "this is a Pachyderm 1.7 extract (op1_7 ops): restoring 1.7-format extracts is not "
    "supported; restore an extract taken with this cluster's pachctl extract"
)
ONLY_URL = "a Restore that names a URL sends that one request only"


async def records_of(
    first: admin.RestoreRequest, requests: AsyncIterator[admin.RestoreRequest]
) -> AsyncIterator[backup_pb2.ExtractRecord]:
    """The extract records a Restore client streams."""
    request: admin.RestoreRequest | None = first
    while request is not None:
        if request.URL:
            raise InvalidArgument(ONLY_URL)
        op = request.op
        if op.HasField("op1_7"):
            raise InvalidArgument(OLD_FORMAT)
        if not op.HasField("record"):
            raise InvalidArgument("a RestoreRequest carries no op.record")
        yield op.record
        request = await anext(requests, None)


async def frames_of(
    first: admin.RestoreRequest, requests: AsyncIterator[admin.RestoreRequest]
) -> AsyncIterator[bytes]:
    """The extract's bytes a Restore client streams as ``Op.frames`` blocks."""
    yield first.op.frames
    async for request in requests:
        if request.URL or request.op.HasField("record") or request.op.HasField("op1_7"):
            raise InvalidArgument("a Restore that sends Op.frames sends only Op.frames")
        yield request.op.frames


async def restore_requests(
    client: AdminClient, requests: AsyncIterator[admin.RestoreRequest]
) -> None:
    first = await anext(requests, None)
    if first is None:
        raise InvalidArgument("Restore got no requests: send the extract's records, or a URL")
    if first.URL:
        if first.HasField("op"):
            raise InvalidArgument("a RestoreRequest has either an op or a URL, not both")
        if await anext(requests, None) is not None:
            raise InvalidArgument(ONLY_URL)
        await client.restore_from_url(first.URL)
        return
    if first.op.HasField("op1_7"):
        raise InvalidArgument(OLD_FORMAT)  # before the target is even looked at
    if first.op.frames:
        await client.restore_bytes(frames_of(first, requests))
        return
    await client.restore_bytes(encode_frames(records_of(first, requests)))


async def extract_pipeline(pps_ask: Ask, request: admin.ExtractPipelineRequest) -> admin.Op:
    """The pipeline's spec as ``Op{op1_7{pipeline}}``."""
    if not request.pipeline.name:
        raise InvalidArgument("ExtractPipeline needs a pipeline name")
    spec = await pps_ask(
        "GetPipelineSpec",
        internal.PipelineSpecRequest(pipeline=request.pipeline),
        internal.PipelineSpec,
        "qry",
    )
    return admin.Op(op1_7=admin.Op1_7(pipeline=spec.spec))


class AdminServicer(admin_pb2_grpc.APIServicer):
    def __init__(self, bus: Bus, transfers: ObjectStore) -> None:
        self.bus = bus
        self.transfers = transfers

    def _admin(self, context: Ctx) -> AdminClient:
        remaining = context.time_remaining()
        return AdminClient(
            self.bus,
            self.transfers,
            principal=grpc_principal(context),
            timeout=LONG_TIMEOUT_S if remaining is None else remaining,
        )

    def _ask(self, context: Ctx) -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, "pps", name, request, response_type, kind=kind)

        return call

    async def Extract(  # type: ignore[override]
        self, request: admin.ExtractRequest, context: Ctx
    ) -> AsyncIterator[admin.Op]:
        if request.no_repos or request.no_pipelines:
            raise InvalidArgument(NOT_WHOLE)
        client = self._admin(context)
        objects = not request.no_objects
        if request.URL:
            await client.extract_to_url(request.URL, objects=objects)
            return
        data = client.extract_bytes(objects=objects)
        try:
            if request.framed:
                async for block in data:
                    for at in range(0, len(block), FRAMES_BLOCK):
                        yield admin.Op(frames=block[at : at + FRAMES_BLOCK])
                return
            async for record in decode_frames(data):
                yield admin.Op(record=record)
        finally:
            await data.aclose()  # a client gone mid-stream ends the extract now

    async def Restore(  # type: ignore[override]
        self, request_iterator: AsyncIterator[admin.RestoreRequest], context: Ctx
    ) -> Empty:
        requests = closed_by_client(request_iterator, context)
        await restore_requests(self._admin(context), requests)
        return Empty()

    async def InspectCluster(  # type: ignore[override]
        self, request: Empty, context: Ctx
    ) -> admin.ClusterInfo:
        return admin.ClusterInfo(id=await self._admin(context).cluster_id())

    async def ExtractPipeline(  # type: ignore[override]
        self, request: admin.ExtractPipelineRequest, context: Ctx
    ) -> admin.Op:
        return await extract_pipeline(self._ask(context), request)


def register(server: grpc.aio.Server, bus: Bus, cfg: Config | None = None) -> None:
    """``cfg`` names the object store the extract's and restore's parts
    move through (the defaults when None: a test serving only
    ExtractPipeline)."""
    transfers = open_transfer_store((cfg or Config()).objects)
    admin_pb2_grpc.add_APIServicer_to_server(AdminServicer(bus, transfers), server)
