"""The embedded cluster launcher as a real subprocess: readiness, pachctl,
HTTP, the data-dir lock, restart of a killed service, clean shutdown,
JetStream state across restarts, and two clusters side by side."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from libs.natsserver import free_port

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
                [sys.executable, "-m", "libs.cluster"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "cluster.json").read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def wait_ready(self, timeout: float = 30) -> dict[str, Any]:
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
        return [p for p in pids if p]

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


def pachctl(c: Cluster) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACHD_ADDRESS": f"grpc://127.0.0.1:{c.grpc_port}"}
    return subprocess.run(
        [sys.executable, "-m", "libs.pachctl", "version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def http_json(c: Cluster, path: str) -> tuple[int, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{c.http_port}{path}", timeout=5) as r:
        return r.status, json.loads(r.read())


async def jetstream_probe(url: str, publish: bool) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        if publish:
            await js.add_stream(name="PROBE", subjects=["probe.>"])
            await js.publish("probe.one", b"kept")
        info = await js.stream_info("PROBE")
        return int(info.state.messages)
    finally:
        await nc.close()


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[list[Cluster]]:
    made: list[Cluster] = []
    yield made
    for c in made:
        c.kill()


def test_cluster_lifecycle(tmp_path: Path, clusters: list[Cluster]) -> None:
    a = Cluster(tmp_path / "a").start()
    # side by side, on its own dir and ports, with two pfs replicas
    b = Cluster(tmp_path / "b", PACH_REPLICAS="pfs=2").start()
    clusters += [a, b]
    state = a.wait_ready()
    assert set(b.wait_ready()["processes"]) == {
        "pfs-0",
        "pfs-1",
        "pps-0",
        "auth-0",
        "enterprise-0",
        "gateway-0",
    }

    for c in (a, b):
        out = pachctl(c)
        assert out.returncode == 0, out.stderr
        lines = [line.rstrip() for line in out.stdout.splitlines()]
        assert lines == [
            "COMPONENT           VERSION",
            "pachctl             1.7.0",
            "pachd               1.7.0",
        ]
        status, body = http_json(c, "/health")
        assert status == 200 and body["status"] == "ok"
        assert http_json(c, "/version")[1]["pretty"] == "1.7.0"
    assert a.state()["nats"]["url"] != b.state()["nats"]["url"]
    assert asyncio.run(jetstream_probe(state["nats"]["url"], publish=True)) == 1

    # a second launcher on the same data dir refuses, touching nothing
    assert a.proc is not None
    before = (a.data_dir / "cluster.json").read_text()
    second = subprocess.run(
        [sys.executable, "-m", "libs.cluster"],
        cwd=ROOT,
        env={**a.env, "PACH_GRPC_PORT": str(free_port()), "PACH_HTTP_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert f"a cluster is already running on {a.data_dir} (pid {a.proc.pid})" in second.stderr
    assert (a.data_dir / "cluster.json").read_text() == before
    assert a.proc.poll() is None

    # kill -9 a service: the launcher restarts it and health comes back
    old_pid = state["processes"]["pps-0"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: a.state()["processes"]["pps-0"]["pid"] not in (None, old_pid))
    assert a.state()["processes"]["pps-0"]["restarts"] == 1
    wait_until(lambda: http_json_status(a) == 200)
    log = a.log.read_text()
    assert "process died; restarting" in log and "killed by SIGKILL" in log

    # SIGTERM: every child gone, exit 0
    pids = a.pids()
    assert len(pids) == 6
    assert a.stop() == 0
    assert not [p for p in pids if alive(p)]
    assert b.proc is not None and b.proc.poll() is None  # the other cluster is untouched

    # again on the same dir: ready, and JetStream state is still there
    a.start()
    state = a.wait_ready()
    assert pachctl(a).returncode == 0
    assert asyncio.run(jetstream_probe(state["nats"]["url"], publish=False)) == 1
    assert a.stop() == 0
    assert b.stop() == 0


def http_json_status(c: Cluster) -> int:
    try:
        return http_json(c, "/health")[0]
    except OSError:
        return 0
