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
when the events after its last one are on other subjects. An idle runner
waits in one long fetch (``LONG_POLL_S``) and looks at the stream's end when
it expires, or at once when ``wait_for`` asks for a sequence it has not
reached (so an idle cluster costs next to nothing and a waiter is not kept
waiting for the fetch to expire).

A runner that is behind (a fetch came back full, e.g. after a restore) reads
in bigger groups, up to ``catchup_batch`` events per ``DocumentStore.batch()``.

One runner can feed several projections that follow the same subjects (pfs's
repos, branches and commits views all follow ``ev.pfs.repo.>``): the log is
read and decoded once for all of them, each keeps its own checkpoint (written
in the same batch), and each skips what it applied already, so a projection
added or rebuilt later catches up beside the others.
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
from libs.events.background import LONG_POLL_S, ResumingTask, long_fetch
from libs.events.envelope import RecordedEvent, decode_batch
from libs.events.registry import EventRegistry
from libs.readmodels.base import Batch, Collection, Document, DocumentStore

_log = structlog.get_logger("projection")

_DELETED: Any = object()


class View:
    """What a projection's ``apply`` reads and writes through: the store as of
    the last commit plus this group's own uncommitted writes. A document read
    once is remembered for the rest of the group (only the runner writes its
    projections' collections), so reading it again costs no trip to the
    store."""

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
        doc = await self._store.get(collection, key)
        self._pending[(collection, key)] = _DELETED if doc is None else doc
        return doc

    def put(self, collection: str, key: str, doc: Document) -> None:
        self._pending[(collection, key)] = doc
        self._batch.put(collection, key, doc)

    def delete(self, collection: str, key: str) -> None:
        self._pending[(collection, key)] = _DELETED
        self._batch.delete(collection, key)

    async def prefetch(self, keys: Sequence[tuple[str, str]]) -> None:
        """Read the documents ``keys`` names that the group has not read or
        written yet, all at once (one after another on the store's side,
        without a round trip back between them); ``get`` then finds them."""
        wanted = list(dict.fromkeys(k for k in keys if k not in self._pending))
        docs = await asyncio.gather(*(self._store.get(c, k) for c, k in wanted))
        for key, doc in zip(wanted, docs, strict=True):
            self._pending.setdefault(key, _DELETED if doc is None else doc)


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

    def prefetch(self, event: RecordedEvent) -> Sequence[tuple[str, str]]:
        """(collection, key) of documents ``apply`` will read for ``event``
        from before the group (read together for the whole group first);
        none by default."""
        return ()

    @abc.abstractmethod
    async def apply(self, event: RecordedEvent, view: View) -> None: ...


def checkpoint_name(projection: Projection) -> str:
    return f"projection:{projection.name}"


class ProjectionRunner:
    def __init__(
        self,
        js: JetStreamContext,
        registry: EventRegistry,
        store: DocumentStore,
        projection: Projection | Sequence[Projection],
        *,
        stream: str = "EVENTS",
        batch_size: int = 512,
        catchup_batch: int = 4096,
    ) -> None:
        fed = (projection,) if isinstance(projection, Projection) else tuple(projection)
        if not fed or any(set(p.subjects) != set(fed[0].subjects) for p in fed):
            raise ValueError("one runner feeds projections that follow the same subjects")
        self.js = js
        self.registry = registry
        self.store = store
        self.projections = fed
        self.stream = stream
        self.batch_size = batch_size
        self.catchup_batch = max(batch_size, catchup_batch)
        self.position = 0  # last stream sequence every projection applied (and committed)
        self._positions = [0] * len(fed)  # each projection's own
        self.skipped = 0  # messages that were not valid events
        self._advanced = asyncio.Condition()
        types = [p.event_types for p in fed]
        self._only: frozenset[str] | None = None
        if all(t is not None for t in types):
            self._only = frozenset(name for t in types if t is not None for name in t)
        self.name = "+".join(p.name for p in fed)
        self.idle_fetch_s = LONG_POLL_S
        # Held while applying a fetched group or moving over the idle tail,
        # so that ``wait_for``'s look at the tail never sees a group that is
        # received but not yet committed.
        self._applying = asyncio.Lock()
        self._sub: Any = None
        self._received = 0  # the consumer sequence of the last message applied
        # Resumes from the last committed checkpoint after any failure.
        self._loop = ResumingTask(f"projection {self.name}", self._follow)

    @property
    def projection(self) -> Projection:
        """The (first) projection this runner feeds."""
        return self.projections[0]

    @property
    def checkpoint_name(self) -> str:
        return checkpoint_name(self.projection)

    async def start(self) -> None:
        await self.store.open([c for p in self.projections for c in p.collections])
        names = [checkpoint_name(p) for p in self.projections]
        self._positions = [await self.store.checkpoint(name) for name in names]
        self.position = min(self._positions)
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def rebuild(self) -> None:
        """Throw these projections' documents away and build them again from
        the first event (other projections sharing the store keep theirs)."""
        await self.stop()
        await self.store.drop([c.name for p in self.projections for c in p.collections])
        for p in self.projections:
            await self.store.reset_checkpoint(checkpoint_name(p))
        await self.start()

    async def wait_for(self, seq: int, timeout: float = 10.0) -> None:
        """Return once every event up to stream sequence ``seq`` is applied."""

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
                await self._look_at_tail()
                look = min(look * 2, 1.0)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"projection {self.name} did not reach sequence {seq} "
                f"within {timeout:g}s (at {self.position})",
                projection=self.name,
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
        self._sub, self._received = sub, 0
        self._loop.ok()
        size = self.batch_size
        try:
            while True:
                try:
                    msgs = await long_fetch(sub, size, self.idle_fetch_s)
                except TimeoutError:  # idle: nothing new on our subjects
                    await self._look_at_tail()
                    continue
                async with self._applying:
                    for msg in msgs:
                        self._received = max(self._received, int(msg.metadata.sequence.consumer))
                    await self._apply(msgs)
                # Behind: read bigger groups (fewer commits) until caught up.
                size = min(size * 2, self.catchup_batch) if len(msgs) >= size else self.batch_size
        finally:
            self._sub = None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _look_at_tail(self) -> None:
        sub = self._sub
        if sub is None:
            return
        async with self._applying:
            if sub is not self._sub:
                return
            try:
                await self._skip_idle(sub, self._received)
            except (nats.errors.Error, TimeoutError) as exc:
                # only progress reporting: the next look tries again
                _log.debug("idle position check failed", error=repr(exc))

    async def _skip_idle(self, sub: Any, received: int) -> None:
        """Idle: when every event of the stream on our subjects is applied,
        move to the stream's last sequence (the tail is on other subjects).

        The stream's last sequence is read first, then the consumer: nothing
        pending, and no message delivered that this subscription has not
        received (``received``, the consumer sequence of the last one it got,
        all of them applied), means every event up to that last sequence on
        our subjects is applied. (The consumer's delivered *stream* sequence
        says nothing here: nats-server moves it to the end of the stream when
        a fetch finds nothing more on our subjects.)"""
        info = await self.js.stream_info(self.stream)
        last = int(info.state.last_seq or 0)
        if last <= self.position:
            return
        consumer = await sub.consumer_info()
        delivered = int(consumer.delivered.consumer_seq or 0) if consumer.delivered else 0
        if consumer.num_pending or delivered > received:
            return
        async with self.store.batch() as batch:
            self._checkpoint(batch, last)
        await self._advance(last)

    def _checkpoint(self, batch: Batch, last: int) -> None:
        """Record every projection as having applied the log up to ``last``
        (one that was further on keeps its own)."""
        for p, applied in zip(self.projections, self._positions, strict=True):
            batch.set_checkpoint(checkpoint_name(p), max(applied, last))

    async def _advance(self, last: int) -> None:
        """After ``_checkpoint``'s batch committed: wake the waiters."""
        async with self._advanced:
            self._positions = [max(at, last) for at in self._positions]
            self.position = max(self.position, last)
            self._advanced.notify_all()

    async def _apply(self, msgs: Sequence[Any]) -> None:
        last = self.position
        fed = list(zip(self.projections, self._positions, strict=True))
        decoded: list[tuple[int, Any, list[RecordedEvent], PachError | None]] = []
        for msg in msgs:
            seq = int(msg.metadata.sequence.stream)
            if seq <= last or (decoded and seq <= decoded[-1][0]):
                continue  # already applied (a redelivery after a reconnect)
            try:
                events = decode_batch(msg.data, seq, self.registry, self._only)
            except PachError as bad:
                decoded.append((seq, msg, [], bad))
            else:
                decoded.append((seq, msg, events, None))
        async with self.store.batch() as batch:
            view = View(self.store, batch)
            wanted = [
                key
                for seq, _, events, _ in decoded
                for projection, applied in fed
                if seq > applied
                for event in events
                if projection.event_types is None or event.type in projection.event_types
                for key in projection.prefetch(event)
            ]
            if wanted:
                await view.prefetch(wanted)
            for seq, msg, events, invalid in decoded:
                if invalid is not None:
                    # Not a valid event (written by something that is not
                    # our event store): skip it, loudly, and keep going.
                    self.skipped += 1
                    _log.error(
                        "skipping invalid event message",
                        projection=self.name,
                        seq=seq,
                        subject=msg.subject,
                        error=str(invalid),
                    )
                for projection, applied in fed:
                    if seq <= applied:
                        continue  # this one is ahead of the others (added later, or rebuilt)
                    only = projection.event_types
                    for event in events:
                        if only is None or event.type in only:
                            await projection.apply(event, view)
                last = seq
            self._checkpoint(batch, last)
        await self._advance(last)
