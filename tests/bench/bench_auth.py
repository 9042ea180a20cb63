"""What auth costs a caller, measured on two clusters side by side in one
run (one with enterprise and auth active, one without), their samples
interleaved so both see the same machine:

* the p50 of a small RPC (InspectRepo over gRPC) by a non-admin owner of the
  repo (its token checked, its ACL consulted) next to the same call with no
  auth; the row is the difference (target: at most 0.2 ms added);
* put-file of a 64 MiB file (one commit) with auth active, as a ratio of
  the throughput without (target: within 5%).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from libs.api.auth import auth_pb2 as auth
from libs.api.enterprise import enterprise_pb2 as ent
from libs.api.pfs import pfs_pb2 as pfs
from tests.bench import BenchContext, Result
from tests.integration.auth_support import Client, code, write_keys
from tests.support.cluster import Cluster

SAMPLES = 400
PUT_BYTES = 64 << 20
PUT_ROUNDS = 6
CHUNK = 2 << 20


def _activate(cluster: Cluster, private: Path) -> str:
    """Enterprise and auth on; robot:alice's token (she owns repo 'bench')."""
    anon = Client(cluster.grpc_port)
    anon.call(anon.enterprise.Activate, ent.ActivateRequest(activation_code=code(private)))
    admin_token = anon.call(
        anon.auth.Activate, auth.ActivateRequest(subject="robot:admin")
    ).pach_token
    admin = Client(cluster.grpc_port, admin_token)
    token: str = admin.call(
        admin.auth.GetAuthToken, auth.GetAuthTokenRequest(subject="robot:alice")
    ).token
    for c in (anon, admin):
        c.close()
    return token


def _inspect_ms(client: Client) -> float:
    req = pfs.InspectRepoRequest(repo=pfs.Repo(name="bench"))
    start = time.perf_counter()
    client.call(client.pfs.InspectRepo, req)
    return (time.perf_counter() - start) * 1000


def _put_mib_s(client: Client, n: int) -> float:
    def chunks() -> Iterator[pfs.PutFileRequest]:
        f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="bench"), id="master"), path=f"/big{n}")
        block = os.urandom(CHUNK)
        for offset in range(0, PUT_BYTES, CHUNK):
            yield pfs.PutFileRequest(file=f if offset == 0 else None, value=block)

    start = time.perf_counter()
    client.pfs.PutFile(chunks(), metadata=tuple(client.metadata()), timeout=600)
    return PUT_BYTES / (1 << 20) / (time.perf_counter() - start)


def _measure(plain: Client, authed: Client) -> list[Result]:
    for c in (plain, authed):  # warm both paths
        for _ in range(20):
            _inspect_ms(c)
    without, with_auth = [], []
    for _ in range(SAMPLES):
        without.append(_inspect_ms(plain))
        with_auth.append(_inspect_ms(authed))
    p50_plain, p50_auth = statistics.median(without), statistics.median(with_auth)
    put_plain: list[float] = []
    put_auth: list[float] = []
    for n in range(PUT_ROUNDS):  # each goes first half the time (the disk's flushes)
        pair = [(plain, put_plain), (authed, put_auth)]
        for client, out in pair if n % 2 == 0 else pair[::-1]:
            out.append(_put_mib_s(client, n))
    ratio = statistics.median(put_auth) / statistics.median(put_plain)
    return [
        Result(
            "auth: InspectRepo p50 added by auth (owner's token)",
            p50_auth - p50_plain,
            "ms",
            floor=0.2,
            higher_is_better=False,
            note=f"{p50_auth:.2f} ms with auth vs {p50_plain:.2f} ms without",
        ),
        Result(
            "auth: put-file 64 MiB throughput with auth / without",
            ratio,
            "x",
            floor=0.95,
            note=f"{statistics.median(put_auth):.0f} vs {statistics.median(put_plain):.0f} MiB/s",
        ),
    ]


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "auth"
    work.mkdir(parents=True, exist_ok=True)
    private, public = write_keys(work)
    plain = Cluster(work / "plain", PACH_LOG_LEVEL="warning")
    authed = Cluster(
        work / "authed", PACH_LOG_LEVEL="warning", PACH_ENTERPRISE_PUBLIC_KEY=str(public)
    )
    clients: list[Client] = []
    try:
        for c in (plain, authed):
            c.start()
        for c in (plain, authed):
            await asyncio.to_thread(c.wait_ready, 60)
        token = await asyncio.to_thread(_activate, authed, private)
        clients = [Client(plain.grpc_port), Client(authed.grpc_port, token)]
        for client in clients:
            client.call(client.pfs.CreateRepo, pfs.CreateRepoRequest(repo=pfs.Repo(name="bench")))
        return await asyncio.to_thread(_measure, clients[0], clients[1])
    except grpc.RpcError as err:
        raise RuntimeError(f"auth bench: {err}") from None
    finally:
        for client in clients:
            client.close()
        for c in (plain, authed):
            await asyncio.to_thread(c.kill)
