"""``admin.API`` (docs/decisions/0011-extract-restore-gc.md):

- ``Extract`` streams the cluster as ``Op{record}`` (this project's extract
  records), with ``framed`` as ``Op{frames}`` blocks of the extract file's
  bytes (what pachctl asks for: a few hundred messages instead of one per
  record), or with ``URL`` set writes the framed stream there and streams
  nothing; ``no_objects`` leaves the objects out;
- ``Restore`` takes those records, or those blocks (or one request naming a
  ``URL``) into an empty cluster, and returns once pfs and pps have applied
  the restored log;
- ``InspectCluster`` answers the cluster's id;
- ``ExtractPipeline`` answers the request a pipeline was created (or last
  updated) with, asked of pps (``GetPipelineSpec``), as one 1.7 restore op.

Extract and restore read and append to the event log and the object store
directly (``libs.backup``); each call opens its own NATS connection for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import grpc.aio
import nats
import nats.errors
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from nats.aio.client import Client

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.api.internal import backup_pb2
from libs.api.internal import pps_work_pb2 as internal
from libs.bus import Bus
from libs.cluster_state import ClusterState
from libs.config import Config
from libs.errors import InvalidArgument, Unavailable
from libs.events import EventRegistry, catalog
from libs.objects import open_object_store
from services.gateway.backup_urls import parse_backup_url, read_url, write_url
from services.gateway.grpc.streams import closed_by_client
from services.gateway.principal import LONG_TIMEOUT_S, Ask, ask

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)

# The services whose read models a restore waits for.
RESTORED_SERVICES = ("pfs", "pps")
NOT_WHOLE = (
    "not supported: an extract is the whole event log (no_repos and no_pipelines "
    "cannot leave parts of it out)"
)
OLD_FORMAT = (
    "this is a Pachyderm 1.7 extract (op1_7 ops): restoring 1.7-format extracts is not "
    "supported; restore an extract taken with this cluster's pachctl extract"
)


def cluster_registry() -> EventRegistry:
    """Every service's event types with their upcasters."""
    return catalog.cluster_registry()


@contextlib.asynccontextmanager
async def connected(cfg: Config) -> AsyncIterator[Client]:
    """A NATS connection of its own for one extract, restore or lookup."""
    try:
        # One retry to connect (a refused connection fails fast); once
        # connected, a dropped connection is retried for a while.
        nc = await nats.connect(
            cfg.nats_url,
            name=f"{cfg.service}-admin",
            connect_timeout=2,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
        )
    except (OSError, nats.errors.Error) as exc:
        raise Unavailable(f"cannot reach NATS at {cfg.nats_url}: {exc}") from None
    nc.options["max_reconnect_attempts"] = 20
    try:
        yield nc
    finally:
        await nc.close()


async def cluster_id(cfg: Config) -> str:
    async with connected(cfg) as nc:
        state = await ClusterState.open(nc.jetstream(), replicas=cfg.events_replicas)
        return await state.cluster_id()


@contextlib.asynccontextmanager
async def _source(cfg: Config) -> AsyncIterator[tuple[Any, Any, str]]:
    """The event log, the object store and the cluster id an extract reads."""
    store = open_object_store(cfg.objects)
    try:
        async with connected(cfg) as nc:
            js = nc.jetstream()
            state = await ClusterState.open(js, replicas=cfg.events_replicas)
            yield js, store, await state.cluster_id()
    finally:
        await store.close()


async def extract_records(cfg: Config, *, objects: bool) -> AsyncIterator[backup_pb2.ExtractRecord]:
    """The cluster's extract, record by record (``libs.backup.extract``)."""
    from libs.backup.extract import extract

    async with _source(cfg) as (js, store, cid):
        records = extract(
            js,
            store,
            cluster_registry(),
            stream=cfg.events_stream,
            cluster_id=cid,
            objects=objects,
        )
        async for record in records:
            yield record


async def extract_frames(cfg: Config, *, objects: bool) -> AsyncGenerator[bytes, None]:
    """The cluster's extract as the bytes of an extract file."""
    from libs.backup.extract import extract_frames as frames

    async with _source(cfg) as (js, store, cid):
        blocks = frames(
            js,
            store,
            cluster_registry(),
            stream=cfg.events_stream,
            cluster_id=cid,
            objects=objects,
        )
        async for block in blocks:
            yield block


async def extract_to_url(cfg: Config, url: str, *, objects: bool) -> int:
    """Write the framed extract to ``url``; the byte count."""
    parse_backup_url(url)  # a bad URL fails before anything is read
    return await write_url(url, extract_frames(cfg, objects=objects), cfg.objects)


async def restore_records(
    cfg: Config,
    bus: Bus,
    timeout: float,
    *,
    records: AsyncIterable[backup_pb2.ExtractRecord] | None = None,
    frames: AsyncIterable[bytes] | None = None,
) -> None:
    """Restore ``records`` (a Restore stream) or ``frames`` (an extract
    file's bytes) into this (empty) cluster, then wait until pfs and pps have
    applied the restored log."""
    from libs.backup.restore import restore, restore_frames
    from libs.cluster_state import wait_applied

    spool = Path(cfg.data_dir) / "restore-spool"
    await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
    store = open_object_store(cfg.objects)
    options: dict[str, Any] = {
        "registry": cluster_registry(),
        "spool_dir": spool,
        "stream": cfg.events_stream,
        "stream_config": cfg,
        "kv_replicas": cfg.events_replicas,
    }
    try:
        async with connected(cfg) as nc:
            if frames is not None:
                summary = await restore_frames(nc, store, frames, **options)
            elif records is not None:
                summary = await restore(nc, store, records, **options)
            else:
                raise InvalidArgument("a restore needs records or an extract's bytes")
    finally:
        await store.close()
    await wait_applied(bus, summary.last_seq, RESTORED_SERVICES, timeout=timeout)


async def records_of(
    requests: AsyncIterator[admin.RestoreRequest],
) -> AsyncIterator[backup_pb2.ExtractRecord]:
    """The extract records a Restore client streams."""
    async for request in requests:
        if request.URL:
            raise InvalidArgument("a Restore that names a URL sends that one request only")
        op = request.op
        if op.HasField("op1_7"):
            raise InvalidArgument(OLD_FORMAT)
        if not op.HasField("record"):
            raise InvalidArgument("a RestoreRequest carries no op.record")
        yield op.record


async def restore_requests(
    cfg: Config, bus: Bus, requests: AsyncIterator[admin.RestoreRequest], timeout: float
) -> None:
    first = await anext(requests, None)
    if first is None:
        raise InvalidArgument("Restore got no requests: send the extract's records, or a URL")
    if first.URL:
        if first.HasField("op"):
            raise InvalidArgument("a RestoreRequest has either an op or a URL, not both")
        parse_backup_url(first.URL)
        frames = _only(read_url(first.URL, cfg.objects), requests)
        await restore_records(cfg, bus, timeout, frames=frames)
        return

    if first.op.HasField("op1_7"):
        raise InvalidArgument(OLD_FORMAT)  # before the target is even looked at
    if first.op.frames:
        await restore_records(cfg, bus, timeout, frames=frames_of(first, requests))
        return

    async def all_requests() -> AsyncIterator[admin.RestoreRequest]:
        yield first
        async for request in requests:
            yield request

    await restore_records(cfg, bus, timeout, records=records_of(all_requests()))


async def frames_of(
    first: admin.RestoreRequest, requests: AsyncIterator[admin.RestoreRequest]
) -> AsyncIterator[bytes]:
    """The extract's bytes a Restore client streams as ``Op.frames`` blocks."""
    yield first.op.frames
    async for request in requests:
        if request.URL or request.op.HasField("record") or request.op.HasField("op1_7"):
            raise InvalidArgument("a Restore that sends Op.frames sends only Op.frames")
        yield request.op.frames


async def _only(
    blocks: AsyncIterator[bytes], requests: AsyncIterator[admin.RestoreRequest]
) -> AsyncIterator[bytes]:
    """The URL's bytes; a request after the URL's is refused."""
    async for block in blocks:
        yield block
    if await anext(requests, None) is not None:
        raise InvalidArgument("a Restore that names a URL sends that one request only")


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
    def __init__(self, bus: Bus, cfg: Config) -> None:
        self.bus = bus
        self.cfg = cfg

    def _ask(self, context: Ctx) -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, "pps", name, request, response_type, kind=kind)

        return call

    async def Extract(  # type: ignore[override]
        self, request: admin.ExtractRequest, context: Ctx
    ) -> AsyncIterator[admin.Op]:
        if request.no_repos or request.no_pipelines:
            raise InvalidArgument(NOT_WHOLE)
        objects = not request.no_objects
        if request.URL:
            await extract_to_url(self.cfg, request.URL, objects=objects)
            return
        if request.framed:
            async for block in extract_frames(self.cfg, objects=objects):
                yield admin.Op(frames=block)
            return
        async for record in extract_records(self.cfg, objects=objects):
            yield admin.Op(record=record)

    async def Restore(  # type: ignore[override]
        self, request_iterator: AsyncIterator[admin.RestoreRequest], context: Ctx
    ) -> Empty:
        remaining = context.time_remaining()
        timeout = LONG_TIMEOUT_S if remaining is None else remaining
        requests = closed_by_client(request_iterator, context)
        await restore_requests(self.cfg, self.bus, requests, timeout)
        return Empty()

    async def InspectCluster(  # type: ignore[override]
        self, request: Empty, context: Ctx
    ) -> admin.ClusterInfo:
        return admin.ClusterInfo(id=await cluster_id(self.cfg))

    async def ExtractPipeline(  # type: ignore[override]
        self, request: admin.ExtractPipelineRequest, context: Ctx
    ) -> admin.Op:
        return await extract_pipeline(self._ask(context), request)


def register(server: grpc.aio.Server, bus: Bus, cfg: Config | None = None) -> None:
    """``cfg`` names the event stream, NATS and the object store that extract
    and restore use (the defaults when None: a test serving only
    ExtractPipeline)."""
    admin_pb2_grpc.add_APIServicer_to_server(AdminServicer(bus, cfg or Config()), server)
