"""pfs's NATS entrypoints: open the event store and read models, start the
projections, and serve the commands and queries (``cmd.pfs.*``,
``qry.pfs.*``). ``qry.pfs.Health`` is served for every service by
``libs.service``."""

from __future__ import annotations

from libs.authz.guard import install_guard
from libs.events import EventStore, ProjectionRunner, Reactor
from libs.objects import open_object_store
from libs.readmodels import open_document_store
from libs.service import ServiceContext
from services.pfs.adapters.branches_view import BranchesProjection
from services.pfs.adapters.commits_view import CommitsProjection
from services.pfs.adapters.repos_view import ReposProjection
from services.pfs.app.branches import Branches
from services.pfs.app.commits import Commits
from services.pfs.app.downstream import EVENT_TYPES as DOWNSTREAM_EVENTS
from services.pfs.app.downstream import Downstream
from services.pfs.app.files import Files
from services.pfs.app.gc import GarbageCollector, GcSettings, stream_last_seq
from services.pfs.app.put_batches import PutBatches
from services.pfs.app.put_sessions import PutSessions, PutSettings
from services.pfs.app.repos import Repos
from services.pfs.app.writer import RepoWriter
from services.pfs.domain.events import registry
from services.pfs.domain.rules import RULES


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    await install_guard(ctx, RULES, "pfs")
    reg = registry()
    events = EventStore.from_config(ctx.nc, reg, cfg)
    ctx.stack.push_async_callback(events.close)
    docs = open_document_store(cfg.readmodels, "pfs")
    ctx.stack.push_async_callback(docs.close)
    # The three views follow the repo aggregates' events: one runner reads
    # and decodes the log once for all of them.
    projections = (ReposProjection(), BranchesProjection(docs), CommitsProjection(docs))
    view = ProjectionRunner(ctx.js, reg, docs, projections, stream=cfg.events_stream)
    await view.start()
    ctx.stack.push_async_callback(view.stop)
    views = [view]
    ctx.watch_applied(*views)
    await ctx.catch_up()  # (before a single query is answered)
    store = open_object_store(cfg.objects)
    ctx.stack.push_async_callback(store.close)
    writer = RepoWriter.create(events, views)
    files = Files.create(docs, events, store)
    gate = await ctx.restore_gate()
    commits = Commits(writer, docs, files)
    await Repos(writer, docs).register(ctx.bus)
    await commits.register(ctx.bus)
    await files.register(ctx.bus)
    await Branches(writer, docs).register(ctx.bus)
    batches = PutBatches(writer, docs, store)
    ctx.stack.push_async_callback(batches.stop)
    puts = PutSessions(writer, docs, files, commits, ctx.bus, gate, PutSettings.from_env(), batches)
    await puts.register(ctx.bus)
    await puts.start()
    ctx.stack.push_async_callback(puts.stop)
    log_seq = stream_last_seq(ctx.js, cfg.events_stream)
    gc = GarbageCollector(docs, events, store, ctx.bus, GcSettings.from_env(), gate, log_seq)
    await gc.register(ctx.bus)
    reactor = Reactor(
        ctx.js,
        reg,
        name="pfs-downstream",
        subjects=["ev.pfs.repo.>"],
        handler=Downstream(writer, docs).handle,
        event_types=DOWNSTREAM_EVENTS,
        stream=cfg.events_stream,
        gate=gate,
    )
    await reactor.start()
    ctx.stack.push_async_callback(reactor.stop)
    ctx.log.info("pfs ready", projection_positions=[v.position for v in views])
