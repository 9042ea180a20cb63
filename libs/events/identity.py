"""The event stream's identity: which cluster it belongs to, and which
incarnation of the log it is.

The stream carries both in its JetStream metadata (docs/decisions/
0017-event-log-identity.md):

- ``pach_cluster_id``: the id of the cluster whose log it is (the
  ``PACH_CLUSTER`` bucket's ``cluster_id``);
- ``pach_log_epoch``: when this stream was created (ns since the epoch).
  A stream deleted and made again (by a restore) has a new epoch, so a read
  model that applied the old one knows it must be rebuilt.

Only admin creates the stream: on a new cluster's first start, and when a
restore puts a lost log back. Every other process only reads the identity
(``stream_identity``) and refuses to serve when the log is missing or is
another cluster's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from libs.config import Config
from libs.errors import EventLogLost, Unavailable
from libs.events.envelope import SUBJECT_PREFIX

META_CLUSTER_ID = "pach_cluster_id"
META_EPOCH = "pach_log_epoch"

RESTORE_HINT = "restore the cluster from a backup (pachctl restore)"

DUPLICATE_WINDOW_S = 120.0


@dataclass(frozen=True)
class LogIdentity:
    """What the event stream says about itself (``present`` False: gone)."""

    stream: str
    present: bool
    cluster_id: str = ""
    epoch: int = 0
    messages: int = 0
    last_seq: int = 0


def stream_config(cfg: Config, cluster_id: str = "", epoch: int = 0) -> api.StreamConfig:
    """The events stream's configuration; with ``cluster_id`` it carries the
    cluster's identity and ``epoch`` (now when 0)."""
    metadata: dict[str, str] | None = None
    if cluster_id:
        metadata = {META_CLUSTER_ID: cluster_id, META_EPOCH: str(epoch or time.time_ns())}
    return api.StreamConfig(
        name=cfg.events_stream,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        num_replicas=cfg.events_replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_msg_size=cfg.max_message_bytes,
        allow_direct=True,
        deny_delete=True,
        deny_purge=True,
        metadata=metadata,
    )


def identity_of(stream: str, info: api.StreamInfo) -> LogIdentity:
    meta = info.config.metadata or {}
    try:
        epoch = int(meta.get(META_EPOCH, "0") or 0)
    except ValueError:
        epoch = -1  # unreadable: never equal to a recorded epoch
    return LogIdentity(
        stream=stream,
        present=True,
        cluster_id=meta.get(META_CLUSTER_ID, ""),
        epoch=epoch,
        messages=int(info.state.messages or 0),
        last_seq=int(info.state.last_seq or 0),
    )


async def stream_identity(js: JetStreamContext, stream: str) -> LogIdentity:
    """The stream's identity and size; Unavailable when JetStream does not
    answer (that is not a lost log)."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        return LogIdentity(stream=stream, present=False)
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise Unavailable(
            f"event store unreachable: JetStream did not answer about the {stream} stream "
            f"({type(exc).__name__})"
        ) from None
    return identity_of(stream, info)


async def create_stream(js: JetStreamContext, cfg: Config, cluster_id: str) -> LogIdentity:
    """Create the events stream carrying ``cluster_id`` (admin only: a new
    cluster's first start, or a restore). When it exists already (a racing
    creator), its identity as stored is returned: the caller compares."""
    try:
        await js.add_stream(stream_config(cfg, cluster_id))
    except nats.js.errors.BadRequestError as exc:
        if "already in use" not in str(exc.description or ""):
            raise
    return await stream_identity(js, cfg.events_stream)


async def stamp_stream(js: JetStreamContext, cfg: Config, cluster_id: str) -> LogIdentity:
    """Add the identity to a stream made before streams carried one (kept:
    its events and its configuration otherwise)."""
    info = await js.stream_info(cfg.events_stream)
    config = info.config
    config.metadata = {
        **(config.metadata or {}),
        META_CLUSTER_ID: cluster_id,
        META_EPOCH: str(time.time_ns()),
    }
    await js.update_stream(config)
    return await stream_identity(js, cfg.events_stream)


def log_missing(stream: str) -> EventLogLost:
    return EventLogLost(
        f"event log missing: the {stream} stream is gone; {RESTORE_HINT}",
        stream=stream,
        state="missing",
    )


def log_foreign(stream: str, found: str, expected: str) -> EventLogLost:
    carries = f"cluster id {found!r}" if found else "no cluster id"
    return EventLogLost(
        f"event log belongs to another cluster: the {stream} stream carries {carries}, "
        f"this cluster is {expected!r}; {RESTORE_HINT}",
        stream=stream,
        state="foreign",
        found=found,
        expected=expected,
    )


def log_emptied(stream: str, last_seq: int, applied: int) -> EventLogLost:
    return EventLogLost(
        f"event log emptied: the {stream} stream ends at sequence {last_seq} but this "
        f"service's read models applied {applied}; {RESTORE_HINT}",
        stream=stream,
        state="emptied",
        last_seq=last_seq,
        applied=applied,
    )
