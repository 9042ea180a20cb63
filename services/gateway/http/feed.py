"""``GET /api/feed``: a server-sent-events change feed for the dashboard.

The gateway listens (plain NATS subscriptions: read-only, no JetStream
consumer, nothing stored) to the event log's aggregate subjects
``FEED_SUBJECTS`` and tells each connected page *which* aggregate changed,
never what the event said: one ``changed`` message per ``FLUSH_S`` window,
its data a JSON list of ``{"kind": "pps.job", "id": "<job id>"}`` (kinds
``pfs.repo``, ``pfs.commit``, ``pps.pipeline``, ``pps.job``), repeated
changes of one aggregate in a window coalesced into one. The page then asks
the JSON API for what it shows, with its own credentials, so the feed is a
doorbell, not a copy of the data. While auth is active only a signed-in
caller may listen (the names of what changed are not for anyone). A
comment line every ``PING_S`` keeps proxies from closing an idle stream.

``GET /api/feed/logs?job=<id>[&datum=<id>]`` follows a job's log lines
(the last ``LOG_TAIL`` first, then new ones as pps records them, as
``GetLogs`` with ``follow`` does), one ``log`` message per line, its data a
JSON object ``{"ts", "worker", "datum", "message"}``; asked with the page's
own credentials.

At most ``MAX_CLIENTS`` pages listen at once (each kind of stream) (503 past that); a page that
does not read loses its oldest pending changes (``MAX_PENDING``), never
the gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument, Unauthenticated, Unavailable
from libs.events.envelope import AggregateRef
from services.gateway.app.jobs import log_messages
from services.gateway.http.keys import BUS
from services.gateway.principal import auth_active, http_ask, http_principal

FEED_SUBJECTS = ("ev.pfs.repo.*", "ev.pfs.commit.*", "ev.pps.pipeline.*", "ev.pps.job.*")
FLUSH_S = 0.25
PING_S = 15.0
MAX_CLIENTS = 64
MAX_PENDING = 1024
LOG_TAIL = 200


class Listener:
    """One page's pending changes (kind, id), in order, without repeats."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], None] = {}
        self.ready = asyncio.Event()

    def add(self, key: tuple[str, str]) -> None:
        if key in self.pending:
            return
        if len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        self.pending[key] = None
        self.ready.set()

    def take(self) -> list[tuple[str, str]]:
        out = list(self.pending)
        self.pending.clear()
        self.ready.clear()
        return out


class Feed:
    """The subscriptions (made on the app's startup) and the pages listening."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.listeners: set[Listener] = set()
        self.followers = 0
        self._subs: list[Subscription] = []

    async def start(self, _: web.Application) -> None:
        for subject in FEED_SUBJECTS:
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_event))

    async def stop(self, _: web.Application) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    async def _on_event(self, msg: Msg) -> None:
        try:
            ref = AggregateRef.from_subject(msg.subject)
        except InvalidArgument:  # not an aggregate's subject: not ours to relay
            return
        key = (f"{ref.service}.{ref.type}", ref.id)
        for listener in self.listeners:
            listener.add(key)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        if auth_active() and not http_principal(request):
            raise Unauthenticated("the change feed needs a signed-in caller: sign in at /login")
        if len(self.listeners) >= MAX_CLIENTS:
            raise Unavailable(
                f"the change feed has {MAX_CLIENTS} pages listening already; try again later",
                listeners=MAX_CLIENTS,
            )
        response = await _event_stream(request)
        listener = Listener()
        self.listeners.add(listener)
        try:
            await response.write(b"retry: 2000\n: listening\n\n")
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(listener.ready.wait(), PING_S)
                changes = listener.take()
                if not changes:
                    await response.write(b": ping\n\n")
                    continue
                data = json.dumps([{"kind": k, "id": i} for k, i in changes])
                await response.write(f"event: changed\ndata: {data}\n\n".encode())
                await asyncio.sleep(FLUSH_S)
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.listeners.discard(listener)
        return response

    async def logs(self, request: web.Request) -> web.StreamResponse:
        job_id = request.query.get("job", "")
        if not job_id:
            raise InvalidArgument("the log feed needs ?job=<job id>")
        wanted = pps.GetLogsRequest(job=pps.Job(id=job_id), follow=True, tail=LOG_TAIL)
        datum_id = request.query.get("datum", "")
        if datum_id:
            wanted.datum.CopyFrom(pps.Datum(id=datum_id, job=pps.Job(id=job_id)))
        if self.followers >= MAX_CLIENTS:
            raise Unavailable(
                f"{MAX_CLIENTS} pages follow logs already; try again later", listeners=MAX_CLIENTS
            )
        ask = http_ask(request.app[BUS], request, "pps")
        # an unknown job (or one the caller may not see) answers 404/403 here,
        # before the stream starts
        await ask("InspectJob", pps.InspectJobRequest(job=wanted.job), pps.JobInfo, "qry")
        self.followers += 1
        try:
            response = await _event_stream(request)
            await response.write(b"retry: 5000\n: following\n\n")
            async for m in log_messages(ask, wanted):
                line = {
                    "ts": m.ts.ToJsonString() if m.HasField("ts") else "",
                    "worker": m.worker_id,
                    "datum": m.datum_id,
                    "message": m.message.rstrip(),
                }
                await response.write(f"event: log\ndata: {json.dumps(line)}\n\n".encode())
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.followers -= 1
        return response


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


FEED = web.AppKey("feed", Feed)


def mount(app: web.Application, nc: Client) -> None:
    """Add ``GET /api/feed`` to ``app``, listening on ``nc``."""
    feed = Feed(nc)
    app[FEED] = feed
    app.on_startup.append(feed.start)
    app.on_cleanup.append(feed.stop)
    app.router.add_get("/api/feed", feed.serve)
    app.router.add_get("/api/feed/logs", feed.logs)
