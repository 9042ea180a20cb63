"""The launcher's settings, read from the environment (nothing connects here).

``PACH_DATA_DIR`` (default ``./.pachyderm``), ``PACH_GRPC_PORT`` (30650),
``PACH_HTTP_PORT`` (30080), ``PACH_BIND_ADDRESS`` (127.0.0.1: the address
the gRPC and HTTP listeners bind; ``PACH_GRPC_HOST`` is its older name; set
``0.0.0.0`` to serve other machines, which the gateway warns about while
auth is not built) and ``PACH_REPLICAS`` such as ``pfs=2,pps=2``.
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


@dataclass(frozen=True)
class ClusterSettings:
    config: Config
    replicas: dict[str, int] = field(default_factory=dict)
    stop_timeout_s: float = 10.0

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
        return self.replicas.get(service, 1)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClusterSettings:
        e: Mapping[str, str] = os.environ if env is None else env
        return cls(
            config=Config.from_env("cluster", e),
            replicas=parse_replicas(e.get("PACH_REPLICAS", "")),
        )
