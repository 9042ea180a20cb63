"""put-file ingest through the real cluster over gRPC: URLs (an aiohttp
server in the test, and S3 on radosgw), --split line/json/sql, headers and
footers, and what a failed stream leaves behind."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import grpc
import grpc.aio
import pytest
from aiohttp import web
from botocore.config import Config as BotoConfig

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.servers.fixtures import s3_server  # noqa: F401
from tests.servers.s3server import S3Server
from tests.support.cluster import Cluster, running

REPO = "data"
BLOCK = 512 * 1024
SKIP_S3 = os.environ.get("PACH_SKIP_S3") == "1"


@pytest.fixture(scope="module")
def s3(request: pytest.FixtureRequest) -> S3Server | None:
    if SKIP_S3:
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    return server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3: S3Server | None) -> Iterator[Cluster]:
    # The test's HTTP server is on loopback, which put-file refuses unless allowed.
    env: dict[str, str] = {"PACH_URL_ALLOW": "127.0.0.1"}
    if s3 is not None:  # what put-file from s3:// reads (the object store stays local)
        env |= {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_ENDPOINT_URL": s3.endpoint,
            "AWS_DEFAULT_REGION": s3.region,
        }
    yield from running(tmp_path_factory.mktemp("put-ingest") / "data", **env)


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[pfs_pb2_grpc.APIAsyncStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{cluster.grpc_port}")
    stub = pfs_pb2_grpc.APIStub(channel)
    await stub.DeleteRepo(pfs.DeleteRepoRequest(all=True, force=True), timeout=10)
    await stub.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=REPO)), timeout=10)
    try:
        yield stub
    finally:
        await channel.close()


@pytest.fixture
async def bucket(s3: S3Server | None) -> AsyncIterator[tuple[Any, str]]:
    """A fresh bucket on radosgw: (aioboto3 client, bucket name)."""
    if s3 is None:
        pytest.skip("PACH_SKIP_S3=1: S3 tests skipped")
    session = aioboto3.Session(
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
    )
    config = BotoConfig(s3={"addressing_style": "path"})
    async with session.client("s3", endpoint_url=s3.endpoint, config=config) as client:
        name = f"ingest-{secrets.token_hex(4)}"
        await client.create_bucket(Bucket=name)
        yield client, name


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[str, dict[str, bytes]]]:
    """An aiohttp server in the test's loop serving ``files`` (path -> bytes)
    in 64 KiB pieces; any other path is 404."""
    files: dict[str, bytes] = {}

    async def serve(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/lines-mib/"):  # generated: N MiB of 1 KiB lines
            return await generated(request, int(request.path.rsplit("/", 1)[1]))
        data = files.get(request.path)
        if data is None:
            raise web.HTTPNotFound()
        resp = web.StreamResponse()
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), 65536):
            await resp.write(data[i : i + 65536])
        return resp

    async def generated(request: web.Request, mib: int) -> web.StreamResponse:
        block = (b"l" * 1023 + b"\n") * 1024
        resp = web.StreamResponse()
        resp.content_length = mib * len(block)
        await resp.prepare(request)
        for _ in range(mib):
            await resp.write(block)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", files
    finally:
        await runner.cleanup()


# --- helpers ---------------------------------------------------------------------


def commit(ref: str) -> pfs.Commit:
    return pfs.Commit(repo=pfs.Repo(name=REPO), id=ref)


def file_msg(ref: str, path: str, **fields: Any) -> pfs.PutFileRequest:
    return pfs.PutFileRequest(file=pfs.File(commit=commit(ref), path=path), **fields)


def with_bytes(first: pfs.PutFileRequest, data: bytes) -> list[pfs.PutFileRequest]:
    msgs = [first]
    for i in range(0, len(data), BLOCK):
        msgs.append(pfs.PutFileRequest(value=data[i : i + BLOCK]))
    return msgs


async def put(api: pfs_pb2_grpc.APIAsyncStub, msgs: Iterable[pfs.PutFileRequest]) -> None:
    await api.PutFile(iter(list(msgs)), timeout=60)


async def put_fails(
    api: pfs_pb2_grpc.APIAsyncStub, msgs: Iterable[pfs.PutFileRequest], code: grpc.StatusCode
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await put(api, msgs)
    assert err.value.code() == code, err.value.details()
    return str(err.value.details())


async def get(api: pfs_pb2_grpc.APIAsyncStub, ref: str, path: str) -> bytes:
    req = pfs.GetFileRequest(file=pfs.File(commit=commit(ref), path=path))
    return b"".join([r.value async for r in api.GetFile(req, timeout=60)])


async def listing(api: pfs_pb2_grpc.APIAsyncStub, ref: str, path: str = "/") -> list[str]:
    req = pfs.ListFileRequest(file=pfs.File(commit=commit(ref), path=path))
    return [i.file.path for i in (await api.ListFile(req, timeout=30)).file_info]


async def commits(api: pfs_pb2_grpc.APIAsyncStub) -> list[str]:
    infos = await api.ListCommit(pfs.ListCommitRequest(repo=pfs.Repo(name=REPO)), timeout=30)
    return [i.commit.id for i in infos.commit_info]


async def start(api: pfs_pb2_grpc.APIAsyncStub) -> str:
    req = pfs.StartCommitRequest(parent=commit(""), branch="master")
    return str((await api.StartCommit(req, timeout=30)).id)


async def finish(api: pfs_pb2_grpc.APIAsyncStub, ref: str) -> None:
    await api.FinishCommit(pfs.FinishCommitRequest(commit=commit(ref)), timeout=30)


async def eventually(read: Callable[[], Awaitable[Any]], want: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while (got := await read()) != want:
        assert time.monotonic() < deadline, f"still {got!r}, want {want!r}"
        await asyncio.sleep(0.1)


def piece(i: int) -> str:
    return f"{i:016x}"


async def pieces(api: pfs_pb2_grpc.APIAsyncStub, ref: str, directory: str) -> list[bytes]:
    return [await get(api, ref, p) for p in await listing(api, ref, directory)]


# --- URLs --------------------------------------------------------------------------


async def test_put_from_http_url_streams_the_body(
    api: pfs_pb2_grpc.APIAsyncStub, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, files = http_server
    files["/big.bin"] = big = os.urandom(9 * 1024 * 1024 + 17)
    files["/small.txt"] = b"hello\n"
    await put(
        api,
        [
            file_msg("master", "/big", url=f"{base}/big.bin"),
            file_msg("master", "/dir/small", url=f"{base}/small.txt"),
            *with_bytes(file_msg("master", "/inline"), b"bytes too\n"),
        ],
    )
    assert await get(api, "master", "/big") == big
    assert await get(api, "master", "/dir/small") == b"hello\n"
    assert await get(api, "master", "/inline") == b"bytes too\n"
    # overwrite from a URL replaces, without overwrite it appends
    await put(api, [file_msg("master", "/dir/small", url=f"{base}/small.txt")])
    assert await get(api, "master", "/dir/small") == b"hello\nhello\n"
    over = file_msg("master", "/dir/small", url=f"{base}/small.txt")
    over.overwrite_index.CopyFrom(pfs.OverwriteIndex(index=0))
    await put(api, [over])
    assert await get(api, "master", "/dir/small") == b"hello\n"


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


async def test_big_url_put_and_split_stream_through_the_gateway(
    api: pfs_pb2_grpc.APIAsyncStub, cluster: Cluster, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, _ = http_server
    gateway = next(p["pid"] for n, p in cluster.state()["processes"].items() if "gateway" in n)
    before = memory_kib(gateway, "VmRSS")
    mib = 384
    await put(
        api,
        [
            file_msg("master", "/whole", url=f"{base}/lines-mib/{mib}"),
            file_msg(
                "master",
                "/split",
                url=f"{base}/lines-mib/{mib}",
                delimiter=pfs.LINE,
                target_file_bytes=100 << 20,
            ),
        ],
    )
    grew = memory_kib(gateway, "VmHWM") - before
    assert grew < 128 * 1024, f"the gateway grew by {grew // 1024} MiB for 2 x {mib} MiB"
    infos = await api.ListFile(
        pfs.ListFileRequest(file=pfs.File(commit=commit("master"), path="/split")), timeout=30
    )
    sizes = [i.size_bytes for i in infos.file_info]
    assert sizes == [100 << 20] * 3 + [(mib - 300) << 20]  # 100 MiB is a whole number of lines
    whole = await api.InspectFile(
        pfs.InspectFileRequest(file=pfs.File(commit=commit("master"), path="/whole"))
    )
    assert whole.size_bytes == mib << 20


async def test_http_404_is_not_found_and_writes_nothing(
    api: pfs_pb2_grpc.APIAsyncStub, http_server: tuple[str, dict[str, bytes]]
) -> None:
    base, files = http_server
    files["/ok"] = b"ok"
    before = await commits(api)
    url = f"{base}/missing.csv"
    details = await put_fails(
        api,
        [file_msg("master", "/ok", url=f"{base}/ok"), file_msg("master", "/m", url=url)],
        grpc.StatusCode.NOT_FOUND,
    )
    assert url in details and "404" in details
    assert await commits(api) == before


async def test_unreachable_http_server_is_unavailable(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    from programs.cluster.natsserver import free_port

    url = f"http://127.0.0.1:{free_port()}/x"
    details = await put_fails(api, [file_msg("master", "/x", url=url)], grpc.StatusCode.UNAVAILABLE)
    assert url in details
    assert await commits(api) == []


@pytest.mark.parametrize(
    "url", ["ftp://example.com/f", "gs://bucket/key", "file:///etc/passwd", "no-scheme"]
)
async def test_unknown_url_scheme_is_invalid(api: pfs_pb2_grpc.APIAsyncStub, url: str) -> None:
    details = await put_fails(
        api, [file_msg("master", "/f", url=url)], grpc.StatusCode.INVALID_ARGUMENT
    )
    assert url in details
    assert await commits(api) == []


async def test_s3_object_and_recursive_prefix(
    api: pfs_pb2_grpc.APIAsyncStub, bucket: tuple[Any, str]
) -> None:
    client, name = bucket
    big = os.urandom(3 * 1024 * 1024 + 5)
    await client.put_object(Bucket=name, Key="one.bin", Body=big)
    await client.put_object(Bucket=name, Key="logs/a.txt", Body=b"a\n")
    await client.put_object(Bucket=name, Key="logs/sub/b.txt", Body=b"b\n")
    await client.put_object(Bucket=name, Key="logs/", Body=b"")  # a directory marker
    await client.put_object(Bucket=name, Key="logsX/not-under.txt", Body=b"no\n")
    await put(
        api,
        [
            file_msg("master", "/one", url=f"s3://{name}/one.bin"),
            file_msg("master", "/in", url=f"s3://{name}/logs", recursive=True),
        ],
    )
    assert await get(api, "master", "/one") == big
    assert await listing(api, "master", "/in") == ["/in/a.txt", "/in/sub"]
    assert await get(api, "master", "/in/a.txt") == b"a\n"
    assert await get(api, "master", "/in/sub/b.txt") == b"b\n"


async def test_s3_missing_bucket_or_key_is_not_found(
    api: pfs_pb2_grpc.APIAsyncStub, bucket: tuple[Any, str]
) -> None:
    client, name = bucket
    await client.put_object(Bucket=name, Key="there", Body=b"x")
    for url, recursive, says in [
        (f"s3://{name}-nope/key", False, "does not exist"),
        (f"s3://{name}/absent", False, "no such object"),
        (f"s3://{name}/empty-prefix", True, "no objects"),
    ]:
        details = await put_fails(
            api,
            [
                file_msg("master", "/there", url=f"s3://{name}/there"),
                file_msg("master", "/f", url=url, recursive=recursive),
            ],
            grpc.StatusCode.NOT_FOUND,
        )
        assert url in details and says in details
    assert await commits(api) == []


async def test_url_message_rules(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    cases = [
        [file_msg("master", "/f", url="s3://b/k", value=b"x")],  # url and bytes
        [file_msg("master", "/f", url="s3://b/k"), pfs.PutFileRequest(value=b"x")],
        [file_msg("master", "/f", recursive=True, value=b"x")],  # recursive without url
        [file_msg("master", "/f", url="s3://b/")],  # a prefix without recursive
        [file_msg("master", "/f", url="s3:///k")],  # no bucket
    ]
    for msgs in cases:
        await put_fails(api, msgs, grpc.StatusCode.INVALID_ARGUMENT)
    assert await commits(api) == []


# --- split -------------------------------------------------------------------------


def split_msg(ref: str, path: str, delimiter: int, **fields: Any) -> pfs.PutFileRequest:
    return file_msg(ref, path, delimiter=delimiter, **fields)


async def test_split_lines_by_datums_and_by_bytes(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    data = b"".join(b"line %d\n" % i for i in range(7))  # 7 datums of 7 bytes
    await put(
        api,
        [
            *with_bytes(split_msg("master", "/by-datums", pfs.LINE, target_file_datums=3), data),
            *with_bytes(split_msg("master", "/by-bytes", pfs.LINE, target_file_bytes=15), data),
            *with_bytes(split_msg("master", "/one-each", pfs.LINE), b"a\nb\nc"),
        ],
    )
    assert await listing(api, "master", "/by-datums") == [
        f"/by-datums/{piece(i)}" for i in range(3)
    ]
    assert await pieces(api, "master", "/by-datums") == [
        b"line 0\nline 1\nline 2\n",
        b"line 3\nline 4\nline 5\n",
        b"line 6\n",
    ]
    # a piece closes at the datum that reaches 15 bytes: 3 lines (21 bytes)
    assert await pieces(api, "master", "/by-bytes") == [
        b"line 0\nline 1\nline 2\n",
        b"line 3\nline 4\nline 5\n",
        b"line 6\n",
    ]
    assert await pieces(api, "master", "/one-each") == [b"a\n", b"b\n", b"c"]


async def test_split_again_continues_numbering_and_overwrite_restarts(
    api: pfs_pb2_grpc.APIAsyncStub,
) -> None:
    await put(api, with_bytes(split_msg("master", "/d", pfs.LINE), b"1\n2\n"))
    await put(api, with_bytes(split_msg("master", "/d", pfs.LINE), b"3\n"))
    assert await listing(api, "master", "/d") == [f"/d/{piece(i)}" for i in range(3)]
    assert await pieces(api, "master", "/d") == [b"1\n", b"2\n", b"3\n"]
    over = split_msg("master", "/d", pfs.LINE)
    over.overwrite_index.CopyFrom(pfs.OverwriteIndex(index=0))
    await put(api, with_bytes(over, b"x\ny\n"))
    assert await listing(api, "master", "/d") == [f"/d/{piece(i)}" for i in range(2)]
    assert await pieces(api, "master", "/d") == [b"x\n", b"y\n"]


async def test_json_split_keeps_whole_values(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    values = [{"a": 1, "s": "x\n}{"}, [1, 2, {"b": None}], "str", 42, {"nested": {"k": [1]}}]
    data = b" \n".join(json.dumps(v, indent=1).encode() for v in values)
    # sent in 5-byte messages: values cross message boundaries
    msgs = [split_msg("master", "/j", pfs.JSON, target_file_datums=2)]
    msgs += [pfs.PutFileRequest(value=data[i : i + 5]) for i in range(0, len(data), 5)]
    await put(api, msgs)
    got = await pieces(api, "master", "/j")
    assert len(got) == 3
    decoder = json.JSONDecoder()
    parsed = []
    for p in got:
        text, pos = p.decode(), 0
        while pos < len(text):
            value, pos = decoder.raw_decode(text, pos)
            parsed.append(value)
    assert parsed == values


async def test_bad_json_is_invalid_and_writes_nothing(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    msgs = with_bytes(split_msg("master", "/j", pfs.JSON), b'{"a": 1} {"b": ')
    details = await put_fails(api, msgs, grpc.StatusCode.INVALID_ARGUMENT)
    assert "json" in details
    assert await commits(api) == []


PG_DUMP = b"""--
-- PostgreSQL database dump
--
SET statement_timeout = 0;
CREATE TABLE public.t (id integer, name text);
COPY public.t (id, name) FROM stdin;
1\tone
2\ttwo
3\tthree
\\.
--
-- PostgreSQL database dump complete
--
"""


async def test_sql_split_with_header_and_footer(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    await put(api, with_bytes(split_msg("master", "/sql", pfs.SQL, target_file_datums=2), PG_DUMP))
    header, rest = PG_DUMP.split(b"1\tone\n")
    footer = b"\\.\n" + rest.split(b"\\.\n")[1]
    assert await listing(api, "master", "/sql") == [f"/sql/{piece(i)}" for i in range(2)]
    assert await get(api, "master", f"/sql/{piece(0)}") == header + b"1\tone\n2\ttwo\n" + footer
    assert await get(api, "master", f"/sql/{piece(1)}") == header + b"3\tthree\n" + footer


async def test_sql_without_pg_dump_structure_is_invalid(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    for data in [b"1\tone\n2\ttwo\n", b"COPY t FROM stdin;\n1\tone\n"]:
        msgs = with_bytes(split_msg("master", "/sql", pfs.SQL), data)
        details = await put_fails(api, msgs, grpc.StatusCode.INVALID_ARGUMENT)
        assert "pg_dump" in details
    assert await commits(api) == []


async def test_split_rules(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    cases = [
        file_msg("master", "/f", target_file_datums=2, value=b"x"),  # targets need --split
        split_msg("master", "/f", pfs.LINE, target_file_datums=-1),
        split_msg("master", "/f", 9),  # no such delimiter
    ]
    for msg in cases:
        await put_fails(api, [msg], grpc.StatusCode.INVALID_ARGUMENT)
    assert await commits(api) == []


# --- headers and footers -----------------------------------------------------------


async def test_put_header_and_footer_then_get_a_child(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    await put(
        api,
        [
            *with_bytes(file_msg("master", "/csv/a"), b"1,2\n"),
            *with_bytes(file_msg("master", "/csv/b"), b"3,4\n"),
            # what pachctl put-header / put-footer send: the directory, no bytes
            file_msg("master", "/csv", delimiter=pfs.LINE, header=pfs.Metadata(value=b"x,y\n")),
            file_msg("master", "/csv", delimiter=pfs.LINE, footer=pfs.Metadata(value=b"-- end\n")),
        ],
    )
    assert await get(api, "master", "/csv/a") == b"x,y\n1,2\n-- end\n"
    assert await get(api, "master", "/csv/b") == b"x,y\n3,4\n-- end\n"
    await put(api, [file_msg("master", "/csv", header=pfs.Metadata(value=b""))])  # clears
    assert await get(api, "master", "/csv/a") == b"1,2\n-- end\n"


async def test_header_message_with_bytes_is_invalid(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    msg = file_msg("master", "/csv", header=pfs.Metadata(value=b"h"), value=b"file bytes")
    await put_fails(api, [msg], grpc.StatusCode.INVALID_ARGUMENT)
    assert await commits(api) == []


# --- failed streams ------------------------------------------------------------------


class ClientGaveUp(Exception):
    pass


async def failing(msgs: list[pfs.PutFileRequest]) -> AsyncIterator[pfs.PutFileRequest]:
    for m in msgs:
        yield m
    raise ClientGaveUp


async def test_failed_stream_deletes_the_commit_it_started(api: pfs_pb2_grpc.APIAsyncStub) -> None:
    await put(api, with_bytes(file_msg("master", "/kept"), b"first commit\n"))
    before = await commits(api)
    # a bad message after whole files
    bad = [
        *with_bytes(file_msg("master", "/a"), b"a" * 100),
        *with_bytes(file_msg("master", "/b"), os.urandom(2 * 1024 * 1024)),
        pfs.PutFileRequest(file=pfs.File(commit=commit("master"), path="/bad\x01name")),
    ]
    await put_fails(api, bad, grpc.StatusCode.INVALID_ARGUMENT)
    assert await commits(api) == before
    head = await api.InspectCommit(pfs.InspectCommitRequest(commit=commit("master")))
    assert head.HasField("finished")
    assert await listing(api, "master") == ["/kept"]
    await put(api, with_bytes(file_msg("master", "/after"), b"fine\n"))  # the branch still works
    assert await listing(api, "master") == ["/after", "/kept"]


async def test_failed_stream_leaves_a_user_commit_open_with_whole_files(
    api: pfs_pb2_grpc.APIAsyncStub,
) -> None:
    c = await start(api)
    # 1000 files fill one batch, which is sent; the failure comes after
    msgs = [file_msg(c, f"/f/{i:04d}", value=b"%d\n" % i) for i in range(1000)]
    msgs += with_bytes(file_msg(c, "/unsent"), b"p" * 1000)
    msgs += [pfs.PutFileRequest(file=pfs.File(commit=commit(c), path="/bad\x01name"))]
    await put_fails(api, msgs, grpc.StatusCode.INVALID_ARGUMENT)
    # the client gives up in the middle of a file
    gave_up = [file_msg(c, "/torn", value=b"half of it")]
    with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
        await api.PutFile(failing(gave_up), timeout=60)
    await asyncio.sleep(0.5)
    info = await api.InspectCommit(pfs.InspectCommitRequest(commit=commit(c)))
    assert not info.HasField("finished")
    await finish(api, c)
    assert await listing(api, c) == ["/f"]
    assert await listing(api, c, "/f") == [f"/f/{i:04d}" for i in range(1000)]
    assert await get(api, c, "/f/0999") == b"999\n"


async def test_cancelled_streams_never_record_the_file_they_gave_up_on(
    api: pfs_pb2_grpc.APIAsyncStub,
) -> None:
    # grpc.aio sometimes ends a cancelled request stream as if the client had
    # closed it, and only then cancels the handler; each try here gives that
    # race a chance to record the half-sent file.
    c = await start(api)
    for i in range(40):
        gave_up = [file_msg(c, f"/torn-{i:02d}", value=b"half of it")]
        with pytest.raises((grpc.aio.AioRpcError, asyncio.CancelledError)):
            await api.PutFile(failing(gave_up), timeout=60)
    await asyncio.sleep(0.5)
    await finish(api, c)
    assert await listing(api, c) == []
