"""The bus guard a service installs (``bus.guard``): every request the
gateway forwarded for a client is authorized from the local auth view
against the service's rule for it. Requests from inside the cluster (no
``Pach-Auth-Seq``) pass; with auth not active, everything passes.

A rule maps the request to a ``Need``. A forwarded request whose name has
no rule is refused: a new RPC is closed until someone writes its rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.message import Message

from libs.authz.state import Need
from libs.authz.view import AuthView
from libs.bus.bus import Context
from libs.errors import PermissionDenied, Unauthenticated
from libs.service import ServiceContext

Rule = Callable[[Any], Need]

# Requests every replica serves for the cluster's own probes.
OPEN = frozenset({"Health"})


class Guard:
    def __init__(self, view: AuthView, rules: Mapping[str, Rule], service: str) -> None:
        self.view = view
        self.rules = rules
        self.service = service

    async def __call__(self, name: str, request: Message, ctx: Context) -> None:
        if not ctx.external or name in OPEN:
            return
        await self.view.wait_for(ctx.auth_seq)
        if not self.view.state.active:
            return
        # Per-session names (``ExtractParts_<id>``) share the rule ``ExtractParts_``.
        rule = self.rules.get(name) or self.rules.get(name.partition("_")[0] + "_")
        if rule is None:
            raise PermissionDenied(
                f"{self.service} {name} has no authorization rule: refused while auth is active"
            )
        need = rule(request)
        try:
            self.view.state.check(ctx.principal, need, self.view.now())
        except Unauthenticated:
            raise
        except PermissionDenied:
            # The view may be a little behind (a repo just created): catch
            # up with the log once, then decide for good.
            await self.view.sync()
            self.view.state.check(ctx.principal, need, self.view.now())


async def install_guard(ctx: ServiceContext, rules: Mapping[str, Rule], service: str) -> AuthView:
    """Start this process's auth view (closed with ``ctx.stack``) and
    authorize every request ``ctx.bus`` serves from it."""
    view = AuthView(ctx.js, stream=ctx.config.events_stream)
    await view.start()
    ctx.stack.push_async_callback(view.stop)
    ctx.bus.guard = Guard(view, rules, service)
    return view
