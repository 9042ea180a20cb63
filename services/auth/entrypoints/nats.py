"""auth's NATS entrypoints: the commands, queries and event consumers it serves
(admins, ACLs and tokens).

``qry.auth.Health`` is served for every service by ``libs.service``; this
module registers what is specific to auth on ``ctx.bus`` / ``ctx.js``.
"""

from __future__ import annotations

from libs.service import ServiceContext

SERVED: tuple[str, ...] = ("qry.auth.Health",)


async def setup(ctx: ServiceContext) -> None:
    ctx.log.info("auth entrypoints registered", subjects=list(SERVED))
