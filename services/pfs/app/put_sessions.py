"""Put sessions: which commit a put-file (or copy-file) stream writes to,
decided by pfs, and what happens to it when the stream ends or is gone.

The gateway stores a stream's bytes and sends pfs only their refs
(``PutFileRefs``), tagged with the stream's session id and the commit the
client named: a commit id, or a branch.

- A branch whose head a caller opened (start-commit) takes the writes, and
  the commit stays open when the put ends (Pachyderm 1.7).
- A branch without an open head gets a commit opened for the session
  (``CommitStarted.lease``), finished by the session's last request
  (``end``). Sessions that want the same branch queue, first come first
  served: each gets its own commit once the one before it is finished or
  gone, so none fails for "parent commit not finished".
- A held commit lives on a lease: the gateway renews it (``RenewPut``)
  while the stream is alive, every write renews it too, and when it lapses
  (gateway or client killed, stream stuck) pfs deletes the commit. A failed
  stream gives its commits up at once (``AbandonPut``). So nothing a later
  put could silently join is ever left open.

Leases are in memory, in every replica: a renewal is passed on to the
others (``note.pfs.PutLeases``), and a replica that starts (or finds a held
commit it has not heard of, e.g. after a restore) grants it a full lease
from then on. A queued request waits in pfs up to ``hold_s``, then answers
``queued`` and the gateway asks again, keeping its place."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from google.protobuf.empty_pb2 import Empty

from libs.api.internal import pfs_files_pb2 as internal
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import Bus, Context
from libs.errors import FailedPrecondition, InvalidArgument, NotFound
from libs.events.background import ResumingTask
from libs.readmodels import DocumentStore
from services.pfs.adapters.commits_view import PUT_LEASES
from services.pfs.app.commits import Commits
from services.pfs.app.files import Files, write_event
from services.pfs.app.lookup import repo_name
from services.pfs.app.put_batches import PutBatches, is_whole
from services.pfs.app.writer import RepoWriter
from services.pfs.domain import commits
from services.pfs.domain import files as files_domain
from services.pfs.domain.repo import Commit, Repo, require

_log = structlog.get_logger("pfs.put_sessions")

# How often a queued request looks at its branch again when nothing in this
# replica told it the branch came free (another replica, a user's finish).
POLL_S = 0.25
# How many abandoned sessions a replica remembers (to refuse their late requests).
ABANDONED = 10_000


@dataclass(frozen=True)
class PutSettings:
    """``PACH_PUT_LEASE_MS``: how long a put session's commit outlives its
    last renewal; ``PACH_PUT_HOLD_MS``: how long a queued request waits in
    pfs before answering ``queued``."""

    lease_s: float = 10.0
    hold_s: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PutSettings:
        e = os.environ if env is None else env

        def ms(name: str, default: float) -> float:
            raw = e.get(name, "")
            if not raw:
                return default
            if not raw.isdigit() or int(raw) == 0:
                raise InvalidArgument(f"{name} must be a positive integer of ms, got {raw!r}")
            return int(raw) / 1000.0

        return cls(ms("PACH_PUT_LEASE_MS", cls.lease_s), ms("PACH_PUT_HOLD_MS", cls.hold_s))


class RestoreGate(Protocol):
    async def wait_open(self) -> None: ...


@dataclass
class _Lease:
    repo: str
    branch: str
    session: str
    deadline: float


@dataclass
class Leases:
    """The commits put sessions hold, with when each lapses."""

    lease_s: float
    _held: dict[tuple[str, str], _Lease] = field(default_factory=dict)

    def renew(self, repo: str, commit_id: str, session: str, branch: str = "") -> None:
        held = self._held.get((repo, commit_id))
        deadline = time.monotonic() + self.lease_s
        if held is None or held.session != session:
            self._held[(repo, commit_id)] = _Lease(repo, branch, session, deadline)
        else:
            held.deadline = deadline
            held.branch = held.branch or branch

    def knows(self, repo: str, commit_id: str) -> bool:
        return (repo, commit_id) in self._held

    def holds(self, repo: str, commit_id: str, session: str) -> bool:
        held = self._held.get((repo, commit_id))
        return held is not None and held.session == session

    def drop(self, repo: str, commit_id: str) -> str:
        """Forget a lease; the branch it was on ("" when unknown)."""
        held = self._held.pop((repo, commit_id), None)
        return held.branch if held is not None else ""

    def lapsed(self) -> list[tuple[str, str, _Lease]]:
        now = time.monotonic()
        return [(r, c, held) for (r, c), held in self._held.items() if held.deadline <= now]


class BranchQueue:
    """The put sessions waiting for one branch, first come first served. A
    session is in the queue while a request of it waits, and for ``stale_s``
    after (the gateway asks again at once); then it has given up."""

    def __init__(self, stale_s: float) -> None:
        self.stale_s = stale_s
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._seen)

    def join(self, session: str) -> None:
        self._seen[session] = time.monotonic()  # keeps its place when already in

    def first(self) -> str | None:
        now = time.monotonic()
        while self._seen:
            session, seen = next(iter(self._seen.items()))
            if now - seen <= self.stale_s:
                return session
            del self._seen[session]
        return None

    def leave(self, session: str) -> None:
        if self._seen.pop(session, None) is not None:
            self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def _head(state: Repo, branch: str) -> Commit | None:
    found = state.branches.get(branch)
    return state.commits.get(found.head) if found is not None and found.head else None


@dataclass
class PutSessions:
    writer: RepoWriter
    docs: DocumentStore
    files: Files
    commits: Commits
    bus: Bus
    gate: RestoreGate
    settings: PutSettings = field(default_factory=PutSettings)
    batches: PutBatches | None = None  # whole puts onto a free branch: one append per batch

    def __post_init__(self) -> None:
        self.leases = Leases(self.settings.lease_s)
        self._queues: dict[tuple[str, str], BranchQueue] = {}
        self._reaper = ResumingTask("put lease expiry", self._expire_forever, pause=1.0)
        self._abandoned: OrderedDict[str, None] = OrderedDict()  # the latest ABANDONED

    async def register(self, bus: Bus) -> None:
        await bus.serve("PutFileRefs", internal.PutFileRefsRequest, self.put_file_refs)
        await bus.serve("EndPut", internal.PutFileRefsRequest, self.end_put)
        await bus.serve("AbandonPut", internal.AbandonPutRequest, self.abandon_put)
        await bus.serve("RenewPut", internal.RenewPutRequest, self.renew_put, quiet=True)
        await bus.listen("PutLeases", internal.RenewPutRequest, self._renewed)

    async def start(self) -> None:
        """Grant every held commit a full lease from now, and start expiring."""
        await self._adopt()
        self._reaper.start()

    async def stop(self) -> None:
        await self._reaper.stop()

    # --- commands ----------------------------------------------------------------

    async def put_file_refs(
        self, req: internal.PutFileRefsRequest, ctx: Context
    ) -> internal.PutFileRefsResponse:
        return await self._put(req, ctx, end=False)

    async def end_put(
        self, req: internal.PutFileRefsRequest, ctx: Context
    ) -> internal.PutFileRefsResponse:
        if not req.session:
            raise InvalidArgument("EndPut ends a put session; none was given")
        return await self._put(req, ctx, end=True)

    async def _put(
        self, req: internal.PutFileRefsRequest, ctx: Context, *, end: bool
    ) -> internal.PutFileRefsResponse:
        name = repo_name(req.commit.repo)
        writes = [write_event(w) for w in req.writes]
        self._refuse_abandoned(req.session)
        if not req.session:
            commit_id = await self.files.write(name, req.commit.id, writes, ctx)
            return internal.PutFileRefsResponse(commit=_commit(name, commit_id))
        if end and self.batches is not None and is_whole(writes):
            made = await self._whole(name, req.commit.id, writes, ctx)
            if made is not None:
                return internal.PutFileRefsResponse(commit=_commit(name, made))
        target = await self._target(name, req.commit.id, req.session, ctx)
        if target is None:
            return internal.PutFileRefsResponse(queued=True)
        commit_id, held = target
        if held:
            self.leases.renew(name, commit_id, req.session, req.commit.id)
        await self.files.write(name, commit_id, writes, ctx)
        reply = internal.PutFileRefsResponse(commit=_commit(name, commit_id))
        if held and end:
            await self._finish(name, commit_id, ctx)
        elif held:
            reply.lease_ms = int(self.settings.lease_s * 1000)
        return reply

    async def _whole(
        self, repo: str, ref: str, writes: list[files_domain.Write], ctx: Context
    ) -> str | None:
        """A session's only request, onto a branch no other session waits
        for: its commit, made whole in a batch (``put_batches``); None when
        the put-session path must take it (the branch's head is open, or
        ``ref`` names a commit)."""
        assert self.batches is not None
        if self._queues.get((repo, ref)):
            return None  # sessions wait for the branch: this one waits behind them
        events = [w for w in writes if not isinstance(w, files_domain.Split)]
        commit_id = await self.batches.put(repo, ref, events, ctx.principal, ctx.request_id)
        if commit_id is not None:
            for (r, b), queue in self._queues.items():
                if r == repo and b == ref:
                    queue.wake()
        return commit_id

    async def abandon_put(self, req: internal.AbandonPutRequest, ctx: Context) -> Empty:
        """Delete the commits the session holds open among ``req.commits``;
        the session's requests still on their way are refused."""
        self._abandoned[req.session] = None
        while len(self._abandoned) > ABANDONED:
            self._abandoned.popitem(last=False)
        for named in req.commits:
            name = repo_name(named.repo)
            queue = self._queues.get((name, named.id))
            if queue is not None:
                queue.leave(req.session)
            state = await self.writer.load(name)
            commit = _head(state, named.id) if named.id in state.branches else None
            commit = commit or state.commits.get(named.id)
            if commit is not None:
                await self._expire(name, commit.id, req.session, ctx.principal, "abandoned")
        return Empty()

    async def renew_put(self, req: internal.RenewPutRequest, ctx: Context) -> Empty:
        await self._renewed(req, ctx)
        await self.bus.notify("pfs", "PutLeases", req, principal=ctx.principal)
        return Empty()

    async def _renewed(self, req: internal.RenewPutRequest, ctx: Context) -> None:
        for c in req.commits:
            self.leases.renew(c.repo.name, c.id, req.session)

    def _refuse_abandoned(self, session: str) -> None:
        if session and session in self._abandoned:
            raise FailedPrecondition(f"put session {session} was abandoned", session=session)

    # --- which commit ------------------------------------------------------------

    async def _target(
        self, repo: str, ref: str, session: str, ctx: Context
    ) -> tuple[str, bool] | None:
        """(commit id, held by the session) for a put of ``session`` to
        ``ref``; None when the branch did not come free within ``hold_s``."""
        state = await self.writer.load(repo)
        require(state, repo)
        if ref not in state.branches:
            try:
                found = commits.resolve(state, repo, ref)
            except NotFound:
                pass  # not a commit: a new branch
            else:
                return found.id, bool(found.lease) and found.lease == session
        queue = self._queues.setdefault((repo, ref), BranchQueue(self.settings.hold_s + 2.0))
        deadline = time.monotonic() + self.settings.hold_s
        try:
            while True:
                self._refuse_abandoned(session)
                queue.join(session)
                head = _head(state, ref)
                if head is not None and not head.finished:
                    if head.lease == session or not head.lease:
                        queue.leave(session)
                        return head.id, head.lease == session
                elif queue.first() == session:
                    decide = commits.open_put_commit(repo, ref, uuid.uuid4().hex, session)
                    state = (await self.writer.run(repo, decide, ctx)).state
                    continue  # the head is now ours, or another replica's session won
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                await queue.changed(min(remaining, POLL_S))
                state = await self.writer.load(repo)
        finally:
            if not queue:
                self._queues.pop((repo, ref), None)

    # --- ending ------------------------------------------------------------------

    async def _finish(self, repo: str, commit_id: str, ctx: Context) -> None:
        try:
            await self.commits.finish_commit(
                pfs.FinishCommitRequest(commit=_commit(repo, commit_id)), ctx
            )
        except FailedPrecondition:
            found = (await self.writer.load(repo)).commits.get(commit_id)
            if found is None or not found.finished:
                raise  # e.g. a file/directory conflict: the gateway abandons the commit
            # finished meanwhile (a repeated end, a user's finish-commit): done
        self._released(repo, commit_id)

    async def _expire(self, repo: str, commit_id: str, session: str, who: str, why: str) -> None:
        done = await self.writer.run_as(
            repo, commits.expire_put(repo, commit_id, session), principal=who
        )
        if done.events:
            _log.info("put_commit_deleted", repo=repo, commit=commit_id, session=session, why=why)
            self._released(repo, commit_id)
            return
        commit = done.state.commits.get(commit_id) if done.state.exists else None
        if commit is None or commit.finished or not commit.lease:
            self._released(repo, commit_id)  # nothing left to hold
        elif not self.leases.holds(repo, commit_id, commit.lease):
            # the table named another session: the one that holds it gets a lease
            self.leases.renew(repo, commit_id, commit.lease, commit.branch)

    def _released(self, repo: str, commit_id: str) -> None:
        """Wake the sessions waiting for the branch the commit held."""
        branch = self.leases.drop(repo, commit_id)
        for (r, b), queue in self._queues.items():
            if r == repo and (not branch or b == branch):
                queue.wake()

    async def _adopt(self) -> None:
        """Lease every held commit this replica does not know of yet."""
        async for doc in self.docs.query(PUT_LEASES):
            if not self.leases.knows(doc["repo"], doc["id"]):
                self.leases.renew(doc["repo"], doc["id"], doc["session"], doc.get("branch", ""))

    async def _expire_forever(self) -> None:
        """Delete the commits whose lease lapsed; adopt unknown held commits
        every lease period. A failure is logged and the loop resumes."""
        tick = min(self.settings.lease_s / 4, 1.0)
        adopted = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            await self.gate.wait_open()  # a restore appends; nothing expires meanwhile
            if time.monotonic() - adopted >= self.settings.lease_s:
                await self._adopt()
                adopted = time.monotonic()
            for repo, commit_id, held in self.leases.lapsed():
                await self._expire(repo, commit_id, held.session, "pfs", "lease lapsed")


def _commit(repo: str, commit_id: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=repo), id=commit_id)
