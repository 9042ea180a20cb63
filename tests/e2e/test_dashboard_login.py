"""Signing in to the dashboard once auth is active, in Debian's chromium and
over plain HTTP: a page without a session goes to /login, a token or a
one-time password signs in (an HttpOnly, SameSite=Strict cookie), the header
names who is signed in, and what a session opens is closed again by a
revocation, a sign-out or another site.

Screenshot: ``.artifacts/screenshots/login.png`` (git-ignored)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_dashboard import SHOTS, base, browser, watch_errors
from tests.integration.auth_support import write_keys
from tests.integration.test_auth_pachctl import ok, pc
from tests.support.cluster import Cluster, running

__all__ = ["browser"]  # (the fixture, shared with the other browser tests)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("login"))


@pytest.fixture(scope="module")
def cluster(home: Path) -> Iterator[Cluster]:
    keys = write_keys(home)
    yield from running(home / "data", PACH_ENTERPRISE_PUBLIC_KEY=str(keys[1]))


def call(
    c: Cluster, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", c.http_port, timeout=30)
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    conn.request(method, path, body=data, headers=sent)
    resp = conn.getresponse()
    status = resp.status
    got = {k.lower(): v for k, v in resp.getheaders()}
    out = b"" if path.startswith("/api/feed") and status == 200 else resp.read()
    conn.close()
    return status, got, out


def login(c: Cluster, **body: str) -> tuple[int, str, bytes]:
    """POST /api/session/login; (status, the session cookie's value, body)."""
    status, headers, out = call(c, "POST", "/api/session/login", body)
    cookie = headers.get("set-cookie", "")
    value = cookie.split(";", 1)[0].split("=", 1)[1] if "=" in cookie else ""
    return status, value, out


def session(token: str) -> str:
    return f"pach_session={token}"


@pytest.fixture(scope="module")
def tokens(cluster: Cluster, home: Path, browser: Any) -> dict[str, str]:
    """Enterprise activated from the dashboard; auth active with
    robot:admin; robot:alice has a token and owns 'photos'; only the admin
    may read 'ledger'."""
    anon = home / "anon.json"
    # before auth: nothing to sign in to
    status, _, out = login(cluster, token="x" * 40)
    assert status == 412 and b"not active" in out  # FailedPrecondition
    assert call(cluster, "GET", "/")[0] == 200
    code = ok(
        pc(cluster, anon, "enterprise", "mint-code", "--signing-key", str(home / "signing.pem"))
    )
    page = browser.new_page()
    page.goto(base(cluster) + "/")
    page.wait_for_function("() => document.getElementById('ent-state').textContent === 'none'")
    page.fill("#ent-code", code.strip()[:-6] + "AAAAAA")
    page.click("#ent-form button")
    page.wait_for_function("() => document.getElementById('ent-result').textContent !== ''")
    refused = page.inner_text("#ent-result")
    assert "not signed" in refused or "malformed" in refused, refused
    page.fill("#ent-code", code.strip())
    page.click("#ent-form button")
    page.wait_for_function(
        "() => document.getElementById('ent-state').textContent.startsWith('active until')"
    )
    page.close()
    assert "ACTIVE" in ok(pc(cluster, anon, "enterprise", "get-state"))
    admin = home / "admin.json"
    ok(pc(cluster, admin, "auth", "activate", "--initial-admin=robot:admin"))
    ok(pc(cluster, admin, "create-repo", "ledger"))
    printed = ok(pc(cluster, admin, "auth", "get-auth-token", "robot:alice"))
    alice = printed.rsplit("Token: ", 1)[1].strip()
    ok(pc(cluster, home / "alice.json", "auth", "use-auth-token", stdin=alice.encode() + b"\n"))
    ok(pc(cluster, home / "alice.json", "create-repo", "photos"))
    return {"alice": alice}


def test_a_browser_signs_in_and_out(cluster: Cluster, tokens: dict[str, str], browser: Any) -> None:
    page = browser.new_page()
    errors = watch_errors(page)
    page.goto(base(cluster) + "/repos/photos")
    assert page.url == base(cluster) + "/login?next=/repos/photos"
    page.fill("#token", "not-a-token")
    page.click("#login-token button")
    page.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
    assert "unknown, expired or revoked" in page.inner_text("#login-error")
    page.screenshot(path=str(SHOTS / "login.png"), full_page=True)
    assert not [c for c in browser.cookies() if c["name"] == "pach_session"]

    page.fill("#token", tokens["alice"])
    page.click("#login-token button")
    page.wait_for_url(base(cluster) + "/repos/photos")
    page.wait_for_selector("#whoami")
    assert page.inner_text("#whoami").strip() == "robot:alice"
    (cookie,) = [c for c in browser.cookies() if c["name"] == "pach_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # no script reads the token
    # the overview: the DAG is drawn from alice's view, live
    page.goto(base(cluster) + "/")
    page.wait_for_selector('#dag a.node[data-name="photos"]')
    page.wait_for_function("() => document.getElementById('live').classList.contains('on')")
    page.click("#sign-out")
    page.wait_for_url(base(cluster) + "/login")
    page.goto(base(cluster) + "/")
    assert page.url.startswith(base(cluster) + "/login")
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_an_owner_changes_the_acl_from_the_repo_page(
    cluster: Cluster, tokens: dict[str, str], browser: Any
) -> None:
    page = browser.new_page()
    page.goto(base(cluster) + "/login?next=/repos/photos")
    page.fill("#token", tokens["alice"])
    page.click("#login-token button")
    page.wait_for_url(base(cluster) + "/repos/photos")
    assert "robot:alice" in page.inner_text("main table:last-of-type")  # the owner
    page.fill("#acl-subject", "robot:bob")
    page.select_option("#acl-scope", "reader")
    page.click("#acl-form button")
    page.wait_for_function("() => document.querySelector('main').innerText.includes('robot:bob')")
    rows = page.inner_text("main table:last-of-type")
    assert "robot:bob\treader" in rows, rows
    page.screenshot(path=str(SHOTS / "repo-acl.png"), full_page=True)
    # not hers: the page is refused; the API says why
    status, _, out = call(
        cluster,
        "POST",
        "/api/auth/SetScope",
        {"repo": "ledger", "username": "robot:alice", "scope": "OWNER"},
        Cookie=session(tokens["alice"]),
    )
    assert status == 403 and b"robot:alice" in out
    page.click("#sign-out")
    page.wait_for_url(base(cluster) + "/login")


def test_next_never_leaves_the_site(cluster: Cluster, tokens: dict[str, str], browser: Any) -> None:
    page = browser.new_page()
    for evil in ("//evil.example/x", "/\\evil.example", "https://evil.example/"):
        page.goto(base(cluster) + "/login?next=" + evil)
        page.fill("#token", tokens["alice"])
        page.click("#login-token button")
        page.wait_for_url(base(cluster) + "/")
        page.click("#sign-out")
        page.wait_for_url(base(cluster) + "/login")


def test_a_one_time_password_signs_in_once(
    cluster: Cluster, tokens: dict[str, str], home: Path
) -> None:
    otp = ok(pc(cluster, home / "alice.json", "auth", "get-otp")).strip().split()[-1]
    status, token, out = login(cluster, one_time_password=otp)
    assert status == 200 and json.loads(out) == {"subject": "robot:alice"}
    status, _, body = call(cluster, "GET", "/api/session", Cookie=session(token))
    assert json.loads(body) == {"auth_active": True, "subject": "robot:alice", "oidc": False}
    status, again, out = login(cluster, one_time_password=otp)
    assert status == 401 and again == ""  # used: refused, no cookie


def test_what_a_session_opens_and_what_closes_it(
    cluster: Cluster, tokens: dict[str, str], home: Path
) -> None:
    alice = tokens["alice"]
    # without a session: pages go to /login, the feed and the API say 401
    status, headers, _ = call(cluster, "GET", "/repos/photos")
    assert status == 303 and headers["location"] == "/login?next=/repos/photos"
    assert call(cluster, "GET", "/api/feed")[0] == 401
    assert call(cluster, "POST", "/api/pfs/ListRepo", {})[0] == 401
    # with one: alice's own view (photos yes, ledger no)
    status, headers, out = call(cluster, "POST", "/api/session/login", {"token": alice})
    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    me = session(alice)
    assert call(cluster, "GET", "/repos/photos", Cookie=me)[0] == 200
    assert call(cluster, "GET", "/api/feed", Cookie=me)[0] == 200
    assert (
        call(cluster, "POST", "/api/pfs/InspectRepo", {"repo": {"name": "ledger"}}, Cookie=me)[0]
        == 403
    )
    # other sites: no sign-in from them, no state change with the cookie
    evil = {"Origin": "http://evil.example"}
    assert call(cluster, "POST", "/api/session/login", {"token": alice}, **evil)[0] == 403
    status, _, _ = call(
        cluster, "POST", "/api/pfs/CreateRepo", {"repo": {"name": "x"}}, Cookie=me, **evil
    )
    assert status == 403
    assert call(cluster, "GET", "/api/pfs/DeleteAll", Cookie=me)[0] == 405
    # auth over the JSON API: WhoAmI from the session; a change is never a GET
    status, _, out = call(cluster, "GET", "/api/auth/WhoAmI", Cookie=me)
    assert status == 200 and json.loads(out)["username"] == "robot:alice"
    assert call(cluster, "GET", "/api/auth/GetOneTimePassword", Cookie=me)[0] == 405
    assert call(cluster, "GET", "/api/auth/WhoAmI")[0] == 401
    # bad sign-ins: one line, 400/401, no cookie
    for body in ({}, {"token": alice, "one_time_password": "x"}, {"token": 5}, {"who": "x"}):
        status, headers, out = call(cluster, "POST", "/api/session/login", body)
        assert status == 400 and "set-cookie" not in headers, (body, out)
    status, headers, _ = call(cluster, "POST", "/api/session/login", {"token": "a" * 5000})
    assert status == 400 and "set-cookie" not in headers
    # a revoked token closes the session on its next request
    ok(pc(cluster, home / "admin.json", "auth", "revoke", stdin=alice.encode() + b"\n"))
    status, headers, _ = call(cluster, "GET", "/repos/photos", Cookie=me)
    assert status == 303 and headers["location"].startswith("/login")
    assert call(cluster, "GET", "/api/feed", Cookie=me)[0] == 401
    assert json.loads(call(cluster, "GET", "/api/session", Cookie=me)[2])["subject"] == ""
