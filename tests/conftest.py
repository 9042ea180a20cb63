"""Shared fixtures: a real nats-server with JetStream per test (or per module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from programs.cluster.natsserver import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=tmp_path / "jetstream", log_file=tmp_path / "nats.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        yield client
    finally:
        await client.close()


# `make test` runs the modules on parallel workers, a whole module on one
# worker (`--dist loadfile`, its cluster fixture started once) in the order
# collected (`--no-loadscope-reorder`). The modules that take a minute or more
# go first, so that no worker starts a long one while the others are done.
LONG_MODULES = (
    "test_pfs_crash",
    "test_chaos",
    "test_backup_roundtrip",
    "test_migrations",
    "test_auth_pachctl",
    "test_pachctl_admin",
    "test_pfs_file_ops",
    "test_put_sessions",
    "test_put_batches",
    "test_event_log_identity",
    "test_pps_jobs",
    "test_multinode",
    "test_gateway",
    "test_cluster",
    "test_pps_crash",
    "test_safe_surfaces",
    "test_dashboard",
    "test_fuzz",
    "test_idle",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.stem
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the order within a module is kept
