"""admin's NATS entrypoints (docs/decisions/0012-admin-service.md).

- ``cmd.admin.Extract`` (``ExtractStart``): with a URL, the extract written
  there; without, an extract session, whose parts the caller asks for on
  ``cmd.admin.ExtractParts_<id>``;
- ``cmd.admin.Restore`` (``RestoreStart``): with a URL, the restore read from
  there; without, a restore session, whose parts the caller hands over on
  ``cmd.admin.RestoreParts_<id>``;
- ``qry.admin.InspectCluster``: the cluster's id (``admin.ClusterInfo``).

A session's subject is served by the replica that runs it only. The cluster
id and the event stream are made when admin first starts (``bootstrap_log``);
while the log is lost, admin serves only Restore and InspectCluster.
``qry.admin.Health`` is served for every service by ``libs.service``.
"""

from __future__ import annotations

from google.protobuf.empty_pb2 import Empty

from libs.api.admin import admin_pb2 as admin
from libs.api.internal import admin_service_pb2 as msg
from libs.bus import Context
from libs.objects import open_object_store
from libs.service import ServiceContext
from libs.transfer import open_transfer_store
from services.admin.adapters.cluster_state import ClusterState
from services.admin.app.bootstrap import bootstrap_log
from services.admin.app.operations import Admin

SERVED: tuple[str, ...] = (
    "cmd.admin.Extract",
    "cmd.admin.Restore",
    "qry.admin.InspectCluster",
    "qry.admin.Health",
)


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    state = await ClusterState.open(ctx.js, replicas=cfg.events_replicas)
    await bootstrap_log(ctx.js, cfg, state, ctx.stopping)
    cluster_id = await state.cluster_id()
    store = open_object_store(cfg.objects)
    ctx.stack.push_async_callback(store.close)
    transfers = open_transfer_store(cfg.objects)
    ctx.stack.push_async_callback(transfers.close)
    ops = Admin(ctx.nc, ctx.bus, cfg, state, store, transfers)
    ops.start()
    ctx.stack.push_async_callback(ops.close)

    async def inspect_cluster(_: Empty, __: Context) -> admin.ClusterInfo:
        return admin.ClusterInfo(id=await ops.cluster_id())

    await ctx.bus.serve("Extract", msg.ExtractStart, ops.extract)
    await ctx.bus.serve("Restore", msg.RestoreStart, ops.restore)
    await ctx.bus.serve("InspectCluster", Empty, inspect_cluster, kind="qry")
    ctx.log.info("admin entrypoints registered", subjects=list(SERVED), cluster_id=cluster_id)
