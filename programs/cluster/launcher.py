"""Start and supervise the whole cluster in the foreground.

Order up: lock the data dir, nats-server, the backend services, the gateway;
``cluster ready`` once the gateway's gRPC health says SERVING. Order down
(SIGTERM / Ctrl-C): the gateway, then the services, then nats-server.
``<data_dir>/cluster.json`` describes the running cluster (nats url, ports,
pids) for tools and tests; it is rewritten whenever a pid changes.

NATS takes no anonymous connections: the launcher makes one credential per
service (``<data_dir>/nats-credentials.json``, mode 0600) and hands each
service only its own in ``PACH_NATS_USER`` / ``PACH_NATS_PASSWORD``
(programs/cluster/credentials.py, docs/decisions/0016-nats-credentials.md).

With ``PACH_NATS_NODES=3`` nats-server is a three-node JetStream cluster on
loopback (programs/cluster/natscluster.py): the services start once it has
elected a meta leader, get every node's URL and create their streams with
3 copies; ``cluster.json`` lists every node under ``nats_nodes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.errors import Unavailable
from programs.cluster import credentials, natscluster
from programs.cluster.settings import BACKENDS, GATEWAY, ClusterSettings
from programs.cluster.supervisor import NatsProcess, ServiceProcess, child_env

_log = structlog.get_logger("cluster")

READY_POLL_S = 0.25
# Credentials inherited from the launcher's own environment are never passed on.
_CRED_VARS = ("PACH_NATS_USER", "PACH_NATS_PASSWORD", "PACH_NATS_WORKER_")


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise Unavailable(
                f"{what} port {port} on {host} is not free ({exc.strerror}); "
                f"set {'PACH_GRPC_PORT' if what == 'gRPC' else 'PACH_HTTP_PORT'} to another port",
                port=port,
            ) from None


class Launcher:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.state_path = self.data_dir / "cluster.json"
        self.stopping = asyncio.Event()
        self.ready = False
        self.nats_nodes: list[NatsProcess] = []
        self.services: list[ServiceProcess] = []
        self.gateway: ServiceProcess | None = None
        self.creds: dict[str, credentials.Credential] = {}

    @property
    def nats(self) -> NatsProcess | None:
        """The first NATS node (the only one unless PACH_NATS_NODES > 1)."""
        return self.nats_nodes[0] if self.nats_nodes else None

    # --- the state file --------------------------------------------------------

    def state(self) -> dict[str, Any]:
        cfg = self.settings.config
        host = self.settings.local_host
        procs: dict[str, Any] = {}
        for p in [*self.services, *([self.gateway] if self.gateway else [])]:
            procs[p.name] = {
                "service": p.service,
                "replica": p.replica,
                "pid": p.pid,
                "restarts": p.restarts,
            }
        nats = self.nats
        return {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "ready": self.ready,
            "stopping": self.stopping.is_set(),
            "grpc_port": cfg.grpc_port,
            "http_port": cfg.http_port,
            "grpc_address": f"{host}:{cfg.grpc_port}",
            "http_address": f"http://{host}:{cfg.http_port}",
            "nats": {
                "url": nats.server.url if nats else "",
                "port": nats.server.port if nats else 0,
                "pid": nats.pid if nats else None,
                "restarts": nats.restarts if nats else 0,
            },
            "nats_urls": natscluster.urls([n.server for n in self.nats_nodes]),
            "nats_nodes": [
                {
                    "name": n.name,
                    "url": n.server.url,
                    "port": n.server.port,
                    "cluster_port": n.server.cluster_port,
                    "pid": n.pid,
                    "restarts": n.restarts,
                }
                for n in self.nats_nodes
            ],
            "stream_replicas": self.settings.stream_replicas,
            "processes": procs,
        }

    def write_state(self) -> None:
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
        tmp.replace(self.state_path)

    # --- up --------------------------------------------------------------------

    async def _start_nats(self, stack: AsyncExitStack) -> str:
        # Made at first start, kept in the data dir (mode 0600); the server
        # config holds their bcrypt hashes only.
        self.creds = await asyncio.to_thread(credentials.load_or_create, self.data_dir)
        authorization = await asyncio.to_thread(
            credentials.authorization_block,
            self.creds,
            events_stream=self.settings.config.events_stream,
        )
        nodes = self.settings.nats_nodes
        await asyncio.to_thread(natscluster.check_node_count, self.data_dir, nodes)
        servers = await asyncio.to_thread(natscluster.plan, self.data_dir, nodes, authorization)
        self.nats_nodes = [
            NatsProcess(s, self.write_state, name="nats-server" if nodes == 1 else f"nats-{i}")
            for i, s in enumerate(servers)
        ]
        # All at once: a cluster node waits for its peers to elect a leader.
        await asyncio.gather(*(n.start() for n in self.nats_nodes))
        for n in self.nats_nodes:
            stack.push_async_callback(n.stop, self.settings.stop_timeout_s)
        url = natscluster.urls(servers)
        operator = self.creds[credentials.OPERATOR]
        waited = await natscluster.wait_for_jetstream(url, operator.user, operator.password)
        _log.info("jetstream ready", nodes=nodes, waited_s=round(waited, 2))
        return url

    def _env(self, nats_url: str) -> dict[str, str]:
        cfg = self.settings.config
        return child_env(
            os.environ,
            {
                "PACH_NATS_URL": nats_url,
                "PACH_DATA_DIR": str(self.data_dir),
                "PACH_GRPC_PORT": str(cfg.grpc_port),
                "PACH_HTTP_PORT": str(cfg.http_port),
                "PACH_GRPC_HOST": cfg.grpc_host,
                "PACH_EVENTS_REPLICAS": str(self.settings.stream_replicas),
            },
        )

    def _own(self, env: dict[str, str], service: str) -> dict[str, str]:
        """``env`` with ``service``'s own NATS credentials (and nobody else's)."""
        mine = {k: v for k, v in env.items() if not k.startswith(_CRED_VARS)}
        return {**mine, **credentials.service_env(self.creds, service)}

    async def _stop_all(self, procs: list[ServiceProcess]) -> None:
        await asyncio.gather(*(p.stop(self.settings.stop_timeout_s) for p in procs))

    async def wait_ready(self) -> None:
        target = f"{self.settings.local_host}:{self.settings.config.grpc_port}"
        waited = 0.0
        # A refused connect puts a channel into reconnect backoff (1 s and
        # growing); the gateway's port opens within that, so poll at our pace.
        options = [
            ("grpc.initial_reconnect_backoff_ms", int(READY_POLL_S * 1000)),
            ("grpc.min_reconnect_backoff_ms", int(READY_POLL_S * 1000)),
            ("grpc.max_reconnect_backoff_ms", int(READY_POLL_S * 1000)),
        ]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while not self.stopping.is_set():
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                await asyncio.sleep(READY_POLL_S)
                waited += READY_POLL_S
                if waited % 10 < READY_POLL_S:
                    _log.info("waiting for the gateway to be SERVING", waited_s=round(waited))

    async def run(self) -> None:
        cfg = self.settings.config
        check_port_free(cfg.grpc_host, cfg.grpc_port, "gRPC")
        check_port_free(cfg.grpc_host, cfg.http_port, "HTTP")
        tasks: list[asyncio.Task[None]] = []
        async with AsyncExitStack() as stack:

            async def cancel_supervisors() -> None:
                self.stopping.set()
                self.write_state()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            nats_url = await self._start_nats(stack)
            env = self._env(nats_url)
            self.services = [
                ServiceProcess(name, i, self._own(env, name), self.write_state)
                for name in BACKENDS
                for i in range(self.settings.count(name))
            ]
            stack.push_async_callback(self._stop_all, self.services)
            for p in self.services:
                await p.start()
            self.gateway = ServiceProcess(GATEWAY, 0, self._own(env, GATEWAY), self.write_state)
            stack.push_async_callback(self._stop_all, [self.gateway])
            await self.gateway.start()
            stack.push_async_callback(cancel_supervisors)  # runs first on the way down
            sups: list[NatsProcess | ServiceProcess] = [
                *self.nats_nodes,
                *self.services,
                self.gateway,
            ]
            for sup in sups:
                tasks.append(asyncio.create_task(sup.supervise(self.stopping)))

            await self.wait_ready()
            if not self.stopping.is_set():
                self.ready = True
                self.write_state()
                _log.info(
                    "cluster ready",
                    grpc=f"{self.settings.local_host}:{cfg.grpc_port}",
                    http=f"http://{self.settings.local_host}:{cfg.http_port}",
                    nats=nats_url,
                    data_dir=str(self.data_dir),
                )
            await self.stopping.wait()
            _log.info("cluster stopping")
        self.ready = False
        self.write_state()
        _log.info("cluster stopped")


async def main_async(settings: ClusterSettings) -> None:
    launcher = Launcher(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, launcher.stopping.set)
    await launcher.run()


def state_file(data_dir: Path) -> Path:
    return data_dir / "cluster.json"


def read_state(data_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        data: dict[str, Any] = json.loads(state_file(data_dir).read_text())
        return data
    return {}
