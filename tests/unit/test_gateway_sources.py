"""``services.gateway.app.sources``: URL files over a real aiohttp server in the
test's loop (S3 is covered against radosgw in
tests/integration/test_put_file_ingest.py)."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from libs.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from programs.cluster.natsserver import free_port
from services.gateway.app.sources import shown, url_files

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

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/small", small)
    app.router.add_get("/status/{code}", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def read_all(url: str, recursive: bool = False) -> list[tuple[str, bytes]]:
    out = []
    async for name, blocks in url_files(url, recursive):
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
        url_files(url, False)
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
        async for _, blocks in url_files(f"{server}/big", False):
            async for block in blocks:
                total += len(block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == BIG_BLOCKS * MiB
    assert peak < 24 * MiB, f"peak {peak / MiB:.1f} MiB for {BIG_BLOCKS} MiB"
