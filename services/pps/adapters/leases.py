"""One master per pipeline across pps replicas: leases in a JetStream
key-value bucket."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

LEASES_BUCKET = "PPS_MASTERS"


@dataclass
class Leases:
    """One master per pipeline across pps replicas: a lease per pipeline in
    the KV bucket ``PPS_MASTERS`` (entries expire ``ttl`` seconds after their
    last refresh). The holder refreshes it every ``ttl / 4``; a replica that
    finds it taken waits; a replica restarted under the same ``owner`` takes
    its own lease back at once. A bucket made earlier keeps its own ``ttl``
    (read back when it is opened), so the refreshes keep up with it."""

    js: JetStreamContext
    owner: str
    ttl: float = 20.0
    replicas: int = 1
    _kv: KeyValue | None = None
    _held: dict[str, int] = field(default_factory=dict)

    async def open(self) -> KeyValue:
        if self._kv is None:
            config = api.KeyValueConfig(
                bucket=LEASES_BUCKET, history=1, ttl=self.ttl, replicas=self.replicas
            )
            try:
                self._kv = await self.js.create_key_value(config)
            except nats.js.errors.BadRequestError:
                self._kv = await self.js.key_value(LEASES_BUCKET)
                ttl = (await self._kv.status()).ttl
                if ttl:
                    self.ttl = min(self.ttl, ttl)
        return self._kv

    async def hold(self, name: str) -> bool:
        """Take or refresh the lease of pipeline ``name``; False when another
        replica holds it."""
        kv = await self.open()
        owner = self.owner.encode()
        try:
            rev = self._held.get(name)
            if rev is not None:
                self._held[name] = await kv.update(name, owner, last=rev)
                return True
            try:
                self._held[name] = await kv.create(name, owner)
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                entry = await kv.get(name)
                if entry.value != owner:
                    return False
                self._held[name] = await kv.update(name, owner, last=entry.revision)
                return True
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            self._held.pop(name, None)
            return False

    async def release(self, name: str) -> None:
        rev = self._held.pop(name, None)
        if rev is None or self._kv is None:
            return
        with contextlib.suppress(Exception):
            await self._kv.delete(name, last=rev)
