"""A real OpenID Connect provider for the OIDC login tests:
``oidc-provider-mock`` (from PyPI, in the project's dev packages; a Flask
app under uvicorn) as a subprocess on a free loopback port.

It accepts any client id and secret and any redirect URI. Its
authorization endpoint takes a form POST naming the user (``sub``); a
user's other claims are set beforehand with ``PUT /users/<sub>``. The
helpers below speak plain HTTP (urllib) and never follow redirects, so a
test sees every hop."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from programs.cluster.natsserver import free_port, wait_for_port


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def http(method: str, url: str, data: bytes | None = None, **headers: str) -> Response:
    """One HTTP request, redirects not followed, errors returned as is."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=30) as resp:
            return Response(resp.status, dict(resp.headers), resp.read().decode())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers), err.read().decode())


@dataclass
class OidcProvider:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_user(self, sub: str, **claims: Any) -> None:
        url = f"{self.issuer}/users/{quote(sub, safe='')}"
        done = http("PUT", url, json.dumps(claims).encode(), **{"Content-Type": "application/json"})
        assert done.status == 204, done

    def authorize(self, url: str, sub: str) -> str:
        """Log ``sub`` in at the authorization ``url``: where the provider
        sends the browser next (the client's redirect URI with a code)."""
        done = http("POST", url, urlencode({"sub": sub}).encode())
        assert done.status in (302, 303), (done.status, done.body[:300])
        return done.headers["Location"]

    def id_token(self, client_id: str, sub: str, nonce: str = "") -> str:
        """An ID token for ``sub`` issued to ``client_id`` (an authorization-
        code flow run directly, as another application would)."""
        redirect = "http://127.0.0.1:9/cb"
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": "openid email profile",
            "state": "s",
        }
        if nonce:
            query["nonce"] = nonce
        back = self.authorize(f"{self.issuer}/oauth2/authorize?{urlencode(query)}", sub)
        code = parse_qs(urlsplit(back).query)["code"][0]
        basic = base64.b64encode(f"{client_id}:secret".encode()).decode()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
        done = http(
            "POST",
            f"{self.issuer}/oauth2/token",
            urlencode(form).encode(),
            Authorization=f"Basic {basic}",
        )
        assert done.status == 200, done.body
        return str(json.loads(done.body)["id_token"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_oidc_provider(tmp: Path) -> OidcProvider:
    port = free_port()
    log = tmp / "oidc-provider.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oidc_provider_mock",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port("127.0.0.1", port, 30)
    return OidcProvider(proc, port, log)
