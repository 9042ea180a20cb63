"""``services.gateway.app.sources``: URL files over a real aiohttp server in the
test's loop (S3 is covered against radosgw in
tests/integration/test_put_file_ingest.py)."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import tracemalloc
from collections.abc import AsyncIterator
from ipaddress import ip_address

import pytest
from aiohttp import web

from libs.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from programs.cluster.natsserver import free_port
from services.gateway.app.sources import shown, url_files
from services.gateway.app.url_policy import UrlPolicy, parse_allow

# The test's server is on loopback, which a fetch refuses unless allowed.
LOOPBACK = parse_allow("127.0.0.1")

MiB = 1 << 20
BIG_BLOCKS = 128  # MiB served by /big


@pytest.fixture
async def server() -> AsyncIterator[str]:
    block = bytes(range(256)) * 4096  # 1 MiB

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = BIG_BLOCKS * MiB
        await resp.prepare(request)
        for _ in range(BIG_BLOCKS):
            await resp.write(block)
        return resp

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"hello\n")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/small", small)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def read_all(
    url: str, recursive: bool = False, policy: UrlPolicy = LOOPBACK
) -> list[tuple[str, bytes]]:
    out = []
    async for name, blocks in url_files(url, recursive, policy):
        out.append((name, b"".join([b async for b in blocks])))
    return out


async def test_http_body_is_one_file(server: str) -> None:
    assert await read_all(f"{server}/small") == [("", b"hello\n")]
    assert await read_all(f"{server}/small", recursive=True) == [("", b"hello\n")]


@pytest.mark.parametrize(
    ("code", "error"),
    [(404, NotFound), (410, NotFound), (403, PermissionDenied), (400, InvalidArgument),
     (503, Unavailable)],
)  # fmt: skip
async def test_http_status_errors_name_url_and_status(
    server: str, code: int, error: type[Exception]
) -> None:
    url = f"{server}/status/{code}"
    with pytest.raises(error) as err:
        await read_all(url)
    assert url in str(err.value) and str(code) in str(err.value)


async def test_unreachable_server_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(Unavailable, match=url):
        await read_all(url)


@pytest.mark.parametrize(
    "url", ["ftp://h/f", "gcs://b/k", "file:///etc/hosts", "relative/path", "HTTPX://h"]
)
def test_unknown_schemes_are_invalid(url: str) -> None:
    with pytest.raises(InvalidArgument, match="unsupported URL scheme") as err:
        url_files(url, False, LOOPBACK)
    assert url in str(err.value)


@pytest.mark.parametrize(
    ("url", "recursive", "says"),
    [
        ("s3:///key", False, "no bucket"),
        ("s3://bucket", False, "names a prefix"),
        ("s3://bucket/dir/", False, "names a prefix"),
    ],
)
async def test_bad_s3_urls_are_invalid_before_any_request(
    url: str, recursive: bool, says: str
) -> None:
    with pytest.raises(InvalidArgument, match=says):
        await read_all(url, recursive)


def test_shown_hides_passwords() -> None:
    assert shown("https://u:secret@h:8080/p?q=1") == "https://u:***@h:8080/p?q=1"
    assert shown("http://h/p") == "http://h/p"


async def test_http_body_streams_with_bounded_memory(server: str) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        total = 0
        async for _, blocks in url_files(f"{server}/big", False, LOOPBACK):
            async for block in blocks:
                total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == BIG_BLOCKS * MiB
    assert peak < 24 * MiB, f"peak {peak / MiB:.1f} MiB for {BIG_BLOCKS} MiB"


# --- what a fetch may reach ----------------------------------------------------

NOTHING_ALLOWED = UrlPolicy()


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("169.254.169.254", "link-local"),
        ("[fe80::1]", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("[fd00::1]", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not a public address"),
    ],
)
async def test_internal_hosts_are_refused_before_any_connection(host: str, why: str) -> None:
    url = f"http://{host}:1/latest/meta-data"
    with pytest.raises(PermissionDenied) as err:
        await read_all(url, policy=NOTHING_ALLOWED)
    message = str(err.value)
    assert "\n" not in message and why in message and host.strip("[]") in message, message
    assert "PACH_URL_ALLOW" in message


async def test_refused_and_open_ports_look_the_same(server: str) -> None:
    open_port = server.rsplit(":", 1)[1]
    answers = []
    for port in (open_port, str(free_port())):
        with pytest.raises(PermissionDenied) as err:
            await read_all(f"http://127.0.0.1:{port}/small", policy=NOTHING_ALLOWED)
        answers.append(str(err.value).replace(port, "PORT"))
    assert answers[0] == answers[1]


async def test_a_name_resolving_to_loopback_is_refused(server: str) -> None:
    # Names are resolved and their addresses checked, not recognised by
    # spelling: this machine's own name (loopback in /etc/hosts here) too.
    port = server.rsplit(":", 1)[1]
    names = ["localhost"]
    own = socket.gethostname()
    if any(ip_address(str(i[4][0])).is_loopback for i in socket.getaddrinfo(own, None)):
        names.append(own)
    for name in names:
        with pytest.raises(PermissionDenied) as err:
            await read_all(f"http://{name}:{port}/small", policy=NOTHING_ALLOWED)
        assert re.search(rf"host {name} \((127\.0\.0\.1|::1)\) is a loopback", str(err.value))


async def test_a_redirect_to_loopback_is_refused(server: str) -> None:
    # The first hop is allowed (by port); where it redirects is not.
    port = int(server.rsplit(":", 1)[1])
    policy = parse_allow(f"127.0.0.1:{port}")
    other = free_port()
    with pytest.raises(PermissionDenied, match=r"host 127\.0\.0\.1 is a loopback") as err:
        await read_all(f"{server}/redirect?to=http://127.0.0.1:{other}/x", policy=policy)
    assert "\n" not in str(err.value)
    with pytest.raises(PermissionDenied, match="redirects to a file URL"):
        await read_all(f"{server}/redirect?to=file:///etc/passwd", policy=policy)
    # an allowed redirect is followed
    assert await read_all(f"{server}/redirect?to=/small", policy=policy) == [("", b"hello\n")]


async def test_the_allow_list_opens_exactly_what_it_names(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    for allow in ("127.0.0.1", f"127.0.0.1:{port}", "127.0.0.0/8", f"localhost:{port}"):
        url = f"{server}/small" if "localhost" not in allow else f"http://localhost:{port}/small"
        assert await read_all(url, policy=parse_allow(allow)) == [("", b"hello\n")], allow
    with pytest.raises(PermissionDenied):
        await read_all(f"{server}/small", policy=parse_allow(f"127.0.0.1:{port + 1},10.0.0.0/8"))


def test_the_allow_list_and_the_s3_endpoint_come_from_the_environment() -> None:
    policy = UrlPolicy.from_env(
        {
            "PACH_URL_ALLOW": "10.0.0.0/8, minio.internal:9000",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:7480",
            "PACH_BIND_ADDRESS": "8.8.4.4",
        }
    )
    assert policy.refusal(ip_address("10.9.8.7"), 80) is None
    assert policy.refusal(ip_address("127.0.0.1"), 7480) is None  # the S3 endpoint
    assert policy.refusal(ip_address("127.0.0.1"), 7481) == "a loopback address"
    assert policy.refusal(ip_address("8.8.8.8"), 80) is None
    assert policy.refusal(ip_address("8.8.4.4"), 80) == "one of the cluster's own addresses"
    policy.check_resolved("u", "minio.internal", 9000, ["192.168.0.5"])  # allowed by name
    with pytest.raises(PermissionDenied):
        policy.check_resolved("u", "minio.internal", 9001, ["192.168.0.5"])
    with pytest.raises(InvalidArgument, match="PACH_URL_ALLOW entry 'bad/ness'"):
        parse_allow("bad/ness")


def test_every_nats_node_is_one_of_the_clusters_own_addresses() -> None:
    """PACH_NATS_URL lists every node of a NATS cluster (PACH_NATS_NODES):
    none of them is a put-file source, not only the first."""
    policy = UrlPolicy.from_env(
        {"PACH_NATS_URL": "nats://8.8.4.4:4222, nats://8.8.8.8:4223,nats://9.9.9.9:4224"}
    )
    for ip in ("8.8.4.4", "8.8.8.8", "9.9.9.9"):
        assert policy.refusal(ip_address(ip), 443) == "one of the cluster's own addresses"


async def test_errors_never_carry_the_servers_bytes() -> None:
    """A server that answers something other than HTTP (say NATS's INFO
    banner) is Unavailable with our words only."""
    banner = b'INFO {"server_id":"SECRET-BANNER","version":"2.10"}\r\n'

    async def speak(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        await reader.read(100)
        writer.close()

    srv = await asyncio.start_server(speak, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises(Unavailable) as err:
            await read_all(f"http://127.0.0.1:{port}/", policy=LOOPBACK)
    finally:
        srv.close()
        await srv.wait_closed()
    message = str(err.value)
    assert "SECRET" not in message and "INFO" not in message and "\n" not in message, message


async def test_status_errors_do_not_quote_the_reason_phrase() -> None:
    async def odd(request: web.Request) -> web.Response:
        return web.Response(status=418, reason="SECRET-REASON")

    app = web.Application()
    app.router.add_get("/", odd)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
        with pytest.raises(InvalidArgument) as err:
            await read_all(url)
    finally:
        await runner.cleanup()
    assert "418" in str(err.value) and "SECRET" not in str(err.value)
