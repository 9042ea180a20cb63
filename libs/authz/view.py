"""The in-process view of the auth and enterprise events (``AuthState``),
kept current by following the event log: what the gateway checks tokens
against and what pfs, pps and admin authorize from, with no round trip per
call.

``position`` is the last stream sequence the view applied. ``wait_for(seq)``
waits until it reached ``seq`` (the gateway sends its own position with
every request, so a service never decides on older state than the gateway
that authenticated the call); ``sync()`` catches up with the whole stream
(the gateway calls it after an auth change, a service before it refuses)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext, api

from libs.api.events import auth_pb2, enterprise_pb2, pfs_pb2, pps_pb2
from libs.authz.state import AUTH_TYPES, SUBJECTS, AuthState
from libs.errors import DeadlineExceeded, PachError
from libs.events.background import ResumingTask, long_fetch
from libs.events.envelope import decode_batch
from libs.events.registry import EventRegistry

_log = structlog.get_logger("authz")

# Where auth's activation is recorded: no message there, auth was never on.
CLUSTER_SUBJECT = "ev.auth.cluster.auth"


def registry() -> EventRegistry:
    reg = EventRegistry()
    reg.register_module(auth_pb2)
    reg.register_module(enterprise_pb2)
    reg.register_module(pfs_pb2)
    reg.register_module(pps_pb2)
    return reg


class AuthView:
    def __init__(self, js: JetStreamContext, *, stream: str = "EVENTS") -> None:
        self.js = js
        self.stream = stream
        self.state = AuthState()
        self.position = 0
        # The sequence of the last auth or enterprise event applied: what the
        # gateway sends along (a service's view must have reached it; the
        # pfs and pps events it follows matter for grants only, and a
        # refusal catches up with the log before it is final).
        self.auth_position = 0
        self._received = 0
        self._sub: Any = None
        self._registry = registry()
        self._advanced = asyncio.Condition()
        self._loop = ResumingTask("auth view", self._follow)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def now(self) -> float:
        return time.time()

    async def wait_for(self, seq: int, timeout: float = 5.0) -> None:
        if self.position >= seq:
            return

        async def reached() -> None:
            look = 0.25  # then look at the stream's end (the tail may be on other subjects)
            while True:
                async with self._advanced:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._advanced.wait_for(lambda: self.position >= seq), look
                        )
                    if self.position >= seq:
                        return
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    info = await self.js.stream_info(self.stream)
                    await self._idle_at(int(info.state.last_seq or 0))
                look = min(look * 2, 1.0)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the auth view did not reach sequence {seq} within {timeout:g}s "
                f"(at {self.position})"
            ) from None

    async def pipeline_denial(self, pipeline: str, inputs: list[str]) -> str:
        """Why a new job of ``pipeline`` may not run ("" when it may), on
        the log as it is now (a revocation holds from the next job on)."""
        if not await self.has_auth_events():
            return ""
        await self.sync()
        return self.state.pipeline_denial(pipeline, inputs, self.now())

    async def has_auth_events(self) -> bool:
        """Whether auth was ever activated in this log (else there is
        nothing to catch up with before authenticating)."""
        if self.state.active or self.auth_position:
            return True
        try:
            await self.js.get_last_msg(self.stream, CLUSTER_SUBJECT)
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def sync(self, timeout: float = 5.0) -> None:
        """Return once every event in the stream now is applied."""
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq or 0)
        deadline = time.monotonic() + timeout
        while self.position < last:
            if await self._idle_at(last):
                return
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"the auth view did not catch up within {timeout:g}s")
            with contextlib.suppress(TimeoutError):
                async with self._advanced:
                    await asyncio.wait_for(self._advanced.wait(), 0.05)

    async def _idle_at(self, last: int) -> bool:
        """Nothing of ours is pending: move to ``last``."""
        sub = self._sub
        if sub is None:
            return False
        try:
            consumer = await sub.consumer_info()
        except (nats.errors.Error, TimeoutError):
            return False
        delivered = int(consumer.delivered.consumer_seq or 0) if consumer.delivered else 0
        if consumer.num_pending or delivered > self._received:
            return False
        await self._advance(last)
        return True

    async def _advance(self, seq: int) -> None:
        async with self._advanced:
            self.position = max(self.position, seq)
            self._advanced.notify_all()

    async def _follow(self) -> None:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.position + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subjects=list(SUBJECTS),
            inactive_threshold=30.0,
            mem_storage=True,
        )
        sub = await self.js.pull_subscribe(SUBJECTS[0], stream=self.stream, config=config)
        self._sub = sub
        self._received = 0
        self._loop.ok()
        try:
            while True:
                try:
                    msgs = await long_fetch(sub, 256)
                except TimeoutError:  # idle: nothing new
                    with contextlib.suppress(nats.errors.Error, TimeoutError):
                        info = await self.js.stream_info(self.stream)
                        await self._idle_at(int(info.state.last_seq or 0))
                    continue
                last = self.position
                for msg in msgs:
                    self._received = max(self._received, int(msg.metadata.sequence.consumer))
                    seq = int(msg.metadata.sequence.stream)
                    if seq <= last:
                        continue
                    try:
                        events = decode_batch(msg.data, seq, self._registry, AUTH_TYPES)
                    except PachError as err:
                        _log.error("skipping invalid event message", seq=seq, error=str(err))
                        events = []
                    for ev in events:
                        env = ev.envelope
                        self.state.apply(ev.type, env.aggregate_id, env.principal, ev.event)
                        if ev.type.startswith(("auth.", "enterprise.")):
                            self.auth_position = seq
                    last = seq
                await self._advance(last)
        finally:
            self._sub = None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
