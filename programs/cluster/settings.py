"""The launcher's settings, read from the environment (nothing connects here).

``PACH_DATA_DIR`` (default ``./.pachyderm``), ``PACH_GRPC_PORT`` (30650),
``PACH_HTTP_PORT`` (30080), ``PACH_BIND_ADDRESS`` (127.0.0.1: the address
the gRPC and HTTP listeners bind; ``PACH_GRPC_HOST`` is its older name; set
``0.0.0.0`` to serve other machines, which the gateway warns about while
auth is not built), ``PACH_REPLICAS`` such as ``pfs=2,pps=2`` and
``PACH_NATS_NODES`` (1: one nats-server; 3 or 5: a JetStream cluster of that
many nodes on loopback, whose streams keep ``PACH_EVENTS_REPLICAS`` copies,
3 unless set, and whose backend services run 2 replicas each unless
``PACH_REPLICAS`` names another count).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from libs.config import Config
from libs.errors import InvalidArgument

BACKENDS: tuple[str, ...] = ("pfs", "pps", "auth", "enterprise", "admin")
GATEWAY = "gateway"


def parse_replicas(raw: str) -> dict[str, int]:
    """``"pfs=2,pps=3"`` -> ``{"pfs": 2, "pps": 3}`` (others default to 1)."""
    out: dict[str, int] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, count = item.partition("=")
        name = name.strip()
        if not sep or name not in BACKENDS:
            raise InvalidArgument(
                f"PACH_REPLICAS must look like pfs=2,pps=2 with services from {BACKENDS}, "
                f"got {item!r}",
                name="PACH_REPLICAS",
            )
        try:
            n = int(count)
        except ValueError:
            n = 0
        if not 1 <= n <= 64:
            raise InvalidArgument(
                f"PACH_REPLICAS: {name} needs a replica count from 1 to 64, got {count!r}",
                name="PACH_REPLICAS",
            )
        out[name] = n
    return out


NATS_NODES = (1, 3, 5)
# Each backend's replicas on a NATS cluster unless PACH_REPLICAS says otherwise.
CLUSTER_REPLICAS = 2


def parse_nats_nodes(raw: str) -> int:
    try:
        nodes = int(raw)
    except ValueError:
        nodes = 0
    if nodes not in NATS_NODES:
        raise InvalidArgument(
            f"PACH_NATS_NODES must be one of {', '.join(map(str, NATS_NODES))} "
            f"(a cluster needs a majority alive), got {raw!r}",
            name="PACH_NATS_NODES",
        )
    return nodes


@dataclass(frozen=True)
class ClusterSettings:
    config: Config
    replicas: dict[str, int] = field(default_factory=dict)
    stop_timeout_s: float = 10.0
    nats_nodes: int = 1
    # Copies of every stream and bucket (PACH_EVENTS_REPLICAS for the services).
    stream_replicas: int = 1

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def local_host(self) -> str:
        """Where the launcher itself reaches the gateway."""
        host = self.config.grpc_host
        if host in ("0.0.0.0", ""):
            return "127.0.0.1"
        return "[::1]" if host == "::" else host

    def count(self, service: str) -> int:
        return self.replicas.get(service, CLUSTER_REPLICAS if self.nats_nodes > 1 else 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClusterSettings:
        e: Mapping[str, str] = os.environ if env is None else env
        nodes = parse_nats_nodes(e.get("PACH_NATS_NODES", "1") or "1")
        config = Config.from_env("cluster", e)
        stream_replicas = config.events_replicas if e.get("PACH_EVENTS_REPLICAS") else min(nodes, 3)
        if not 1 <= stream_replicas <= nodes:
            raise InvalidArgument(
                f"PACH_EVENTS_REPLICAS must be from 1 to PACH_NATS_NODES ({nodes}), "
                f"got {stream_replicas}",
                name="PACH_EVENTS_REPLICAS",
            )
        return cls(
            config=config,
            replicas=parse_replicas(e.get("PACH_REPLICAS", "")),
            nats_nodes=nodes,
            stream_replicas=stream_replicas,
        )
