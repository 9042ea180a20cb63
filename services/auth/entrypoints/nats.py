"""auth's NATS entrypoints: ``cmd.auth.*`` / ``qry.auth.*`` (auth.API:
admins, ACLs, tokens, groups), authorized by the bus guard from the local
auth view. ``qry.auth.Health`` is served for every service by
``libs.service``."""

from __future__ import annotations

from libs.authz.guard import install_guard
from libs.events import EventStore
from libs.service import ServiceContext
from services.auth.app.auth import Auth
from services.auth.domain.events import registry
from services.auth.domain.rules import RULES


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    events = EventStore.from_config(ctx.nc, registry(), cfg)
    ctx.stack.push_async_callback(events.close)
    view = await install_guard(ctx, RULES, "auth")
    await Auth(events, view).register(ctx.bus)
    ctx.log.info("auth entrypoints registered")
