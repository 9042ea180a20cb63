"""This cluster's id as the gateway tells it to a same-host client (the
local read socket's replies and InspectFile's advertisement of it): asked
of admin (``InspectCluster``, open to anyone) the first time, then kept."""

from __future__ import annotations

import asyncio

from google.protobuf.empty_pb2 import Empty

from libs.api.admin import admin_pb2 as admin
from libs.bus import Bus
from libs.errors import PachError
from libs.local_reads import CLUSTER_KEY, SOCKET_KEY

ASK_S = 2.0  # admin down or held: no advertisement this time, not a slow InspectFile


class ClusterIdentity:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._id = ""
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """The id; "" while admin cannot say (asked again next time)."""
        if self._id:
            return self._id
        async with self._lock:
            if not self._id:
                try:  # never long: InspectFile waits for it
                    info = await asyncio.wait_for(
                        self._bus.request(
                            "admin",
                            "InspectCluster",
                            Empty(),
                            admin.ClusterInfo,
                            kind="qry",
                            timeout=ASK_S,
                        ),
                        ASK_S,
                    )
                except (PachError, TimeoutError):
                    return ""
                self._id = info.id
        return self._id


class LocalAdvert:
    """What InspectFile's trailing metadata tells a client of the local read
    socket: its path (set while it listens) and the cluster's id, which the
    socket's replies carry too (a client checks the two agree)."""

    def __init__(self, identity: ClusterIdentity) -> None:
        self.identity = identity
        self.path = ""

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.path:
            return ()
        cluster = await self.identity.get()
        if not cluster:
            return ()
        return ((SOCKET_KEY, self.path), (CLUSTER_KEY, cluster))
