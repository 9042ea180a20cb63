"""``services.gateway.http.guard`` and the JSON API's GET rule over a real
aiohttp server and a fake bus: what a hostile web page can make a browser
send is refused before any handler runs, and every answer carries the
security headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from google.protobuf.message import Message

from libs.bus import Bus
from libs.config import Config
from services.gateway.errors import http_errors
from services.gateway.http import api
from services.gateway.http.guard import (
    SECURITY_HEADERS,
    GuardSettings,
    guard,
    host_allowed,
    same_origin,
    security_headers,
)

Client = TestClient[web.Request, web.Application]


class FakeBus:
    timeout = 10.0

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def request(
        self, service: str, name: str, request: Message, response_type: type[Message], **_: Any
    ) -> Message:
        self.asked.append(name)
        return response_type()


@pytest.fixture
async def bus() -> FakeBus:
    return FakeBus()


@pytest.fixture
async def client(bus: FakeBus) -> AsyncIterator[Client]:
    settings = GuardSettings.from_env(Config(), {"PACH_HTTP_ALLOWED_HOSTS": "pachd.example:80"})
    app = web.Application(middlewares=[http_errors, guard(settings)])
    app.on_response_prepare.append(security_headers)
    api.mount(app, cast(Bus, bus))

    async def upload(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())}, status=201)

    app.router.add_route("*", "/pfs/{tail:.*}", upload)
    app.router.add_post("/v1/handle/push", upload)
    async with TestClient(TestServer(app)) as c:
        yield c


def origin_of(client: Client) -> str:
    return f"http://127.0.0.1:{client.port}"


JSON = {"Content-Type": "application/json"}


async def test_get_never_changes_state(client: Client, bus: FakeBus) -> None:
    for method in ("GET", "HEAD"):
        resp = await client.request(method, "/api/pfs/DeleteAll")
        assert resp.status == 405 and resp.headers["Allow"] == "POST", method
    resp = await client.get("/api/pfs/DeleteRepo")
    assert resp.status == 405
    assert "changes state" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/pps/GarbageCollect")
    assert resp.status == 405
    assert bus.asked == []
    resp = await client.get("/api/pfs/ListRepo")  # reads still answer GET
    assert resp.status == 200 and bus.asked == ["ListRepo"]
    resp = await client.post("/api/pfs/DeleteAll", data=b"{}", headers=JSON)
    assert resp.status == 200 and bus.asked == ["ListRepo", "DeleteAll"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
    ],
)
async def test_api_posts_need_json(client: Client, bus: FakeBus, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    resp = await client.post("/api/pfs/DeleteAll", data=b"{}", headers=headers)
    assert resp.status == 403
    assert "application/json" in (await resp.json())["error"]["message"]
    assert bus.asked == []


async def test_uploads_by_post_need_a_type_no_form_can_send(client: Client) -> None:
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        resp = await client.post("/pfs/r/master/f", data=b"x", headers={"Content-Type": kind})
        assert resp.status == 403, kind
    resp = await client.post("/pfs/r/master/f", data=b"xy", headers={"Content-Type": ""})
    assert resp.status == 403
    binary = {"Content-Type": "application/octet-stream"}
    resp = await client.post("/pfs/r/master/f", data=b"xy", headers=binary)
    assert resp.status == 201
    # PUT always needs a CORS preflight, which is never granted: any type.
    resp = await client.put("/pfs/r/master/f", data=b"xyz", headers={"Content-Type": "text/plain"})
    assert resp.status == 201


async def test_foreign_origins_are_refused(client: Client, bus: FakeBus) -> None:
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{int(client.port or 0) + 1}"):
        headers = {**JSON, "Origin": origin}
        resp = await client.post("/api/pfs/DeleteAll", data=b"{}", headers=headers)
        assert resp.status == 403, origin
        assert "cross-origin" in (await resp.json())["error"]["message"]
        resp = await client.put("/pfs/r/master/f", data=b"x", headers={"Origin": origin})
        assert resp.status == 403, origin
    assert bus.asked == []
    same = {**JSON, "Origin": origin_of(client)}
    resp = await client.post("/api/pfs/DeleteAll", data=b"{}", headers=same)
    assert resp.status == 200 and bus.asked == ["DeleteAll"]


async def test_foreign_hosts_are_refused(client: Client, bus: FakeBus) -> None:
    for host in ("evil.example", f"evil.example:{client.port}", "127.0.0.1.evil.example"):
        resp = await client.get("/api/pfs/ListRepo", headers={"Host": host})
        assert resp.status == 403, host
        assert "DNS-rebinding" in (await resp.json())["error"]["message"]
    assert bus.asked == []
    for host in ("localhost", f"127.0.0.1:{client.port}", "[::1]:1", "pachd.example:8080"):
        resp = await client.get("/api/pfs/ListRepo", headers={"Host": host})
        assert resp.status == 200, host


async def test_every_answer_carries_the_security_headers(client: Client) -> None:
    answers = [
        await client.get("/api/pfs/ListRepo"),  # 200
        await client.get("/api/pfs/DeleteAll"),  # 405
        await client.get("/api/pfs/NoSuchMethod"),  # 404 (ours)
        await client.get("/nothing/here"),  # 404 (the router's)
        await client.get("/", headers={"Host": "evil.example"}),  # 403
    ]
    for resp in answers:
        for name, value in SECURITY_HEADERS.items():
            assert resp.headers.get(name) == value, (resp.status, name)
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_hosts_and_origins() -> None:
    settings = GuardSettings.from_env(
        Config(grpc_host="10.1.2.3"), {"PACH_HTTP_ALLOWED_HOSTS": " pachd , Data.Example "}
    )
    for ok in ("localhost:30080", "LOCALHOST", "pachd", "data.example:1", "10.1.2.3", "[::1]"):
        assert host_allowed(settings, ok), ok
    for bad in ("evil.example", "", "pachd.evil", "localhost.evil.example"):
        assert not host_allowed(settings, bad), bad
    assert same_origin("http://localhost:30080", "localhost:30080")
    assert same_origin("https://pachd", "pachd:443")
    assert same_origin("http://pachd", "pachd")
    assert not same_origin("http://localhost:30081", "localhost:30080")
    assert not same_origin("http://evil.example", "localhost:30080")
    assert not same_origin("null", "localhost:30080")


async def test_repo_files_are_sandboxed(client: Client) -> None:
    """A file from a repo (an .html a pipeline wrote) never runs script as
    the gateway's origin."""
    resp = await client.get("/pfs/r/master/page.html")
    csp = resp.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp and "script" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_signed_webhook_keeps_its_own_rules(client: Client) -> None:
    """The git push webhook proves each request by its HMAC signature (its
    handler's business): a git host's form-encoded post under its public
    name passes the guard; a browser's foreign Origin still does not."""
    form = {"Content-Type": "application/x-www-form-urlencoded", "Host": "pachd.public.example"}
    resp = await client.post("/v1/handle/push", data=b"payload=%7B%7D", headers=form)
    assert resp.status == 201
    resp = await client.post(
        "/v1/handle/push", data=b"{}", headers={**JSON, "Origin": "http://evil.example"}
    )
    assert resp.status == 403
