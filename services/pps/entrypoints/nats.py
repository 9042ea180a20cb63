"""pps's NATS entrypoints: the commands, queries and event consumers it serves
(pipelines, jobs and datums).

``qry.pps.Health`` is served for every service by ``libs.service``; this
module registers what is specific to pps on ``ctx.bus`` / ``ctx.js``.
"""

from __future__ import annotations

from libs.service import ServiceContext

SERVED: tuple[str, ...] = ("qry.pps.Health",)


async def setup(ctx: ServiceContext) -> None:
    ctx.log.info("pps entrypoints registered", subjects=list(SERVED))
