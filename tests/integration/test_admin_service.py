"""The admin service as a process of its own: the gateway holds no admin
engine (with admin down, extract, restore and inspect-cluster are
UNAVAILABLE, not answered), and a restarted admin serves the same cluster
id and extracts again, leaving no transfer parts behind."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from libs.api.admin import admin_pb2 as admin
from libs.api.admin import admin_pb2_grpc
from libs.extract_format import MAGIC
from programs.cluster.natsserver import NatsServer
from tests.integration.test_gateway import Procs

OTHERS = ("pfs", "pps", "auth", "enterprise", "gateway")


@pytest.fixture
def procs(tmp_path: Path, nats_server: NatsServer) -> Iterator[Procs]:
    ps = Procs(tmp_path, nats_server.url)
    for key in ("PACH_MAX_MESSAGE_BYTES", "PACH_GRPC_MAX_MESSAGE_BYTES", "PACH_LOG_LEVEL"):
        ps.env.pop(key)
    ps.env["PACH_GATEWAY_HOLD_MS"] = "0"  # a missing backend answers UNAVAILABLE at once
    try:
        yield ps
    finally:
        for p in ps.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def until_answered(stub: admin_pb2_grpc.APIStub, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(stub.InspectCluster(Empty(), timeout=5).id)
        except grpc.RpcError as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"admin never answered: {err}") from None
            time.sleep(0.2)


def extract(stub: admin_pb2_grpc.APIStub) -> bytes:
    ops = stub.Extract(admin.ExtractRequest(framed=True), timeout=30)
    return b"".join(op.frames for op in ops)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def test_without_admin_the_gateway_answers_unavailable(procs: Procs) -> None:
    for service in OTHERS:
        procs.start(service)
    channel = grpc.insecure_channel(f"127.0.0.1:{procs.grpc_port}")
    stub = admin_pb2_grpc.APIStub(channel)
    time.sleep(3)  # the gateway is up (its port answers), admin is not there

    assert code_of(lambda: stub.InspectCluster(Empty(), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    assert code_of(lambda: extract(stub)) == grpc.StatusCode.UNAVAILABLE
    restore = iter([admin.RestoreRequest(op=admin.Op(frames=MAGIC))])
    assert code_of(lambda: stub.Restore(restore, timeout=10)) == grpc.StatusCode.UNAVAILABLE

    # admin starts: the same gateway answers
    procs.start("admin")
    first = until_answered(stub)
    assert len(first) == 32
    assert extract(stub).startswith(MAGIC)

    # admin dies mid-life and comes back: same cluster, extracts again
    procs.procs["admin"].send_signal(signal.SIGKILL)
    procs.procs["admin"].wait(10)
    assert code_of(lambda: stub.InspectCluster(Empty(), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    procs.start("admin")
    assert until_answered(stub) == first
    data = extract(stub)
    assert data.startswith(MAGIC)
    # every part was streamed and deleted
    transfers = procs.tmp / "data" / "objects" / "transfers"
    assert not transfers.exists() or not [p for p in transfers.rglob("*") if p.is_file()]
    channel.close()
