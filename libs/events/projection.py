"""Projections: read models built from the event log.

A ``Projection`` says which subjects and event types it follows and how one
event changes its documents. The ``ProjectionRunner`` feeds it the log from
its checkpoint on, writes each group of events *and* the new checkpoint in one
``DocumentStore.batch()``, so after any crash the read model and its
checkpoint agree and the runner resumes exactly where it stopped.

``wait_for(seq)`` gives read-your-writes: a command handler that appended at
stream sequence ``seq`` waits until its own projection has applied it before
it replies.

``position`` says how far the runner got in the whole log, not only on its
subjects: when it is idle and its consumer has nothing pending, it moves to
the stream's last sequence (and checkpoints it), so ``position >= seq`` means
"every event up to ``seq`` that concerns this projection is applied" even
when the events after its last one are on other subjects.

A runner that is behind (a fetch came back full, e.g. after a restore) reads
in bigger groups, up to ``catchup_batch`` events per ``DocumentStore.batch()``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext, api

from libs.errors import DeadlineExceeded, PachError
from libs.events.background import ResumingTask
from libs.events.envelope import RecordedEvent, decode_batch
from libs.events.registry import EventRegistry
from libs.readmodels.base import Batch, Collection, Document, DocumentStore

_log = structlog.get_logger("projection")

_DELETED: Any = object()


class View:
    """What a projection's ``apply`` reads and writes through: the store as of
    the last commit plus this group's own uncommitted writes."""

    def __init__(self, store: DocumentStore, batch: Batch) -> None:
        self._store = store
        self._batch = batch
        self._pending: dict[tuple[str, str], Document] = {}

    async def get(self, collection: str, key: str) -> Document | None:
        pending = self._pending.get((collection, key))
        if pending is _DELETED:
            return None
        if pending is not None:
            return pending
        return await self._store.get(collection, key)

    def put(self, collection: str, key: str, doc: Document) -> None:
        self._pending[(collection, key)] = doc
        self._batch.put(collection, key, doc)

    def delete(self, collection: str, key: str) -> None:
        self._pending[(collection, key)] = _DELETED
        self._batch.delete(collection, key)


class Projection(abc.ABC):
    """Subclass with ``name``, ``subjects`` (e.g. ``["ev.pfs.>"]``),
    ``collections`` and ``apply``. ``apply`` must set state rather than add
    to it, so applying an event twice is harmless."""

    name: str
    subjects: Sequence[str]
    collections: Sequence[Collection]

    @property
    def event_types(self) -> frozenset[str] | None:
        """Only these types are decoded and applied; None means all."""
        return None

    @abc.abstractmethod
    async def apply(self, event: RecordedEvent, view: View) -> None: ...


class ProjectionRunner:
    def __init__(
        self,
        js: JetStreamContext,
        registry: EventRegistry,
        store: DocumentStore,
        projection: Projection,
        *,
        stream: str = "EVENTS",
        batch_size: int = 512,
        catchup_batch: int = 4096,
    ) -> None:
        self.js = js
        self.registry = registry
        self.store = store
        self.projection = projection
        self.stream = stream
        self.batch_size = batch_size
        self.catchup_batch = max(batch_size, catchup_batch)
        self.position = 0  # last stream sequence applied (and committed)
        self.skipped = 0  # messages that were not valid events
        self._advanced = asyncio.Condition()
        # Resumes from the last committed checkpoint after any failure.
        self._loop = ResumingTask(f"projection {projection.name}", self._follow)

    @property
    def checkpoint_name(self) -> str:
        return f"projection:{self.projection.name}"

    async def start(self) -> None:
        await self.store.open(self.projection.collections)
        self.position = await self.store.checkpoint(self.checkpoint_name)
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def rebuild(self) -> None:
        """Throw this projection's documents away and build them again from
        the first event (other projections sharing the store keep theirs)."""
        await self.stop()
        await self.store.drop([c.name for c in self.projection.collections])
        await self.store.reset_checkpoint(self.checkpoint_name)
        await self.start()

    async def wait_for(self, seq: int, timeout: float = 10.0) -> None:
        """Return once every event up to stream sequence ``seq`` is applied."""

        async def reached() -> None:
            async with self._advanced:
                await self._advanced.wait_for(lambda: self.position >= seq)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"projection {self.projection.name} did not reach sequence {seq} "
                f"within {timeout:g}s (at {self.position})",
                projection=self.projection.name,
                seq=seq,
            ) from None

    # --- the loop ------------------------------------------------------------

    async def _follow(self) -> None:
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.position + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subjects=list(self.projection.subjects),
            inactive_threshold=30.0,
            mem_storage=True,
        )
        subjects = list(self.projection.subjects)
        sub = await self.js.pull_subscribe(subjects[0], stream=self.stream, config=config)
        size = self.batch_size
        try:
            while True:
                try:
                    msgs = await sub.fetch(size, timeout=1.0)
                except nats.errors.TimeoutError:
                    try:
                        await self._skip_idle(sub)
                    except (nats.errors.Error, TimeoutError) as exc:
                        # only progress reporting: the next idle round tries again
                        _log.debug("idle position check failed", error=repr(exc))
                    continue
                await self._apply(msgs)
                # Behind: read bigger groups (fewer commits) until caught up.
                size = min(size * 2, self.catchup_batch) if len(msgs) >= size else self.batch_size
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _skip_idle(self, sub: Any) -> None:
        """Idle: when every event of the stream on our subjects is applied,
        move to the stream's last sequence (the tail is on other subjects).

        The stream's last sequence is read first, then the consumer: nothing
        pending and nothing delivered beyond ``position`` means every event
        up to that last sequence on our subjects is applied."""
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq or 0)
        if last <= self.position:
            return
        consumer = await sub.consumer_info()
        delivered = int(consumer.delivered.stream_seq or 0) if consumer.delivered else 0
        if consumer.num_pending or delivered > self.position:
            return
        async with self.store.batch() as batch:
            batch.set_checkpoint(self.checkpoint_name, last)
        async with self._advanced:
            self.position = max(self.position, last)
            self._advanced.notify_all()

    async def _apply(self, msgs: Sequence[Any]) -> None:
        only = self.projection.event_types
        last = self.position
        async with self.store.batch() as batch:
            view = View(self.store, batch)
            for msg in msgs:
                seq = int(msg.metadata.sequence.stream)
                if seq <= last:
                    continue  # already applied (a redelivery after a reconnect)
                try:
                    events = decode_batch(msg.data, seq, self.registry, only)
                except PachError as err:
                    # Not a valid event (written by something that is not
                    # our event store): skip it, loudly, and keep going.
                    self.skipped += 1
                    _log.error(
                        "skipping invalid event message",
                        projection=self.projection.name,
                        seq=seq,
                        subject=msg.subject,
                        error=str(err),
                    )
                    events = []
                for event in events:
                    await self.projection.apply(event, view)
                last = seq
            batch.set_checkpoint(self.checkpoint_name, last)
        async with self._advanced:
            self.position = last
            self._advanced.notify_all()
