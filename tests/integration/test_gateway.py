"""The gateway and the services as real processes against a real
nats-server, spoken to over real gRPC and HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.api.version.versionpb import version_pb2_grpc
from programs.cluster.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_BYTES = 64 * 1024


class Procs:
    def __init__(self, tmp: Path, nats_url: str) -> None:
        self.tmp = tmp
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "PACH_NATS_URL": nats_url,
            "PACH_DATA_DIR": str(tmp / "data"),
            "PACH_GRPC_HOST": "127.0.0.1",
            "PACH_GRPC_PORT": str(self.grpc_port),
            "PACH_HTTP_PORT": str(self.http_port),
            "PACH_LOG_FORMAT": "json",
            "PACH_LOG_LEVEL": "debug",  # health probes log at debug level
            "PACH_MAX_MESSAGE_BYTES": str(MAX_BYTES),
            "PACH_GRPC_MAX_MESSAGE_BYTES": str(MAX_BYTES),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, service: str) -> None:
        log = open(self.tmp / f"{service}.log", "ab")  # noqa: SIM115
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def log_lines(self, service: str) -> list[dict[str, Any]]:
        text = (self.tmp / f"{service}.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def stop_all(self) -> dict[str, int]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return {name: p.wait(15) for name, p in self.procs.items()}


@pytest.fixture
def procs(tmp_path: Path, nats_server: NatsServer) -> Iterator[Procs]:
    ps = Procs(tmp_path, nats_server.url)
    try:
        yield ps
    finally:
        for p in ps.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def wait_until(cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def health_status(channel: grpc.Channel) -> int | None:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return int(reply.status)
    except grpc.RpcError:
        return None


def http_get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_gateway_health_version_logging_and_limits(procs: Procs) -> None:
    for service in ("pfs", "pps", "auth", "admin", "gateway"):  # enterprise is missing
        procs.start(service)
    channel = grpc.insecure_channel(f"127.0.0.1:{procs.grpc_port}")
    wait_until(lambda: health_status(channel) is not None)

    # a backend is missing: NOT_SERVING, and HTTP says which one
    def others_up() -> bool:
        _, body = http_get(procs.http_port, "/health")
        return all(body["services"][s]["status"] == "ok" for s in ("pfs", "pps", "auth", "admin"))

    wait_until(others_up)
    assert health_status(channel) == NOT_SERVING
    status, body = http_get(procs.http_port, "/health")
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["services"]["enterprise"]["status"] == "down"
    assert "enterprise" in body["services"]["enterprise"]["detail"]

    # all backends answer: SERVING (re-checked every ~2 s)
    procs.start("enterprise")
    wait_until(lambda: health_status(channel) == SERVING)
    status, body = http_get(procs.http_port, "/health")
    assert status == 200 and body["status"] == "ok"
    status, body = http_get(procs.http_port, "/version")
    assert status == 200 and body["pretty"] == "1.7.0"

    # GetVersion over real gRPC, with a token: one log line per request
    stub = version_pb2_grpc.APIStub(channel)
    for _ in range(3):
        v = stub.GetVersion(Empty(), metadata=(("authn-token", "abc"),), timeout=5)
        assert (v.major, v.minor, v.micro) == (1, 7, 0)

    # an oversize request: RESOURCE_EXHAUSTED, and the gateway keeps serving
    raw = channel.unary_unary(
        "/versionpb.API/GetVersion",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x00" * (MAX_BYTES + 1024), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.GetVersion(Empty(), timeout=5).major == 1

    channel.close()
    codes = procs.stop_all()
    assert codes == dict.fromkeys(codes, 0)  # SIGTERM drains and exits 0

    lines = procs.log_lines("gateway")
    version_lines = [
        ln
        for ln in lines
        if ln.get("event") == "grpc request" and ln.get("method") == "/versionpb.API/GetVersion"
    ]
    assert len(version_lines) == 4
    for ln in version_lines:
        assert ln["status"] == "OK"
        assert isinstance(ln["duration_ms"], float)
        assert ln["service"] == "gateway"
        assert len(ln["trace_id"]) == 32
    assert len({ln["trace_id"] for ln in version_lines}) == 4
    http_lines = [ln for ln in lines if ln.get("event") == "http request"]
    assert all(ln["method"] == "GET" and "duration_ms" in ln for ln in http_lines)
    health_codes = [ln["status"] for ln in http_lines if ln["path"] == "/health"]
    assert health_codes[0] == 503 and health_codes[-1] == 200
    assert [ln["status"] for ln in http_lines if ln["path"] == "/version"] == [200]
    # the backends logged their Health queries through the bus
    assert any(ln.get("subject") == "qry.pfs.Health" for ln in procs.log_lines("pfs"))


def test_two_replicas_share_the_health_subject(procs: Procs) -> None:
    for service in ("pfs", "pps", "auth", "enterprise", "admin", "gateway"):
        procs.start(service)
    first_pfs = procs.procs.pop("pfs")
    procs.start("pfs")  # a second replica (its log goes to the same file)
    procs.procs["pfs-first"] = first_pfs
    channel = grpc.insecure_channel(f"127.0.0.1:{procs.grpc_port}")

    def pfs_replicas_started() -> int:
        return sum(1 for e in procs.log_lines("pfs") if e.get("event") == "service started")

    # both replicas serve (a replica answers only once it caught up with the log)
    wait_until(lambda: pfs_replicas_started() == 2, timeout=60)
    wait_until(lambda: health_status(channel) == SERVING, timeout=60)
    first_pfs.send_signal(signal.SIGTERM)
    assert first_pfs.wait(15) == 0
    # the health rounds that follow reach the remaining replica on the shared subject
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        assert health_status(channel) == SERVING
        time.sleep(0.5)
    channel.close()


class _Metadata:
    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = pairs

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.pairs

    def time_remaining(self) -> float | None:
        return None


async def test_authn_token_becomes_the_bus_principal(nc: Any) -> None:
    from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
    from libs.bus import Bus, Context
    from services.gateway.principal import ask

    async def who(_: HealthRequest, ctx: Context) -> HealthResponse:
        return HealthResponse(reason=ctx.principal)

    backend = Bus(nc, service="pfs")
    await backend.serve("WhoAmI", HealthRequest, who, kind="qry")
    gateway = Bus(nc, service="gateway")
    try:
        with_token = _Metadata(("user-agent", "x"), ("authn-token", "tok-1"))
        reply = await ask(
            gateway, with_token, "pfs", "WhoAmI", HealthRequest(), HealthResponse, kind="qry"
        )
        assert reply.reason == "tok-1"
        reply = await ask(
            gateway, _Metadata(), "pfs", "WhoAmI", HealthRequest(), HealthResponse, kind="qry"
        )
        assert reply.reason == ""
    finally:
        await backend.close()
