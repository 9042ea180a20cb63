"""OIDC login against a real OpenID Connect provider process
(``oidc-provider-mock``, tests/servers/oidc_provider.py): ``pachctl auth
login`` prints the provider's URL, the test logs in there as a browser
would, follows the redirect to the gateway's callback page, pastes the
token it shows into pachctl; the user is then ``oidc:<email>``, gets ACLs
and can be made an admin. The callback is attacked: missing, forged and
replayed states, a replayed code, a code from another login (nonce),
markup in what it is sent; 1.7's Authenticate with an ID token in
``github_token`` refuses tokens for another audience or signed by another
key; the auth command that issues the token refuses a client's request.
Nothing is issued for a refused login."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import grpc
import jwt
import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.api.auth import auth_pb2 as auth
from libs.api.internal import auth_service_pb2 as internal
from libs.bus import Bus
from libs.errors import PermissionDenied
from tests.integration.auth_support import Client
from tests.integration.test_auth_pachctl import fails, ok, pc
from tests.servers.oidc_provider import OidcProvider, http, start_oidc_provider
from tests.support.cluster import ROOT, Cluster, running

CLIENT_ID = "pachyderm-test"
TOKEN = re.compile(r'<pre id="token">([0-9a-f]{64})</pre>')


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("oidc"))


@pytest.fixture(scope="module")
def provider(base: Path) -> Iterator[OidcProvider]:
    p = start_oidc_provider(base)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def cluster(base: Path, provider: OidcProvider) -> Iterator[Cluster]:
    from tests.integration.auth_support import write_keys

    private, public = write_keys(base)
    env = {
        "PACH_ENTERPRISE_PUBLIC_KEY": str(public),
        "PACH_OIDC_ISSUER": provider.issuer,
        "PACH_OIDC_CLIENT_ID": CLIENT_ID,
        "PACH_OIDC_CLIENT_SECRET": "not-checked-by-the-mock",
    }
    for c in running(base / "data", **env):
        admin = base / "admin.json"
        code = ok(pc(c, admin, "enterprise", "mint-code", "--signing-key", str(private))).strip()
        ok(pc(c, admin, "enterprise", "activate", code))
        ok(pc(c, admin, "auth", "activate", "--initial-admin=robot:admin"))
        yield c


def callback_url(c: Cluster) -> str:
    return f"http://127.0.0.1:{c.http_port}/authorization-code/callback"


def token_events(c: Cluster) -> int:
    """How many token events the log holds (each issued token adds one)."""

    async def count() -> int:
        nc = await nats.connect(c.state()["nats"]["url"])
        try:
            info = await nc.jetstream().stream_info("EVENTS", subjects_filter="ev.auth.token.>")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    return asyncio.run(count())


def start_login(c: Cluster) -> tuple[str, str]:
    """(authorization URL, state) of a login started over gRPC."""
    client = Client(c.grpc_port)
    try:
        reply = client.call(client.auth.GetOIDCLogin, auth.GetOIDCLoginRequest())
    finally:
        client.close()
    return reply.login_url, reply.state


def test_pachctl_login_end_to_end(cluster: Cluster, provider: OidcProvider, base: Path) -> None:
    admin = base / "admin.json"
    alice = base / "alice.json"
    provider.set_user("alice-1", email="Alice@Example.com", email_verified=True)

    proc = subprocess.Popen(
        [sys.executable, "-m", "programs.pachctl", "auth", "login"],
        cwd=ROOT,
        env={
            **os.environ,
            "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
            "PYTHONPATH": str(ROOT),
            "PACH_CONFIG": str(alice),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    url = ""
    printed: list[str] = []
    while not url:
        line = proc.stdout.readline().decode()
        assert line, (printed, proc.stderr.read() if proc.stderr else b"")
        printed.append(line)
        if line.startswith(provider.issuer):
            url = line.strip()
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == "/oauth2/authorize"
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [callback_url(cluster)]
    assert query["response_type"] == ["code"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a SHA-256
    assert len(query["state"][0]) >= 40 and len(query["nonce"][0]) >= 40
    assert "openid" in query["scope"][0].split()

    back = provider.authorize(url, "alice-1")
    assert back.startswith(callback_url(cluster) + "?")
    page = http("GET", back)
    assert page.status == 200, page.body
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Content-Type"].startswith("text/html")
    assert "oidc:alice@example.com" in page.body
    found = TOKEN.search(page.body)
    assert found, page.body
    token = found.group(1)

    _, err = proc.communicate(token.encode() + b"\n", timeout=60)
    assert proc.returncode == 0, err.decode()
    assert 'You are "oidc:alice@example.com"' in ok(pc(cluster, alice, "auth", "whoami"))
    assert token in alice.read_text()

    # the same callback again: the state was used
    before = token_events(cluster)
    again = http("GET", back)
    assert again.status == 400 and "unknown, used or expired" in again.body
    assert not TOKEN.search(again.body)
    assert token_events(cluster) == before

    # ACLs name the OIDC subject; an admin can make the user an admin
    ok(pc(cluster, admin, "create-repo", "data"))
    ok(pc(cluster, admin, "put-file", "data", "master", "/a", "-f", "-", stdin=b"a\n"))
    assert "READER" in fails(pc(cluster, alice, "get-file", "data", "master", "/a"))
    ok(pc(cluster, admin, "auth", "set", "oidc:alice@example.com", "reader", "data"))
    assert ok(pc(cluster, alice, "get-file", "data", "master", "/a")) == "a\n"
    err_text = fails(pc(cluster, alice, "put-file", "data", "master", "/b", "-f", "-", stdin=b"b"))
    assert "oidc:alice@example.com" in err_text and "WRITER" in err_text
    assert "administrator" not in ok(pc(cluster, alice, "auth", "whoami"))
    ok(pc(cluster, admin, "auth", "modify-admins", "--add", "oidc:alice@example.com"))
    assert "administrator" in ok(pc(cluster, alice, "auth", "whoami"))
    ok(pc(cluster, alice, "put-file", "data", "master", "/b", "-f", "-", stdin=b"b"))
    ok(pc(cluster, admin, "auth", "modify-admins", "--remove", "oidc:alice@example.com"))

    # a user whose email is not verified is oidc:<sub>
    provider.set_user("bob-2", email="bob@example.com")
    url, _ = start_login(cluster)
    page = http("GET", provider.authorize(url, "bob-2"))
    assert page.status == 200 and "oidc:bob-2" in page.body

    # the token is kept only as a hash
    found_in_data = subprocess.run(
        ["grep", "-r", "-l", "-a", token, str(cluster.data_dir)], capture_output=True
    )
    assert found_in_data.returncode == 1, found_in_data.stdout


def test_callback_refuses_forged_replayed_and_crossed_logins(
    cluster: Cluster, provider: OidcProvider
) -> None:
    cb = callback_url(cluster)
    provider.set_user("carol-3", email="carol@example.com", email_verified=True)
    before = token_events(cluster)

    no_state = http("GET", f"{cb}?code=abc")
    assert no_state.status == 400 and "no state" in no_state.body
    forged = http("GET", f"{cb}?{urlencode({'code': 'abc', 'state': 'forged'})}")
    assert forged.status == 400 and "unknown, used or expired" in forged.body

    # markup in what the callback is sent is never echoed unescaped
    _, state = start_login(cluster)
    evil = "<script>alert(1)</script>"
    page = http("GET", f"{cb}?{urlencode({'state': state, 'error': evil, 'code': evil})}")
    assert page.status == 400
    assert "<script>" not in page.body and "&lt;script&gt;" in page.body
    page = http("GET", f"{cb}?{urlencode({'state': evil, 'code': evil})}")
    assert page.status == 400 and "<script>" not in page.body

    # a code from login A presented with login B's state: A's nonce is in
    # the ID token, so B refuses it (the code was spent at the provider)
    url_a, state_a = start_login(cluster)
    _, state_b = start_login(cluster)
    back_a = provider.authorize(url_a, "carol-3")
    code_a = parse_qs(urlsplit(back_a).query)["code"][0]
    crossed = http("GET", f"{cb}?{urlencode({'code': code_a, 'state': state_b})}")
    assert crossed.status == 401 and "nonce" in crossed.body, crossed.body
    # ... and login A's own state with the spent code: the provider refuses it
    replayed = http("GET", f"{cb}?{urlencode({'code': code_a, 'state': state_a})}")
    assert replayed.status == 400 and "refused the authorization code" in replayed.body
    for p in (no_state, forged, crossed, replayed):
        assert not TOKEN.search(p.body)
        assert p.headers["Cache-Control"] == "no-store"
    assert token_events(cluster) == before


def test_authenticate_with_an_id_token(cluster: Cluster, provider: OidcProvider) -> None:
    """1.7's Authenticate with ``github_token``: an ID token of the
    cluster's provider for its client id, nothing else."""
    provider.set_user("dave-4", email="dave@example.com", email_verified=True)
    client = Client(cluster.grpc_port)
    try:
        id_token = provider.id_token(CLIENT_ID, "dave-4")
        reply = client.call(
            client.auth.Authenticate, auth.AuthenticateRequest(github_token=id_token)
        )
        client.token = reply.pach_token
        who = client.call(client.auth.WhoAmI, auth.WhoAmIRequest())
        assert who.username == "oidc:dave@example.com"
        client.token = ""

        before = token_events(cluster)

        def refused(github_token: str) -> str:
            with pytest.raises(grpc.RpcError) as err:
                client.call(
                    client.auth.Authenticate, auth.AuthenticateRequest(github_token=github_token)
                )
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
            return str(err.value.details())  # type: ignore[attr-defined]

        assert "another audience" in refused(provider.id_token("some-other-app", "dave-4"))
        # the same claims and header (key id), signed by a key the provider does not hold
        header = jwt.get_unverified_header(id_token)
        claims = jwt.decode(id_token, options={"verify_signature": False})
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other, algorithm="RS256", headers=header)
        assert "signature" in refused(forged)
        unknown = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "not-theirs"})
        assert "does not publish" in refused(unknown)
        assert "malformed" in refused("not-a-jwt")
        assert token_events(cluster) == before
    finally:
        client.close()


def test_issuing_is_the_gateways_own_request_only(cluster: Cluster) -> None:
    """IssueIdentityToken forwarded on a client's behalf (with
    ``Pach-Auth-Seq``, as the gateway marks every client's request) is
    refused, by anyone, naming no token."""

    async def ask(principal: str) -> str:
        nc = await nats.connect(cluster.state()["nats"]["url"])
        try:
            bus = Bus(nc, service="test")
            with pytest.raises(PermissionDenied) as err:
                await bus.request(
                    "auth",
                    "IssueIdentityToken",
                    internal.IssueIdentityToken(subject="oidc:mallory@example.com"),
                    internal.IdentityToken,
                    principal=principal,
                    auth_seq=0,
                )
            return str(err.value)
        finally:
            await nc.close()

    before = token_events(cluster)
    assert "no authorization rule" in asyncio.run(ask(""))
    assert "no authorization rule" in asyncio.run(ask("robot:admin"))
    assert token_events(cluster) == before
