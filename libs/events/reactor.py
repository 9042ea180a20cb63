"""Reactions: durable JetStream consumers that act on events.

A reaction (e.g. "commit finished -> create job") runs in a durable pull
consumer shared by every replica of the service, so each event is handled by
one replica and survives restarts. An event is acknowledged only after its
handler returned; a crash before that means redelivery, which is why every
handler must be idempotent (decide identities deterministically).

- handler raises ``Unavailable``/``DeadlineExceeded``/``ConcurrencyError``:
  transient, the event is redelivered after a delay, for as long as it takes;
- handler raises any other error: logged, redelivered until it has been tried
  ``max_attempts`` times, then terminated (a poison event must not stall the
  others);
- a message that is not a valid event: logged and terminated at once.

With a ``Gate`` (a service passes ``libs.restore_gate.ReactionGate``), a
message waits un-acked while the gate holds it (a restore runs), and one the
gate does not admit (at or below the reaction's floor of the last restore:
handled before the extract) is acknowledged without handling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog
from nats.js import JetStreamContext, api

from libs.errors import ConcurrencyError, DeadlineExceeded, PachError, Unavailable
from libs.events.background import ResumingTask, long_fetch
from libs.events.envelope import RecordedEvent, decode_batch
from libs.events.registry import EventRegistry

_log = structlog.get_logger("reactor")

ReactionHandler = Callable[[RecordedEvent], Awaitable[None]]
_TRANSIENT = (Unavailable, DeadlineExceeded, ConcurrencyError)


class Gate(Protocol):
    """Whether reaction ``reaction`` handles the event at stream sequence
    ``seq``; may wait before answering (e.g. while a restore runs)."""

    async def admit(self, reaction: str, seq: int) -> bool: ...


class Reactor:
    def __init__(
        self,
        js: JetStreamContext,
        registry: EventRegistry,
        *,
        name: str,
        subjects: Sequence[str],
        handler: ReactionHandler,
        event_types: frozenset[str] | None = None,
        stream: str = "EVENTS",
        batch_size: int = 64,
        ack_wait: float = 60.0,
        max_attempts: int = 5,
        retry_delay: float = 1.0,
        gate: Gate | None = None,
    ) -> None:
        self.js = js
        self.registry = registry
        self.name = name
        self.subjects = list(subjects)
        self.handler = handler
        self.event_types = event_types
        self.stream = stream
        self.batch_size = batch_size
        self.ack_wait = ack_wait
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.gate = gate
        self.handled = 0
        self.skipped = 0  # acknowledged unhandled: at or below the restore's floor
        self._loop = ResumingTask(f"reactor {name}", self._consume)

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _consume(self) -> None:
        config = api.ConsumerConfig(
            durable_name=self.name,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subjects=self.subjects,
            ack_wait=self.ack_wait,
            max_deliver=-1,  # transient failures retry without limit; see _handle
            max_ack_pending=self.batch_size * 4,
        )
        sub = await self.js.pull_subscribe(
            self.subjects[0], durable=self.name, stream=self.stream, config=config
        )
        self._loop.ok()
        try:
            while True:
                try:
                    msgs = await long_fetch(sub, self.batch_size)
                except TimeoutError:  # idle: nothing new
                    continue
                for msg in msgs:
                    await self._handle(msg)
        finally:
            # Drop our interest at once: a pull request still open on the
            # server would otherwise take messages this replica never handles
            # (they would only come back after ack_wait).
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msg: Any) -> None:
        seq = int(msg.metadata.sequence.stream)
        if self.gate is not None and not await self.gate.admit(self.name, seq):
            self.skipped += 1
            await msg.ack()
            return
        try:
            events = decode_batch(msg.data, seq, self.registry, self.event_types)
        except PachError as err:
            _log.error("dropping invalid event message", reactor=self.name, seq=seq, error=str(err))
            await msg.term()
            return
        try:
            for event in events:
                await self.handler(event)
        except _TRANSIENT as err:
            _log.info("reaction will retry", reactor=self.name, seq=seq, error=str(err))
            await msg.nak(delay=self.retry_delay)
            return
        except Exception as exc:
            deliveries = int(msg.metadata.num_delivered)
            if deliveries >= self.max_attempts:
                _log.error("giving up on event", reactor=self.name, seq=seq, error=repr(exc))
                await msg.term()
            else:
                _log.warning("reaction failed", reactor=self.name, seq=seq, error=repr(exc))
                await msg.nak(delay=self.retry_delay)
            return
        self.handled += 1
        await msg.ack()
