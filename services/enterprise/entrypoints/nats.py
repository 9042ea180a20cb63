"""enterprise's NATS entrypoints: the commands, queries and event consumers it serves
(the activation state).

``qry.enterprise.Health`` is served for every service by ``libs.service``; this
module registers what is specific to enterprise on ``ctx.bus`` / ``ctx.js``.
"""

from __future__ import annotations

from libs.service import ServiceContext

SERVED: tuple[str, ...] = ("qry.enterprise.Health",)


async def setup(ctx: ServiceContext) -> None:
    ctx.log.info("enterprise entrypoints registered", subjects=list(SERVED))
