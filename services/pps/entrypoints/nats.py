"""pps's NATS entrypoints: open the event store, read models and object
store, start the projections, and serve the commands and queries it owns
(``cmd.pps.*``, ``qry.pps.*``). ``qry.pps.Health`` is served for every
service by ``libs.service``.

Drafted with the pipeline commands and cron ticks; the job trigger, the
masters, the workers and the job/datum/log queries join here."""

from __future__ import annotations

from libs.events import EventStore, ProjectionRunner
from libs.objects import open_object_store
from libs.readmodels import open_document_store
from libs.service import ServiceContext
from services.pps.adapters.jobs_view import JobsProjection, job_counts
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import PipelinesProjection
from services.pps.app.cron import CronTicks
from services.pps.app.pipelines import Pipelines, PipelineWriter
from services.pps.domain.events import registry


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    reg = registry()
    events = EventStore.from_config(ctx.nc, reg, cfg)
    ctx.stack.push_async_callback(events.close)
    docs = open_document_store(cfg.readmodels, "pps")
    ctx.stack.push_async_callback(docs.close)
    views = []
    for projection in (PipelinesProjection(), JobsProjection(docs)):
        view = ProjectionRunner(ctx.js, reg, docs, projection, stream=cfg.events_stream)
        await view.start()
        ctx.stack.push_async_callback(view.stop)
        views.append(view)
    store = open_object_store(cfg.objects)
    ctx.stack.push_async_callback(store.close)
    pfs = Pfs(ctx.bus)

    cron = CronTicks(docs, pfs, store)
    pipelines = Pipelines(PipelineWriter.create(events, views), docs, pfs, job_counts)
    pipelines.listeners.append(cron.sync)
    await pipelines.register(ctx.bus)
    await cron.start()
    ctx.stack.push_async_callback(cron.stop)
    ctx.log.info("pps ready", projection_positions=[v.position for v in views])
