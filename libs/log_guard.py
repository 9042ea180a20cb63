"""The log guard: a service serves only while the cluster's event log is
there, is this cluster's, and holds what its read models applied.

One per service process (``libs.service`` starts it). It checks at start,
whenever Health is asked (the gateway asks every few seconds), when an append
finds no stream, and otherwise every ``interval`` seconds (a periodic check
is skipped when another one ran within ``interval``: an idle cluster is not
kept busy checking twice). Its states:

- ``ok``: serving;
- ``starting``: not checked yet; ``waiting``: the cluster's first start, admin
  has not created the log yet; ``unreachable``: JetStream does not answer;
- ``missing``: the stream is gone while the cluster has an id (it existed);
- ``foreign``: the stream carries another cluster's id (or none);
- ``emptied``: the stream ends before what this service's read models
  applied (an empty log made anew under read models that are not).

In every state but ``ok`` (and ``unreachable``, where the handlers meet the
outage themselves) each request is refused (``admit``) with the precise
error, and nothing recreates the stream: only a restore (admin) brings it
back. The stream's epoch tells a restored log from the one the read
models applied: on a new epoch with events in it (or a restore running), the
guard rebuilds the read models from the restored log and serves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import structlog
from nats.js import JetStreamContext

from libs.errors import InvalidArgument, PachError, Unavailable
from libs.events.identity import (
    LogIdentity,
    log_emptied,
    log_foreign,
    log_missing,
    stream_identity,
)
from libs.events.projection import ProjectionRunner
from libs.readmodels.base import DocumentStore
from libs.restore_gate import ClusterView

_log = structlog.get_logger("log_guard")

EPOCH_CHECKPOINT = "event-log:epoch"

OK = "ok"
STARTING = "starting"
WAITING = "waiting"
UNREACHABLE = "unreachable"
MISSING = "missing"
FOREIGN = "foreign"
EMPTIED = "emptied"

# States in which the service may go on starting (set up its handlers and
# read models); in the others it waits before setup.
IDENTITY_OK = (OK, EMPTIED)


@dataclass(frozen=True)
class GuardState:
    state: str
    error: PachError | None
    identity: LogIdentity | None = None


class LogGuard:
    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        *,
        read_models: Callable[[], Sequence[object]] = tuple,
        replicas: int = 1,
        exempt: Sequence[str] = (),
        interval: float = 10.0,
    ) -> None:
        self.js = js
        self.stream = stream
        self.read_models = read_models
        self.replicas = replicas
        self.exempt = tuple(exempt)
        self.interval = interval
        self.current = GuardState(STARTING, Unavailable("the service is starting"))
        self.rebuilds = 0
        self._view: ClusterView | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._checked_at = 0.0  # monotonic time of the last check

    # --- what the service asks -------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.current.state == OK

    def admit(self, subject: str) -> None:
        """Raise the reason this service does not serve, unless it does (or
        ``subject`` is exempt: Health, and what brings the log back)."""
        error = self.current.error
        if error is None or subject.endswith(".Health"):
            return
        if self.current.state == UNREACHABLE:
            # A request came over NATS, so it is back (or JetStream alone is
            # slow): the handler finds out itself, as before the guard.
            return
        if any(subject.startswith(prefix) for prefix in self.exempt):
            return
        raise error

    # --- checking --------------------------------------------------------------

    async def check(self) -> GuardState:
        async with self._lock:
            try:
                state = await self._evaluate()
            except PachError as err:
                state = GuardState(UNREACHABLE, err)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                state = GuardState(
                    UNREACHABLE, Unavailable(f"event store unreachable ({type(exc).__name__})")
                )
            self._checked_at = time.monotonic()
            if state.state != self.current.state:
                log = _log.info if state.state == OK else _log.error
                log(
                    "event log state",
                    state=state.state,
                    was=self.current.state,
                    error=str(state.error) if state.error else "",
                )
            self.current = state
            return state

    async def _cluster(self) -> ClusterView:
        if self._view is None:
            self._view = await ClusterView.open(self.js, replicas=self.replicas)
        return self._view

    async def _evaluate(self) -> GuardState:
        # What the read models applied is read *before* the stream's end:
        # both only grow, so an event appended and applied between the two
        # reads cannot make a whole log look emptied (a slower stream info,
        # as from a clustered stream's leader, made that race common).
        runners = [r for r in self.read_models() if isinstance(r, ProjectionRunner)]
        applied = min((r.position for r in runners), default=0)
        ident = await stream_identity(self.js, self.stream)
        view = await self._cluster()
        cluster_id = await view.stored_cluster_id()
        if not ident.present:
            if not cluster_id:
                return GuardState(
                    WAITING,
                    Unavailable(
                        f"waiting for the cluster's first start: admin has not created the "
                        f"{self.stream} stream yet"
                    ),
                    ident,
                )
            return GuardState(MISSING, log_missing(self.stream), ident)
        if cluster_id and ident.cluster_id != cluster_id:
            return GuardState(
                FOREIGN, log_foreign(self.stream, ident.cluster_id, cluster_id), ident
            )
        if not runners:
            return GuardState(OK, None, ident)
        known = await self._known_epoch(runners)
        if known != ident.epoch:
            if applied == 0 or (known == 0 and ident.last_seq >= applied):
                # A first start, or read models from before logs had epochs.
                await self._record_epoch(runners, ident.epoch)
                return GuardState(OK, None, ident)
            status = await view.restore_status()
            restoring = status is not None and status.running
            if ident.last_seq > 0 or restoring:
                # A restored log: what the read models hold came from the old one.
                _log.warning(
                    "the event log was restored: rebuilding the read models",
                    applied=applied,
                    last_seq=ident.last_seq,
                )
                for runner in runners:
                    await runner.rebuild()
                self.rebuilds += 1
                await self._record_epoch(runners, ident.epoch)
                return GuardState(OK, None, ident)
            return GuardState(EMPTIED, log_emptied(self.stream, ident.last_seq, applied), ident)
        if ident.last_seq < applied:
            return GuardState(EMPTIED, log_emptied(self.stream, ident.last_seq, applied), ident)
        return GuardState(OK, None, ident)

    @staticmethod
    def _stores(runners: Sequence[ProjectionRunner]) -> list[DocumentStore]:
        seen: dict[int, DocumentStore] = {}
        for r in runners:
            seen.setdefault(id(r.store), r.store)
        return list(seen.values())

    async def _known_epoch(self, runners: Sequence[ProjectionRunner]) -> int:
        """The epoch of the log the read models applied (0: none recorded);
        stores that disagree count as none agreeing (-2)."""
        epochs = {await s.checkpoint(EPOCH_CHECKPOINT) for s in self._stores(runners)}
        return epochs.pop() if len(epochs) == 1 else -2

    async def _record_epoch(self, runners: Sequence[ProjectionRunner], epoch: int) -> None:
        for store in self._stores(runners):
            async with store.batch() as batch:
                batch.set_checkpoint(EPOCH_CHECKPOINT, epoch)

    # --- running ---------------------------------------------------------------

    async def wait_identity(self, stop: asyncio.Event, poll: float = 0.5) -> None:
        """Return once the stream is there and this cluster's (before the
        service sets up its read models), or when ``stop`` is set."""
        while not stop.is_set():
            state = await self.check()
            if state.state in IDENTITY_OK:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll if state.state != MISSING else 1.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event log guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if time.monotonic() - self._checked_at < self.interval * 0.9:
                continue  # Health looked a moment ago
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a check must never end the loop
                _log.warning("event log check failed", error=repr(exc))


@dataclass(frozen=True)
class GuardSettings:
    """``PACH_LOG_CHECK_MS`` (10000): how often the guard checks the log
    at least (Health asks for a check too);
    ``PACH_DISK_LOW_BYTES`` (512 MiB): below this much free space on the data
    dir's file system a replica reports itself degraded."""

    interval_s: float = 10.0
    disk_low_bytes: int = 512 << 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GuardSettings:
        e: Mapping[str, str] = os.environ if env is None else env
        return cls(
            interval_s=_positive(e, "PACH_LOG_CHECK_MS", 10000) / 1000.0,
            disk_low_bytes=_positive(e, "PACH_DISK_LOW_BYTES", 512 << 20, zero=True),
        )


def _positive(e: Mapping[str, str], name: str, default: int, *, zero: bool = False) -> int:
    raw = e.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (value == 0 and not zero):
        raise InvalidArgument(
            f"{name} must be a {'non-negative' if zero else 'positive'} integer, got {raw!r}",
            name=name,
        )
    return value


def disk_free(path: Path) -> int:
    """Free bytes (for unprivileged users) on the file system holding
    ``path`` or its nearest existing parent."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize
