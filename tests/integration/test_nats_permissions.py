"""NATS credentials (docs/decisions/0016-nats-credentials.md).

Against a real nats-server that runs the launcher's own authorization block:
a connection without credentials, or with a wrong password, is refused. Each
credential can do what its process needs and nothing more. No user, admin
included, may delete or purge the event log. Then a whole cluster with
credentials: repo, file and pipeline job end to end. The worker runs as
``pps-worker``, and no password reaches user code.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.config import Config, worker_env
from libs.events.store import ensure_stream
from programs.cluster import credentials
from programs.cluster.credentials import Credential
from programs.cluster.natsserver import NatsServer
from services.pps.adapters import work_queue
from services.pps.adapters.logs import LogStore
from tests.support.cluster import Cluster, running

pytestmark = pytest.mark.timeout(240)


# --- a bare server with the cluster's authorization -------------------------


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Credential]:
    return credentials.load_or_create(tmp_path_factory.mktemp("nats-creds"))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, creds: dict[str, Credential]
) -> Iterator[NatsServer]:
    srv = NatsServer(
        store_dir=tmp_path_factory.mktemp("nats-auth") / "nats",
        authorization=credentials.authorization_block(creds),
    ).start()
    yield srv
    srv.stop()


class As:
    """A connection as one user that records the server's refusals."""

    def __init__(self, nc: Client, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def _refused(self, what: str, subject: str) -> bool:
        await self.nc.flush()
        await asyncio.sleep(0.05)
        needle = f'{what} "{subject}"'.lower()
        return any(needle in e.lower() for e in self.errors)

    async def publish_refused(self, subject: str) -> bool:
        await self.nc.publish(subject, b"x")
        return await self._refused("publish to", subject)

    async def subscribe_refused(self, subject: str) -> bool:
        sub = await self.nc.subscribe(subject)
        refused = await self._refused("subscription to", subject)
        if not refused:
            await sub.unsubscribe()
        return refused


async def connect(url: str, user: str = "", password: str = "") -> As:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    auth = {"user": user, "password": password, "inbox_prefix": f"_INBOX.{user}"} if user else {}
    nc = await nats.connect(
        url,
        allow_reconnect=False,
        connect_timeout=2,
        error_cb=on_error,
        **auth,  # type: ignore[arg-type]
    )
    return As(nc, errors)


@pytest.fixture
async def login(server: NatsServer, creds: dict[str, Credential]) -> AsyncIterator[dict[str, As]]:
    """One connection per role, and the streams the services create."""
    conns = {role: await connect(server.url, c.user, c.password) for role, c in creds.items()}
    await ensure_stream(conns["pfs"].nc.jetstream(), Config())
    await work_queue.ensure_stream(conns["pps"].nc.jetstream())
    await LogStore(conns["pps"].nc.jetstream()).ensure()
    yield conns
    for c in conns.values():
        await c.nc.close()


async def test_connecting_without_credentials_is_refused(server: NatsServer) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url)


async def test_a_wrong_password_is_refused(
    server: NatsServer, creds: dict[str, Credential]
) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, "pfs", "not-the-password")
    # another user's password is just as wrong
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, "admin", creds["gateway"].password)


async def test_only_the_admin_path_deletes_the_event_log_and_nobody_purges(
    login: dict[str, As],
) -> None:
    for role in credentials.ROLES:
        me = login[role]
        if role != "admin":  # a restore replaces an empty foreign event stream
            for subject in ("$JS.API.STREAM.DELETE.EVENTS", "$JS.API.STREAM.UPDATE.EVENTS"):
                assert await me.publish_refused(subject), (role, subject)
        for subject in (
            "$JS.API.STREAM.PURGE.EVENTS",
            "$JS.API.STREAM.MSG.DELETE.EVENTS",
            "$JS.API.STREAM.DELETE.PPS_WORK",
            "$JS.API.STREAM.DELETE.PPS_LOGS",
            "$JS.API.STREAM.PURGE.PPS_LOGS",
        ):
            assert await me.publish_refused(subject), (role, subject)
        if role != "pps":  # only pps drops a pipeline's queued chunks
            assert await me.publish_refused("$JS.API.STREAM.PURGE.PPS_WORK"), role
        if role != "admin":
            js = me.nc.jetstream(timeout=0.3)
            with pytest.raises(nats.errors.TimeoutError):
                await js.delete_stream("EVENTS")
    info = await login["pfs"].nc.jetstream().stream_info("EVENTS")
    assert info.config.name == "EVENTS"


async def test_pps_purges_one_pipelines_queued_chunks(login: dict[str, As]) -> None:
    js = login["pps"].nc.jetstream()
    chunk = work.WorkChunk(pipeline="purged", job_id="j1", chunk=0)
    await work_queue.publish_chunk(js, chunk)
    await work_queue.purge(js, "purged")
    assert not login["pps"].errors


async def test_each_service_appends_only_its_own_events(login: dict[str, As]) -> None:
    for role in credentials.BACKENDS:
        js = login[role].nc.jetstream()
        ack = await js.publish(f"ev.{role}.probe.a", b"{}")
        assert ack.stream == "EVENTS"
        others = [s for s in credentials.BACKENDS if s not in (role, "admin")]
        if role != "admin":
            assert await login[role].publish_refused(f"ev.{others[0]}.probe.a"), role
    # restore appends every service's events: the admin service may
    for other in ("pfs", "pps", "auth"):
        await login["admin"].nc.jetstream().publish(f"ev.{other}.probe.b", b"{}")


async def test_the_gateway_calls_services_and_nothing_else(login: dict[str, As]) -> None:
    gw = login["gateway"]
    for subject in ("cmd.pfs.CreateRepo", "qry.pps.ListPipeline"):
        assert not await gw.publish_refused(subject)
    for subject in (
        "ev.pfs.repo.images",
        "pps.work.edges",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.INFO.EVENTS",
        "$JS.API.DIRECT.GET.EVENTS",
        "$JS.API.CONSUMER.CREATE.EVENTS",
    ):
        assert await gw.publish_refused(subject), subject
    # It cannot answer in pfs's place, read the log or others' replies.
    for subject in ("cmd.pfs.>", "qry.pfs.InspectRepo", "ev.>", "_INBOX.>", "_INBOX.pfs.>"):
        assert await gw.subscribe_refused(subject), subject


async def test_replies_reach_only_the_asker(login: dict[str, As]) -> None:
    pfs_conn, gw = login["pfs"], login["gateway"]

    async def answer(msg: Msg) -> None:
        await msg.respond(b"pong")

    sub = await pfs_conn.nc.subscribe("qry.pfs.Probe", cb=answer)
    await pfs_conn.nc.flush()
    reply = None
    for _ in range(50):  # interest can take a moment to show on a busy server
        try:
            reply = await gw.nc.request("qry.pfs.Probe", b"ping", timeout=5)
            break
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.1)
    assert reply is not None
    assert reply.data == b"pong" and reply.subject.startswith("_INBOX.gateway.")
    await sub.unsubscribe()
    # pfs answers a request; it may not listen to the gateway's inbox
    assert await pfs_conn.subscribe_refused("_INBOX.gateway.>")
    assert not pfs_conn.errors[:-1]


async def test_a_worker_takes_work_and_reports_and_nothing_more(login: dict[str, As]) -> None:
    worker = login[credentials.WORKER]
    pps_js = login["pps"].nc.jetstream()
    await work_queue.publish_chunk(pps_js, work.WorkChunk(pipeline="edges", job_id="j", chunk=1))
    # what a worker does: its pipeline's chunks, acked; its log lines; its spec and report
    got = work_queue.chunks(worker.nc.jetstream(), "edges", ack_wait=5)
    received = await asyncio.wait_for(anext(got), 10)
    assert received.chunk.job_id == "j"
    await received.in_progress()
    await received.ack()
    await got.aclose()
    await worker.nc.jetstream().publish("pps.logs.edges.j", b"line")
    for subject in ("qry.pps.GetPipelineSpec", "cmd.pps.ChunkDone"):
        assert not await worker.publish_refused(subject), subject
    assert not worker.errors
    # never the event log, the stream list, other services, or new work
    for subject in (
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.LIST",
        "$JS.API.STREAM.INFO.EVENTS",
        "$JS.API.STREAM.MSG.GET.EVENTS",
        "$JS.API.DIRECT.GET.EVENTS",
        "$JS.API.CONSUMER.CREATE.EVENTS",
        "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.spy",
        "$JS.API.STREAM.PURGE.PPS_WORK",
        "ev.pps.job.j",
        "pps.work.edges",
        "cmd.pfs.DeleteRepo",
        "cmd.pps.DeleteAll",
        "qry.pfs.InspectRepo",
    ):
        assert await worker.publish_refused(subject), subject
    for subject in ("ev.>", "_INBOX.>", "_INBOX.pps.>", "pps.work.>", "cmd.pps.>"):
        assert await worker.subscribe_refused(subject), subject
    js = worker.nc.jetstream(timeout=0.5)
    with pytest.raises(nats.errors.TimeoutError):
        await js.add_consumer("EVENTS", api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL))


def test_credentials_file_is_private_and_stable(tmp_path: Path) -> None:
    made = credentials.load_or_create(tmp_path)
    path = tmp_path / credentials.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.load_or_create(tmp_path) == made  # kept across restarts
    assert all(c.password not in repr(c) for c in made.values())
    block = credentials.authorization_block(made)
    assert "no_auth_user" not in block
    assert all(c.password not in block for c in made.values())  # hashes only


def test_a_worker_gets_the_worker_credential_never_its_starters() -> None:
    pps_env = {
        "PACH_NATS_USER": "pps",
        "PACH_NATS_PASSWORD": "pps-secret",
        "PACH_NATS_WORKER_USER": "pps-worker",
        "PACH_NATS_WORKER_PASSWORD": "worker-secret",
        "PATH": "/bin",
    }
    env = worker_env(pps_env)
    assert env == {
        "PACH_NATS_USER": "pps-worker",
        "PACH_NATS_PASSWORD": "worker-secret",
        "PATH": "/bin",
    }
    # without a worker credential the worker gets none (not pps's)
    assert worker_env({"PACH_NATS_USER": "pps", "PACH_NATS_PASSWORD": "x"}) == {}


# --- a whole cluster with credentials ---------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(tmp_path_factory.mktemp("nats-perms-cluster") / "data")


def test_a_cluster_with_credentials_runs_a_pipeline(cluster: Cluster) -> None:
    passwords = json.loads((cluster.data_dir / credentials.FILE_NAME).read_text())["passwords"]
    assert set(passwords) == set(credentials.ROLES)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(connect(cluster.nats_address()))

    creds_file = cluster.data_dir / credentials.FILE_NAME
    script = [
        "cp /pfs/images/* /pfs/out/",
        f"env > /pfs/out/env.txt; cat {creds_file} > /pfs/out/creds.txt 2>/dev/null || true",
    ]
    with grpc.insecure_channel(f"127.0.0.1:{cluster.grpc_port}") as channel:
        files = pfs_pb2_grpc.APIStub(channel)
        pipelines = pps_pb2_grpc.APIStub(channel)
        files.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="images")), timeout=30)
        pipelines.CreatePipeline(
            pps.CreatePipelineRequest(
                pipeline=pps.Pipeline(name="copy"),
                transform=pps.Transform(cmd=["sh"], stdin=script),
                input=pps.Input(atom=pps.AtomInput(repo="images", glob="/")),
            ),
            timeout=60,
        )
        head = pfs.Commit(repo=pfs.Repo(name="images"))
        commit = files.StartCommit(pfs.StartCommitRequest(parent=head, branch="master"))
        put = pfs.PutFileRequest(file=pfs.File(commit=commit, path="/a"), value=b"alpha\n")
        files.PutFile(iter([put]), timeout=30)
        files.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
        [job] = list(pipelines.FlushJob(pps.FlushJobRequest(commits=[commit]), timeout=180))
        assert job.state == pps.JOB_SUCCESS, job.reason

        def read(path: str) -> bytes:
            req = pfs.GetFileRequest(file=pfs.File(commit=job.output_commit, path=path))
            return b"".join(m.value for m in files.GetFile(req, timeout=30))

        assert read("/a") == b"alpha\n"
        seen = read("/env.txt").decode() + read("/creds.txt").decode()
    # user code sees no NATS password, its worker's included, nor the file
    assert "PACH_NATS_PASSWORD" not in seen and "PACH_NATS_WORKER" not in seen
    assert not any(p in seen for p in passwords.values())


def test_workers_run_as_pps_worker(cluster: Cluster) -> None:
    """The worker process of the pipeline above: its own user, and the
    password gone from its environment once read."""
    pps_pid = cluster.state()["processes"]["pps-0"]["pid"]
    workers = [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and _ppid(int(p)) == pps_pid and b"services.pps.worker" in _cmdline(p)
    ]
    assert workers, "no worker process found"
    env = dict(
        kv.split(b"=", 1)
        for kv in Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        if b"=" in kv
    )
    passwords = json.loads((cluster.data_dir / credentials.FILE_NAME).read_text())["passwords"]
    assert env[b"PACH_NATS_USER"] == b"pps-worker"
    assert env[b"PACH_NATS_PASSWORD"].decode() == passwords["pps-worker"]
    assert b"PACH_NATS_WORKER_PASSWORD" not in env
    assert passwords["pps"].encode() not in b"".join(env.values())


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
