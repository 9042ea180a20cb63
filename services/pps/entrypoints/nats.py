"""pps's NATS entrypoints: open the event store, read models and object
store, start the projections, and serve the commands and queries it owns
(``cmd.pps.*``, ``qry.pps.*``). ``qry.pps.Health`` is served for every
service by ``libs.service``.

Drafted with the pipeline commands and cron ticks; the job trigger, the
masters, the workers and the job/datum/log queries join here."""

from __future__ import annotations

import os

from libs.api.events import pfs_pb2 as pfs_events
from libs.api.pps import pps_pb2 as pps
from libs.authz.guard import install_guard
from libs.authz.view import AuthView
from libs.errors import InvalidArgument
from libs.events import EventStore, ProjectionRunner, Reactor
from libs.objects import ObjectStore, open_object_store
from libs.readmodels import DocumentStore, open_document_store
from libs.restore_gate import ReactionGate
from libs.service import ServiceContext
from services.pps.adapters.jobs_view import JobsProjection, job_counts
from services.pps.adapters.leases import Leases
from services.pps.adapters.logs import LogStore
from services.pps.adapters.pfs import Pfs
from services.pps.adapters.pipelines_view import PipelinesProjection, get_pipeline
from services.pps.adapters.secrets import SecretStore, default_root
from services.pps.adapters.work_queue import ensure_stream as ensure_work_stream
from services.pps.app import job_trigger
from services.pps.app.authorize import RULES
from services.pps.app.cron import CronTicks
from services.pps.app.gc_roots import ObjectRoots
from services.pps.app.job_run import MasterDeps
from services.pps.app.jobs import Jobs, JobWriter
from services.pps.app.master import Master
from services.pps.app.pipelines import Pipelines, PipelineWriter
from services.pps.app.secrets import Secrets
from services.pps.app.service import ServiceHost
from services.pps.app.workers import PoolFactory, local_pools
from services.pps.domain.events import registry
from services.pps.domain.resources import WorkerCaps
from services.pps.runners.local import LocalRunner


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    auth_view = await install_guard(ctx, RULES, "pps")
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
    ctx.watch_applied(*views)
    await ctx.catch_up()  # (before a single query is answered)
    store = open_object_store(cfg.objects)
    ctx.stack.push_async_callback(store.close)
    pfs = Pfs(ctx.bus)
    gate = await ctx.restore_gate()

    cron = CronTicks(docs, pfs, store, gate=gate)
    pipeline_writer = PipelineWriter.create(events, views)
    pipelines = Pipelines(
        pipeline_writer, docs, pfs, job_counts, caps=WorkerCaps.from_env(os.environ)
    )
    host = "localhost" if cfg.grpc_host in ("", "0.0.0.0", "::") else cfg.grpc_host
    pipelines.githook_url = f"http://{host}:{cfg.http_port}/v1/handle/push"
    pipelines.listeners.append(cron.sync)
    await pipelines.register(ctx.bus)
    await ObjectRoots(docs).register(ctx.bus)
    await Secrets(SecretStore(default_root(cfg.data_dir))).register(ctx.bus)
    await cron.start()
    ctx.stack.push_async_callback(cron.stop)
    await start_jobs(
        ctx, events, views, docs, pfs, store, pipelines, pipeline_writer, gate, auth_view
    )
    ctx.log.info("pps ready", projection_positions=[v.position for v in views])


async def worker_pools(ctx: ServiceContext, docs: DocumentStore) -> PoolFactory:
    """Where pipeline workers run: local processes, or pods with
    ``PACH_PPS_RUNNER=kubernetes`` (services/pps/runners/kubernetes.py)."""
    runner = os.environ.get("PACH_PPS_RUNNER", "local") or "local"
    if runner == "local":
        return local_pools()
    if runner != "kubernetes":
        raise InvalidArgument(f"PACH_PPS_RUNNER must be local or kubernetes, got {runner!r}")
    from libs.deploy import kube
    from services.pps.runners.kubernetes import KubernetesRunnerConfig, kubernetes_pools

    k8s_cfg = KubernetesRunnerConfig.from_env(os.environ)
    api = await kube.connect(k8s_cfg.kubeconfig)
    ctx.stack.push_async_callback(api.close)

    async def spec_of(name: str) -> tuple[int, pps.CreatePipelineRequest] | None:
        record = await get_pipeline(docs, name)
        return None if record is None else (record.version, record.spec)

    return kubernetes_pools(kube.Kube(api), spec_of, k8s_cfg)


async def start_jobs(
    ctx: ServiceContext,
    events: EventStore,
    views: list[ProjectionRunner],
    docs: DocumentStore,
    pfs: Pfs,
    store: ObjectStore,
    pipelines: Pipelines,
    pipeline_writer: PipelineWriter,
    gate: ReactionGate | None = None,
    auth_view: AuthView | None = None,
) -> None:
    """Jobs (helper D): the work and log streams, the job/datum/log
    handlers, the job trigger reaction and the pipeline masters."""
    cfg = ctx.config
    await ensure_work_stream(ctx.js, replicas=cfg.events_replicas)
    logs = LogStore(ctx.js, replicas=cfg.events_replicas)
    await logs.ensure()
    # A projection filtered to some subjects never passes a sequence that is
    # not on them: job writes wait for the jobs view only (it follows every
    # pps subject); pipeline writes wait for both views.
    jobs_views = [v for v in views if isinstance(v.projection, JobsProjection)]
    writer = JobWriter.create(events, jobs_views)
    block_for = max(1.0, cfg.request_timeout_s - 2.0)
    await Jobs(writer, docs, pfs, logs, store, block_for=block_for).register(ctx.bus)
    # One master per pipeline across replicas; a restarted replica (same
    # PACH_REPLICA) takes its leases back at once.
    leases = Leases(ctx.js, owner=f"pps-{cfg.replica}", replicas=cfg.events_replicas)
    scratch = cfg.data_dir / "pps-scratch" / f"services-{cfg.replica}"
    deps = MasterDeps(
        docs,
        writer,
        pipeline_writer,
        pfs,
        store,
        ctx.js,
        logs,
        await worker_pools(ctx, docs),
        cfg.objects,
        leases=leases,
        services=ServiceHost(
            store,
            lambda: LocalRunner(hide=[scratch, cfg.data_dir]),
            scratch_root=scratch,
            logs=logs,
            secrets=SecretStore(default_root(cfg.data_dir)),
        ),
    )
    master = Master(deps, ctx.nc, gate=gate)
    pipelines.listeners.append(master.poke)
    if auth_view is not None:  # jobs read their inputs as their pipeline's creator
        deps.may_read = auth_view.pipeline_denial
    await master.start()
    ctx.stack.push_async_callback(master.stop)
    trigger_registry = registry()
    trigger_registry.register_module(pfs_events)
    trigger = Reactor(
        ctx.js,
        trigger_registry,
        name=job_trigger.NAME,
        subjects=list(job_trigger.SUBJECTS),
        handler=job_trigger.JobTrigger(
            writer, docs, pfs, pipeline_writer, on_created=master.poke
        ).handle,
        event_types=job_trigger.EVENT_TYPES,
        stream=cfg.events_stream,
        max_attempts=job_trigger.MAX_ATTEMPTS,
        gate=gate,
    )
    await trigger.start()
    ctx.stack.push_async_callback(trigger.stop)
