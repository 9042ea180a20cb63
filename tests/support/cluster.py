"""The embedded cluster (``python -m programs.cluster``) as a real subprocess,
for integration tests: start, wait until ready, stop, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from programs.cluster.natsserver import free_port

ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "PACH_DATA_DIR": str(data_dir),
            "PACH_GRPC_HOST": "127.0.0.1",
            "PACH_GRPC_PORT": str(self.grpc_port),
            "PACH_HTTP_PORT": str(self.http_port),
            "PACH_LOG_FORMAT": "json",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-launcher.log"

    def start(self) -> Cluster:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "programs.cluster"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def state(self) -> dict[str, Any]:
        """``cluster.json``; its ``nats.url`` carries the cluster's operator
        credential (from the 0600 credentials file: cluster.json holds no
        secret) so a test can connect as before."""
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "cluster.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        nats_state = data.get("nats") or {}
        url = nats_state.get("url", "")
        user, password = self.nats_credential()
        if url.startswith("nats://") and password:
            nats_state["url"] = f"nats://{user}:{password}@{url[len('nats://') :]}"
        return data

    def nats_credential(self, role: str = "operator") -> tuple[str, str]:
        """(user, password) of ``role`` (a service, ``pps-worker`` or
        ``operator``) in this cluster's NATS; empty before the first start."""
        try:
            raw = json.loads((self.data_dir / "nats-credentials.json").read_text())
        except (FileNotFoundError, ValueError):
            return role, ""
        return role, str(raw.get("passwords", {}).get(role, ""))

    def nats_address(self) -> str:
        """The cluster's NATS URL without any credential."""
        try:
            raw = json.loads((self.data_dir / "cluster.json").read_text())
        except (FileNotFoundError, ValueError):
            return ""
        return str((raw.get("nats") or {}).get("url", ""))

    def nats_urls(self, role: str = "operator") -> list[str]:
        """Every NATS node's URL (one unless PACH_NATS_NODES > 1), with
        ``role``'s credential."""
        try:
            raw = json.loads((self.data_dir / "cluster.json").read_text())
        except (FileNotFoundError, ValueError):
            return []
        user, password = self.nats_credential(role)
        urls = [u for u in str(raw.get("nats_urls", "")).split(",") if u]
        if password:
            urls = [f"nats://{user}:{password}@{u[len('nats://') :]}" for u in urls]
        return urls

    def nats_nodes(self) -> list[dict[str, Any]]:
        """``cluster.json``'s ``nats_nodes``: name, url, port, pid, restarts."""
        nodes: list[dict[str, Any]] = self.state().get("nats_nodes") or []
        return nodes

    def wait_ready(self, timeout: float = 90) -> dict[str, Any]:
        assert self.proc is not None
        proc = self.proc
        wait_until(
            lambda: (
                (self.state().get("ready") is True and self.state().get("pid") == proc.pid)
                or proc.poll() is not None
            ),
            timeout,
        )
        assert proc.poll() is None, self.log.read_text()[-3000:]
        return self.state()

    def pids(self) -> list[int]:
        st = self.state()
        pids = [p["pid"] for p in st["processes"].values()] + [st["nats"]["pid"]]
        pids += [n["pid"] for n in st.get("nats_nodes") or [] if n["pid"] not in pids]
        return [p for p in pids if p]

    def workers(self, pipeline: str) -> list[psutil.Process]:
        """Live worker processes of ``pipeline`` in this cluster (not in
        another cluster a parallel test runs: workers inherit PACH_DATA_DIR)."""
        found = []
        for proc in psutil.process_iter(["cmdline", "environ", "status"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                env = proc.info["environ"] or {}
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "services.pps.worker" not in cmd or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if env.get("PACH_PPS_PIPELINE") == pipeline and env.get("PACH_DATA_DIR") == str(
                self.data_dir
            ):
                found.append(proc)
        return found

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.pids() if self.state() else []:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def running(data_dir: Path, **env: str) -> Iterator[Cluster]:
    """A started, ready cluster for a fixture to yield; killed afterwards."""
    c = Cluster(data_dir, **env).start()
    try:
        c.wait_ready()
        yield c
    finally:
        c.kill()


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
