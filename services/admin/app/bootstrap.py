"""The event log's first start: admin alone creates the ``EVENTS`` stream,
once, when the cluster is new (docs/decisions/0017-event-log-identity.md).

- no stream, no cluster id: a new cluster. The stream is created carrying a
  fresh id, which then becomes the cluster's id (stream first: a crash in
  between leaves a stream whose id the next start adopts);
- no stream, a cluster id: the log is lost. Nothing is created; every
  service refuses to serve until ``pachctl restore`` brings it back;
- a stream without an id (made before streams carried one): stamped with the
  cluster's id when it holds events or the cluster has no id yet. An empty
  one under a cluster with an id is not this cluster's log: left alone;
- a stream with an id and no cluster id stored: the id is adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import structlog
from nats.js import JetStreamContext

from libs.config import Config
from libs.errors import Unavailable
from libs.events.identity import LogIdentity, create_stream, stamp_stream, stream_identity
from services.admin.adapters.cluster_state import ClusterState

_log = structlog.get_logger("admin.bootstrap")


async def _identity(js: JetStreamContext, stream: str, stop: asyncio.Event | None) -> LogIdentity:
    """The stream's identity, waiting while JetStream is still starting."""
    delay = 0.1
    while True:
        try:
            return await stream_identity(js, stream)
        except Unavailable as err:
            _log.warning("event store not ready yet", error=str(err))
        if stop is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise asyncio.CancelledError
        else:
            await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def bootstrap_log(
    js: JetStreamContext, cfg: Config, state: ClusterState, stop: asyncio.Event | None = None
) -> LogIdentity:
    stream = cfg.events_stream
    ident = await _identity(js, stream, stop)
    cluster_id = await state.stored_cluster_id()
    if not ident.present:
        if cluster_id:
            _log.error(
                "event log missing: not recreating it; restore the cluster from a backup",
                stream=stream,
                cluster_id=cluster_id,
            )
            return ident
        ident = await create_stream(js, cfg, uuid.uuid4().hex)
        _log.info("event log created", stream=stream, cluster_id=ident.cluster_id)
    elif not ident.cluster_id:
        if cluster_id and not ident.last_seq:
            _log.error(
                "an empty event stream without a cluster id: not this cluster's log",
                stream=stream,
                cluster_id=cluster_id,
            )
            return ident
        ident = await stamp_stream(js, cfg, cluster_id or await state.cluster_id())
        _log.info("event log stamped with the cluster id", stream=stream, id=ident.cluster_id)
    if ident.cluster_id and not cluster_id:
        await state.adopt_cluster_id(ident.cluster_id)
    return ident
