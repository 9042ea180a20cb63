"""enterprise's NATS entrypoints: ``cmd.enterprise.Activate`` /
``Deactivate`` and ``qry.enterprise.GetState``, authorized by the bus guard
from the local auth view. ``qry.enterprise.Health`` is served for every
service by ``libs.service``."""

from __future__ import annotations

from libs.authz.guard import install_guard
from libs.events import EventStore
from libs.service import ServiceContext
from services.enterprise.app.activation import Enterprise, EnterpriseSettings
from services.enterprise.domain.events import registry
from services.enterprise.domain.rules import RULES

SERVED: tuple[str, ...] = (
    "qry.enterprise.Health",
    "cmd.enterprise.Activate",
    "cmd.enterprise.Deactivate",
    "qry.enterprise.GetState",
)


async def setup(ctx: ServiceContext) -> None:
    cfg = ctx.config
    events = EventStore.from_config(ctx.nc, registry(), cfg)
    ctx.stack.push_async_callback(events.close)
    await install_guard(ctx, RULES, "enterprise")
    await Enterprise(events, EnterpriseSettings.from_env()).register(ctx.bus)
    ctx.log.info("enterprise entrypoints registered", subjects=list(SERVED))
