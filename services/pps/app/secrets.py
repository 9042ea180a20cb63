"""Secret commands and queries (not in 1.7; Pachyderm 2.x's names):
CreateSecret (a Kubernetes Secret manifest), DeleteSecret, InspectSecret,
ListSecret, served by pps, which owns the local secret store
(``services.pps.adapters.secrets``) because it starts the workers that read
it. Values are never logged, answered or recorded as events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus, Context, kind_for
from services.pps.adapters.secrets import SecretStore, StoredSecret
from services.pps.domain.secrets import check_name, parse_manifest


def _info(stored: StoredSecret) -> pps.SecretInfo:
    created = Timestamp()
    created.FromNanoseconds(stored.created_ns)
    return pps.SecretInfo(
        secret=pps.Secret(name=stored.name), type=stored.type, creation_timestamp=created
    )


@dataclass
class Secrets:
    store: SecretStore

    async def register(self, bus: Bus) -> None:
        handlers = (
            ("CreateSecret", pps.CreateSecretRequest, self.create_secret),
            ("DeleteSecret", pps.DeleteSecretRequest, self.delete_secret),
            ("InspectSecret", pps.InspectSecretRequest, self.inspect_secret),
            ("ListSecret", Empty, self.list_secret),
        )
        for name, request_type, handler in handlers:
            await bus.serve(name, request_type, handler, kind=kind_for(name))  # type: ignore[arg-type]

    async def create_secret(self, req: pps.CreateSecretRequest, ctx: Context) -> Empty:
        secret = parse_manifest(req.file)
        await asyncio.to_thread(self.store.put, secret)
        return Empty()

    async def delete_secret(self, req: pps.DeleteSecretRequest, ctx: Context) -> Empty:
        await asyncio.to_thread(self.store.delete, check_name(req.secret.name))
        return Empty()

    async def inspect_secret(self, req: pps.InspectSecretRequest, ctx: Context) -> pps.SecretInfo:
        return _info(await asyncio.to_thread(self.store.inspect, check_name(req.secret.name)))

    async def list_secret(self, req: Empty, ctx: Context) -> pps.SecretInfos:
        def all_infos() -> list[StoredSecret]:
            return [self.store.inspect(name) for name in self.store.names()]

        infos = await asyncio.to_thread(all_infos)
        return pps.SecretInfos(secret_info=[_info(s) for s in infos])
