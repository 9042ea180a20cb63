"""Signing in to the dashboard through an OpenID Connect provider, in
Debian's chromium against a real provider process (``oidc-provider-mock``):
the login page offers the provider, the provider's page logs the user in,
and the browser comes back signed in as ``oidc:<email>`` on the page it
wanted. A sign-in finishes only in the browser that started it.

Screenshot: ``.artifacts/screenshots/login-oidc.png`` (git-ignored)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_dashboard import SHOTS, base, browser, watch_errors
from tests.integration.auth_support import write_keys
from tests.integration.test_auth_pachctl import ok, pc
from tests.servers.oidc_provider import OidcProvider, start_oidc_provider
from tests.support.cluster import Cluster, running

__all__ = ["browser"]  # (the fixture, shared with the other browser tests)

CLIENT_ID = "pachyderm-dashboard"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("oidc-dashboard"))


@pytest.fixture(scope="module")
def provider(home: Path) -> Iterator[OidcProvider]:
    p = start_oidc_provider(home)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def cluster(home: Path, provider: OidcProvider) -> Iterator[Cluster]:
    private, public = write_keys(home)
    env = {
        "PACH_ENTERPRISE_PUBLIC_KEY": str(public),
        "PACH_OIDC_ISSUER": provider.issuer,
        "PACH_OIDC_CLIENT_ID": CLIENT_ID,
        "PACH_OIDC_CLIENT_SECRET": "not-checked-by-the-mock",
    }
    for c in running(home / "data", **env):
        admin = home / "admin.json"
        code = ok(pc(c, admin, "enterprise", "mint-code", "--signing-key", str(private))).strip()
        ok(pc(c, admin, "enterprise", "activate", code))
        ok(pc(c, admin, "auth", "activate", "--initial-admin=robot:admin"))
        ok(pc(c, admin, "create-repo", "shared"))
        ok(pc(c, admin, "auth", "set", "oidc:bob@example.com", "reader", "shared"))
        yield c


def post(c: Cluster, path: str, body: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=30)
    conn.request(
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    resp = conn.getresponse()
    out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return out


def get(c: Cluster, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=30)
    conn.request("GET", f"{parts.path}?{parts.query}", headers=headers)
    resp = conn.getresponse()
    got = {k.lower(): v for k, v in resp.getheaders()}
    if "set-cookie" in got:  # every one of them
        got["set-cookie"] = " | ".join(resp.msg.get_all("Set-Cookie") or [])
    out = (resp.status, got, resp.read())
    conn.close()
    return out


def test_a_browser_signs_in_through_the_provider(
    cluster: Cluster, provider: OidcProvider, browser: Any
) -> None:
    provider.set_user("bob-1", email="Bob@Example.com", email_verified=True)
    page = browser.new_page()
    errors = watch_errors(page)
    page.goto(base(cluster) + "/repos/shared")
    assert page.url == base(cluster) + "/login?next=/repos/shared"
    page.wait_for_selector("#login-oidc:not([hidden])")
    page.screenshot(path=str(SHOTS / "login-oidc.png"), full_page=True)
    page.click("#login-oidc button")
    page.wait_for_url(provider.issuer + "/**")  # the provider's own page
    page.fill("input[name=sub]", "bob-1")
    page.locator("input[name=sub]").press("Enter")
    page.wait_for_url(base(cluster) + "/repos/shared", timeout=30_000)
    page.wait_for_selector("#whoami")
    assert page.inner_text("#whoami").strip() == "oidc:bob@example.com"
    assert "Repo shared" in page.inner_text("main")
    (cookie,) = [c for c in browser.cookies() if c["name"] == "pach_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not [c for c in browser.cookies() if c["name"] == "pach_oidc"]  # used up
    page.click("#sign-out")
    page.wait_for_url(base(cluster) + "/login")
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_a_sign_in_finishes_only_in_the_browser_that_started_it(
    cluster: Cluster, provider: OidcProvider
) -> None:
    provider.set_user("mallory-1", email="mallory@example.com", email_verified=True)
    # the attacker starts a sign-in and logs in as herself at the provider...
    status, headers, out = post(cluster, "/api/session/oidc", {"next": "/"})
    assert status == 200
    binding = headers["set-cookie"]
    assert "HttpOnly" in binding and "SameSite=Lax" in binding
    assert "Path=/authorization-code/callback" in binding
    back = provider.authorize(json.loads(out)["url"], "mallory-1")
    # ...and gets the victim's browser (no binding cookie) to open the callback
    status, headers, page = get(cluster, back)
    assert status == 403 and b"another browser" in page
    assert "set-cookie" not in headers
    # the login is used up: even with the right cookie it does not finish now
    cookie = binding.split(";", 1)[0]
    status, headers, _ = get(cluster, back, Cookie=cookie)
    assert status == 400 and "pach_session" not in headers.get("set-cookie", "")
    # a fresh one from the same browser finishes, on a page of this site only
    status, headers, out = post(cluster, "/api/session/oidc", {"next": "//evil.example/x"})
    cookie = headers["set-cookie"].split(";", 1)[0]
    back = provider.authorize(json.loads(out)["url"], "mallory-1")
    status, headers, page = get(cluster, back, Cookie=cookie)
    assert status == 200 and "pach_session=" in headers["set-cookie"]
    assert b'content="0;url=/"' in page and b"evil" not in page
    # not from another site
    status, _, _ = post(cluster, "/api/session/oidc", {}, Origin="http://evil.example")
    assert status == 403
