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
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from programs.cluster.natsserver import free_port
from tests.support.cluster import ROOT, Cluster, alive, wait_until


def pachctl(c: Cluster) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PACHD_ADDRESS": f"grpc://127.0.0.1:{c.grpc_port}"}
    return subprocess.run(
        [sys.executable, "-m", "programs.pachctl", "version"],
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
        "admin-0",
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
        [sys.executable, "-m", "programs.cluster"],
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
    assert len(pids) == 7  # nats, five services, the gateway
    assert a.stop() == 0
    assert not [p for p in pids if alive(p)]
    assert b.proc is not None and b.proc.poll() is None  # the other cluster is untouched

    # again on the same dir: ready, and JetStream state is still there. On
    # ports of its own: the ones it let go may meanwhile be any parallel
    # test's client or server port (the kernel hands them out again).
    a.grpc_port, a.http_port = free_port(), free_port()
    a.env.update(PACH_GRPC_PORT=str(a.grpc_port), PACH_HTTP_PORT=str(a.http_port))
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
