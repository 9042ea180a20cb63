"""enterprise.API's commands and query: Activate (a code signed by the key
the cluster trusts), GetState, Deactivate."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from libs.activation_code import load_public_key, verify
from libs.api.enterprise import enterprise_pb2 as ent
from libs.bus import Bus, Context
from libs.errors import FailedPrecondition
from libs.events import AggregateCache, EventStore
from services.enterprise.domain import activation as domain

KEY_ENV = "PACH_ENTERPRISE_PUBLIC_KEY"


@dataclass(frozen=True)
class EnterpriseSettings:
    public_key: str = ""  # path of the PEM public key the cluster trusts

    @classmethod
    def from_env(cls) -> EnterpriseSettings:
        return cls(public_key=os.environ.get(KEY_ENV, ""))


def _info(expires: int) -> ent.TokenInfo:
    info = ent.TokenInfo()
    if expires:
        info.expires.CopyFrom(Timestamp(seconds=expires))
    return info


_STATES = {"NONE": ent.NONE, "ACTIVE": ent.ACTIVE, "EXPIRED": ent.EXPIRED}


class Enterprise:
    def __init__(self, events: EventStore, settings: EnterpriseSettings) -> None:
        self.cache: AggregateCache[domain.Activation] = AggregateCache(
            events, initial=domain.Activation, evolve=domain.evolve
        )
        self.settings = settings

    async def register(self, bus: Bus) -> None:
        await bus.serve("Activate", ent.ActivateRequest, self.activate)
        await bus.serve("Deactivate", ent.DeactivateRequest, self.deactivate)
        await bus.serve("GetState", ent.GetStateRequest, self.get_state, kind="qry")

    async def activate(self, req: ent.ActivateRequest, ctx: Context) -> ent.ActivateResponse:
        if not self.settings.public_key:
            raise FailedPrecondition(
                f"this cluster trusts no activation key: set {KEY_ENV} to a PEM public key file"
            )
        now = time.time()
        claims = verify(req.activation_code, load_public_key(Path(self.settings.public_key)), now)
        requested = req.expires.seconds if req.HasField("expires") else 0
        done = await self.cache.execute(
            domain.ref(),
            domain.activate(claims, requested, now),
            principal=ctx.principal,
            correlation_id=ctx.request_id,
        )
        return ent.ActivateResponse(info=_info(done.state.expires))

    async def deactivate(self, req: ent.DeactivateRequest, ctx: Context) -> ent.DeactivateResponse:
        await self.cache.execute(
            domain.ref(),
            domain.deactivate,
            principal=ctx.principal,
            correlation_id=ctx.request_id,
        )
        return ent.DeactivateResponse()

    async def get_state(self, req: ent.GetStateRequest, ctx: Context) -> ent.GetStateResponse:
        state = (await self.cache.load(domain.ref())).state
        return ent.GetStateResponse(
            state=_STATES[state.state(time.time())], info=_info(state.expires)
        )
