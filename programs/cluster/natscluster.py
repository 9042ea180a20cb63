"""Several nats-server processes on this machine as one JetStream cluster.

With ``PACH_NATS_NODES=3`` the launcher starts three nodes on loopback,
each with its own client port, route port and store (``<data_dir>/nats-<i>``),
routed to each other with a route credential of their own
(``<data_dir>/nats-route.json``, mode 0600; a route is a server's view of
every subject, so no local process may dial one without it). Clients get
every node's URL and fail over between them. Streams are created with
``PACH_EVENTS_REPLICAS`` copies (3 by default here): an acknowledged
append is on a majority of the nodes, so losing any one node loses
nothing acknowledged. See docs/decisions/0026-nats-cluster.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path

import nats
import nats.errors

from libs.errors import FailedPrecondition, Unavailable
from programs.cluster.natsserver import NatsServer, free_port

ROUTE_FILE = "nats-route.json"
NODES_FILE = "nats-nodes"
ROUTE_USER = "route"


def store_dir(data_dir: Path, nodes: int, index: int) -> Path:
    """One node's JetStream store: ``nats`` for a single node (as always),
    ``nats-<i>`` for each node of a cluster."""
    return data_dir / "nats" if nodes == 1 else data_dir / f"nats-{index}"


def check_node_count(data_dir: Path, nodes: int) -> None:
    """A data dir keeps the node count it was first started with: the
    streams' replicas and their peers live in the stores. FailedPrecondition
    naming both counts otherwise; records the count at first start."""
    marker = data_dir / NODES_FILE
    recorded = 0
    if marker.exists():
        try:
            recorded = int(marker.read_text().strip())
        except ValueError:
            recorded = 0
    elif (data_dir / "nats" / "jetstream").exists():
        recorded = 1  # made before clusters were possible
    if recorded and recorded != nodes:
        raise FailedPrecondition(
            f"{data_dir} holds a {recorded}-node NATS store; set PACH_NATS_NODES={recorded} "
            f"(or use a new PACH_DATA_DIR) instead of {nodes}",
            name="PACH_NATS_NODES",
        )
    if not marker.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{nodes}\n")


def route_password(data_dir: Path) -> str:
    """The routes' shared secret: made at the first start, then kept."""
    path = data_dir / ROUTE_FILE
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        try:
            return str(json.loads(path.read_text())["password"])
        except (ValueError, KeyError, TypeError):
            raise FailedPrecondition(f"{path} is not a route credential file; remove it") from None
    password = secrets.token_hex(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"password": password}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    return password


def plan(
    data_dir: Path, nodes: int, authorization: str, host: str = "127.0.0.1"
) -> list[NatsServer]:
    """The nodes' servers (not started): one plain server when ``nodes`` is
    1, else ``nodes`` servers routed to each other on ``host``."""
    if nodes == 1:
        return [
            NatsServer(
                store_dir=store_dir(data_dir, 1, 0),
                port=free_port(host),
                host=host,
                log_file=data_dir / "nats.log",
                authorization=authorization,
            )
        ]
    password = route_password(data_dir)
    cluster_ports = [free_port(host) for _ in range(nodes)]
    servers = []
    for i in range(nodes):
        routes = [
            f"nats-route://{ROUTE_USER}:{password}@{host}:{p}"
            for j, p in enumerate(cluster_ports)
            if j != i
        ]
        servers.append(
            NatsServer(
                store_dir=store_dir(data_dir, nodes, i),
                port=free_port(host),
                host=host,
                log_file=data_dir / f"nats-{i}.log",
                authorization=authorization,
                server_name=f"nats-{i}",
                cluster_port=cluster_ports[i],
                routes=routes,
                route_user=ROUTE_USER,
                route_password=password,
            )
        )
    return servers


def urls(servers: list[NatsServer]) -> str:
    """Every node's client URL, comma-separated (``PACH_NATS_URL``)."""
    return ",".join(s.url for s in servers)


async def wait_for_jetstream(
    servers: str, user: str, password: str, timeout: float = 60.0
) -> float:
    """Wait until JetStream answers (in a cluster: a meta leader has been
    elected, which takes a majority of the nodes); the seconds waited.
    Unavailable after ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(
                servers.split(","),
                user=user or None,
                password=password or None,
                connect_timeout=1,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                allow_reconnect=False,
            )
        except (OSError, nats.errors.Error) as exc:
            last = str(exc) or type(exc).__name__
            await asyncio.sleep(0.1)
            continue
        try:
            while time.monotonic() < deadline:
                try:
                    await nc.jetstream(timeout=1).account_info()
                    return time.monotonic() - started
                except (nats.errors.Error, TimeoutError) as exc:
                    last = str(exc) or type(exc).__name__
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()
    raise Unavailable(f"JetStream at {servers} did not answer in {timeout}s: {last}")
