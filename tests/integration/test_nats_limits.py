"""Services never live deaf (docs/decisions/0016-nats-credentials.md).

A subject or message that nats-server would refuse, and close the connection
for, fails alone with InvalidArgument before it is sent. A 4,100-character
repo name over gRPC and HTTP is refused, and pfs keeps serving without a
restart. A service whose connection the server does close (here: its
credential stops being valid) ends non-zero, and the supervisor starts it
again. Once the credential is valid again the service serves again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import grpc
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import SubjectTooLong, check_publish, guard
from libs.errors import InvalidArgument, MessageTooLarge
from programs.cluster.natsserver import NatsServer
from tests.support.cluster import Cluster, running, wait_until

pytestmark = pytest.mark.timeout(240)

LONG = "r" * 4100


def test_check_publish_names_what_is_too_long() -> None:
    named = r"NATS subject ev\.pfs\.repo\.rrr.*4112 characters.*over the server.s limit of 4096"
    with pytest.raises(SubjectTooLong, match=named):
        check_publish(f"ev.pfs.repo.{LONG}", max_payload=1 << 20)
    with pytest.raises(MessageTooLarge, match="headers"):
        check_publish("a.b", headers={"H": "x" * 2000}, max_payload=1000)
    with pytest.raises(MessageTooLarge, match="with headers"):
        check_publish("a.b", headers={"H": "x" * 10}, payload_bytes=995, max_payload=1000)
    check_publish("a." + "b" * 3900, "_INBOX.x.y", {"H": "v"}, 999_000, max_payload=1 << 20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(store_dir=tmp_path / "nats").start()
    yield srv
    srv.stop()


async def test_a_guarded_connection_survives_what_the_server_would_close_it_for(
    server: NatsServer,
) -> None:
    closed: list[bool] = []

    async def on_closed() -> None:
        closed.append(True)

    nc = guard(await nats.connect(server.url, closed_cb=on_closed, allow_reconnect=False))
    try:
        with pytest.raises(InvalidArgument):
            await nc.publish(f"ev.{LONG}", b"")
        with pytest.raises(InvalidArgument):
            await nc.request(f"$JS.API.DIRECT.GET.EVENTS.ev.{LONG}", b"", timeout=1)
        with pytest.raises(InvalidArgument):
            await nc.subscribe(f"x.{LONG}")
        with pytest.raises(InvalidArgument):
            await nc.publish("big", b"x" * (nc.max_payload - 10), headers={"H": "v" * 20})
        await nc.flush()
        assert nc.is_connected and not closed
        # what the guard prevents: the same publish unguarded ends the connection
        await Client.publish(nc, f"ev.{LONG}", b"")
        await asyncio.sleep(0.5)
        assert nc.is_closed and closed
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("nats-limits") / "data")


def _code(err: grpc.RpcError) -> grpc.StatusCode:
    got: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
    return got


def _http(cluster: Cluster, path: str, body: object) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{cluster.http_port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_a_4100_character_repo_name_is_refused_and_pfs_keeps_serving(cluster: Cluster) -> None:
    pfs_pid = cluster.state()["processes"]["pfs-0"]["pid"]
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=LONG)), timeout=30)
        assert _code(info.value) == grpc.StatusCode.INVALID_ARGUMENT, info.value
        assert "too long" in str(info.value.details())  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as info:  # read from pfs's read model: not there
            api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name=LONG)), timeout=30)
        assert _code(info.value) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        status, body = _http(cluster, "/api/pfs/CreateRepo", {"repo": {"name": LONG}})
        assert status == 400, body
        # pfs still serves, in the same process
        api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="after")), timeout=30)
        got = api.InspectRepo(pfs.InspectRepoRequest(repo=pfs.Repo(name="after")), timeout=30)
        assert got.repo.name == "after"
        names = [r.repo.name for r in api.ListRepo(pfs.ListRepoRequest(), timeout=30).repo_info]
        assert names == ["after"]
    state = cluster.state()["processes"]["pfs-0"]
    assert state["pid"] == pfs_pid and state["restarts"] == 0


def _reload(cluster: Cluster) -> None:
    os.kill(int(cluster.state()["nats"]["pid"]), signal.SIGHUP)


def test_a_service_whose_connection_is_closed_exits_and_comes_back(cluster: Cluster) -> None:
    """nats-server closes the connections of a user whose password stopped
    matching (config reload). pfs ends non-zero, the supervisor restarts it,
    and once the credential works again pfs serves again."""
    conf = cluster.data_dir / "nats" / "nats-server.conf"
    original = conf.read_text()
    other = bcrypt.hashpw(b"not-pfs-password", bcrypt.gensalt(4)).decode()
    revoked = re.sub(
        r'(user: "pfs"\s*\n\s*password: )"[^"]*"', lambda m: f'{m.group(1)}"{other}"', original
    )
    assert revoked != original
    before = cluster.state()["processes"]["pfs-0"]
    log = cluster.log
    log_start = log.stat().st_size
    conf.write_text(revoked)
    try:
        _reload(cluster)
        # the old process ended with an error code and a new one was started
        wait_until(lambda: cluster.state()["processes"]["pfs-0"]["restarts"] > 0, timeout=60)
        text = log.read_bytes()[log_start:].decode(errors="replace")
        died = [
            json.loads(line)
            for line in text.splitlines()
            if line.startswith("{") and "process died" in line and '"pfs-0"' in line
        ]
        assert died and died[0]["exit"] in ("exited with code 1", "exited with code 3"), text
        assert died[0]["pid"] == before["pid"]
    finally:
        conf.write_text(original)
        _reload(cluster)
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        api = pfs_pb2_grpc.APIStub(channel)

        def serving() -> bool:
            try:
                api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="back")), timeout=5)
                return True
            except grpc.RpcError as err:
                return _code(err) == grpc.StatusCode.ALREADY_EXISTS

        wait_until(serving, timeout=90)
    assert cluster.state()["processes"]["pfs-0"]["pid"] not in (None, before["pid"])
