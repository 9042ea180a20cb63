"""pfs's NATS entrypoints: the commands, queries and event consumers it serves
(repos, branches, commits and file trees).

``qry.pfs.Health`` is served for every service by ``libs.service``; this
module registers what is specific to pfs on ``ctx.bus`` / ``ctx.js``.
"""

from __future__ import annotations

from libs.service import ServiceContext

SERVED: tuple[str, ...] = ("qry.pfs.Health",)


async def setup(ctx: ServiceContext) -> None:
    ctx.log.info("pfs entrypoints registered", subjects=list(SERVED))
