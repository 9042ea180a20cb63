"""Pipeline logs: JetStream stream ``PPS_LOGS``, kept 7 days.

Each line is a serialized ``pps.LogMessage`` on
``pps.logs.<pipeline>.<job or "-">``. ``append`` publishes without waiting
for each acknowledgement (``flush`` waits for all), so logging does not slow
datums down. ``page`` reads the lines after a stream sequence that match a
``GetLogsRequest`` as Pachyderm 1.7 filters them (pipeline, job, datum,
master or workers, ``data_filters``; ``tail``: from the N-th last line a
user sees, ``shown``), scanning
with a short-lived consumer and holding at most one page (plus, for
``tail``, N sequence numbers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext, api

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument, Unavailable

STREAM = "PPS_LOGS"
SUBJECT_PREFIX = "pps.logs"
MAX_AGE_S = 7 * 24 * 3600.0
NO_JOB = "-"
DEFAULT_LIMIT = 1000
_BATCH = 256
_FETCH_WAIT_S = 2.0
_FLUSH_WAIT_S = 10.0
# Unacknowledged lines before new ones are dropped rather than waited for
# (NATS away): logging never holds a datum up.
MAX_PENDING = 2048
_STALE_S = 30.0  # an unacknowledged line older than this is given up

_log = structlog.get_logger("pps.logs")


def _token(value: str, what: str) -> str:
    if not value or any(c in value for c in ".*> \t\r\n"):
        raise InvalidArgument(
            f"{what} {value!r} cannot be used in a log subject "
            "(empty, or has '.', '*', '>' or space)",
            value=value,
        )
    return value


def subject(pipeline: str, job: str = "") -> str:
    job_token = _token(job, "job id") if job else NO_JOB
    return f"{SUBJECT_PREFIX}.{_token(pipeline, 'pipeline name')}.{job_token}"


def filter_subject(req: pps_pb2.GetLogsRequest) -> str:
    """The narrowest subject filter the request allows."""
    pipeline = req.pipeline.name if req.HasField("pipeline") and req.pipeline.name else "*"
    job = req.job.id if req.HasField("job") and req.job.id else ""
    if pipeline != "*":
        _token(pipeline, "pipeline name")
    if job:
        return f"{SUBJECT_PREFIX}.{pipeline}.{_token(job, 'job id')}"
    return f"{SUBJECT_PREFIX}.{pipeline}.>" if pipeline != "*" else f"{SUBJECT_PREFIX}.>"


def match_datum(filters: Sequence[str], data: Sequence[pps_pb2.InputFile]) -> bool:
    """Every filter names some input file: its path, or its hash in hex or base64."""
    for f in filters:
        if not any(
            f == d.path or f == d.hash.hex() or f == base64.b64encode(d.hash).decode() for d in data
        ):
            return False
    return True


def matches(req: pps_pb2.GetLogsRequest, msg: pps_pb2.LogMessage) -> bool:
    """Pachyderm 1.7's GetLogs filter for one line."""
    if req.HasField("pipeline") and req.pipeline.name and req.pipeline.name != msg.pipeline_name:
        return False
    if req.HasField("job") and req.job.id and req.job.id != msg.job_id:
        return False
    if req.HasField("datum") and req.datum.id and req.datum.id != msg.datum_id:
        return False
    if req.master != msg.master:
        return False
    return match_datum(req.data_filters, msg.data)


def shown(req: pps_pb2.GetLogsRequest, msg: pps_pb2.LogMessage) -> bool:
    """Whether pachctl get-logs prints a matching line (as 1.7's does): user
    code's lines, master lines when the master's were asked for, and every
    line when neither a pipeline nor a job was named. ``tail`` counts these,
    and a tailed read returns only these."""
    named = bool(req.pipeline.name or req.job.id)
    return msg.user or req.master or not named


class LogStore:
    def __init__(self, js: JetStreamContext, *, replicas: int = 1) -> None:
        self._js = js
        self._replicas = replicas
        self._pending: dict[asyncio.Future[Any], float] = {}
        self.dropped = 0

    async def ensure(self) -> None:
        """Create ``PPS_LOGS`` if missing (idempotent; safe to race)."""
        config = api.StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT_PREFIX}.>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=MAX_AGE_S,
            num_replicas=self._replicas,
            allow_direct=True,
        )
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if "already in use" not in str(exc.description or ""):
                raise

    async def append(self, msg: pps_pb2.LogMessage) -> None:
        """Publish one line without waiting for it to be stored; while too
        many lines are unacknowledged (NATS away) new lines are dropped and
        counted in ``dropped``."""
        loop = asyncio.get_running_loop()
        if len(self._pending) >= MAX_PENDING:
            self._give_up_stale(loop.time())
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                if self.dropped % 1000 == 1:
                    _log.warning("log lines dropped: NATS does not keep up", dropped=self.dropped)
                return
        try:
            future = await self._js.publish_async(
                subject(msg.pipeline_name, msg.job_id),
                msg.SerializeToString(),
                wait_stall=0.1,
                stream=STREAM,
            )
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            self.dropped += 1
            raise Unavailable(f"log line not published: {exc!r}") from None
        self._pending[future] = loop.time()
        future.add_done_callback(self._settled)

    def _give_up_stale(self, now: float) -> None:
        for future, since in list(self._pending.items()):
            if now - since > _STALE_S:
                future.cancel()

    def _settled(self, future: asyncio.Future[Any]) -> None:
        self._pending.pop(future, None)
        if future.cancelled() or future.exception() is not None:
            self.dropped += 1

    async def flush(self, timeout: float = _FLUSH_WAIT_S) -> None:
        """Wait until every line appended so far is stored (or ``timeout``)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    async def page(
        self, req: pps_pb2.GetLogsRequest, after: int = 0, limit: int = DEFAULT_LIMIT
    ) -> pachinternal.LogPage:
        """Matching lines after stream sequence ``after``, at most ``limit``;
        ``next`` is where the following page starts (``after`` if nothing new)."""
        if after < 0 or limit < 0:
            raise InvalidArgument(f"after and limit must be >= 0, got {after} and {limit}")
        if req.tail < 0:
            raise InvalidArgument(f"tail must be >= 0, got {req.tail}", tail=req.tail)
        limit = limit or DEFAULT_LIMIT
        start = after
        if req.tail and after == 0:
            first = await self._tail_start(req)
            if first is None:  # nothing matches yet: a follow starts at the end
                return pachinternal.LogPage(next=await self._last_seq())
            start = first - 1
        out = pachinternal.LogPage(next=start)
        async for seq, msg in self._scan(req, start):
            out.next = seq
            if msg is not None and (not req.tail or shown(req, msg)):
                out.messages.append(msg)
                if len(out.messages) >= limit:
                    break
        return out

    async def _tail_start(self, req: pps_pb2.GetLogsRequest) -> int | None:
        """The sequence of the N-th last matching line (None: no line matches)."""
        last: deque[int] = deque(maxlen=req.tail)
        async for seq, msg in self._scan(req, 0):
            if msg is not None and shown(req, msg):
                last.append(seq)
        return last[0] if last else None

    async def _last_seq(self) -> int:
        try:
            info = await self._js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return 0
        return int(info.state.last_seq or 0)

    async def _scan(
        self, req: pps_pb2.GetLogsRequest, after: int
    ) -> AsyncIterator[tuple[int, pps_pb2.LogMessage | None]]:
        """``(seq, message or None if it does not match)`` for every line on
        the request's subjects after ``after``, up to the stream's end now."""
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=filter_subject(req),
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        )
        try:
            sub = await self._js.pull_subscribe(
                config.filter_subject or "", stream=STREAM, config=config
            )
        except nats.js.errors.NotFoundError:
            return  # no stream yet: no logs
        try:
            info = await sub.consumer_info()
            remaining = int(info.num_pending or 0)
            while remaining > 0:
                try:
                    msgs = await sub.fetch(min(_BATCH, remaining), timeout=_FETCH_WAIT_S)
                except nats.errors.TimeoutError:
                    return  # lines aged out under us: the end
                for m in msgs:
                    meta = m.metadata
                    remaining = int(meta.num_pending)
                    yield int(meta.sequence.stream), self._decode(req, m.data)
        finally:
            with contextlib.suppress(Exception):
                name = (await sub.consumer_info()).name
                await sub.unsubscribe()
                await self._js.delete_consumer(STREAM, name)

    @staticmethod
    def _decode(req: pps_pb2.GetLogsRequest, data: bytes) -> pps_pb2.LogMessage | None:
        try:
            msg = pps_pb2.LogMessage.FromString(data)
        except DecodeError:
            _log.warning("skipping a log line that is not a LogMessage")
            return None
        return msg if matches(req, msg) else None
