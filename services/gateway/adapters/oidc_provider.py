"""The cluster's OpenID Connect provider over HTTP: its discovery document
(``<issuer>/.well-known/openid-configuration``), its keys (JWKS) and its
token endpoint. Documents are cached; the keys are fetched again (at most
once a minute) when a token names one the cache does not hold. Nothing
connects until first use; answers are read up to ``MAX_BODY`` bytes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from libs.errors import InvalidArgument, Unavailable, shown

MAX_BODY = 1 << 20
TIMEOUT_S = 10.0
KEYS_REFRESH_S = 60.0


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class Provider:
    def __init__(self, issuer: str, client_id: str, client_secret: str) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._secret = client_secret
        self._session: aiohttp.ClientSession | None = None
        self._metadata: Metadata | None = None
        self._keys: dict[str, Any] | None = None
        self._keys_at = 0.0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _json(self, method: str, url: str, what: str, **kw: Any) -> tuple[int, Any]:
        try:
            async with self._http().request(method, url, allow_redirects=False, **kw) as resp:
                body = await resp.content.read(MAX_BODY + 1)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(
                f"the identity provider's {what} ({url}) cannot be reached: {type(exc).__name__}"
            ) from None
        if len(body) > MAX_BODY:
            raise Unavailable(f"the identity provider's {what} answered over {MAX_BODY} bytes")
        try:
            return status, json.loads(body)
        except ValueError:
            raise Unavailable(
                f"the identity provider's {what} answered HTTP {status} without JSON"
            ) from None

    async def metadata(self) -> Metadata:
        if self._metadata is not None:
            return self._metadata
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        status, doc = await self._json("GET", url, "discovery document")
        if status != 200 or not isinstance(doc, dict):
            raise Unavailable(f"the identity provider's discovery document answered {status}")
        fields = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [f for f in fields if not isinstance(doc.get(f), str) or not doc[f]]
        if missing:
            raise Unavailable(f"the identity provider's discovery document lacks {missing}")
        if doc.get("issuer") != self.issuer:
            # OIDC Discovery 4.3: a document for another issuer is not ours.
            raise Unavailable(
                f"the discovery document names issuer {shown(doc.get('issuer'))}, "
                f"not the configured {self.issuer}"
            )
        self._metadata = Metadata(self.issuer, *(str(doc[f]) for f in fields))
        return self._metadata

    async def keys(self, *, refresh: bool = False) -> dict[str, Any]:
        """The provider's JWKS; ``refresh`` fetches it again unless that was
        done less than ``KEYS_REFRESH_S`` ago."""
        now = time.monotonic()
        if self._keys is not None and not (refresh and now - self._keys_at > KEYS_REFRESH_S):
            return self._keys
        meta = await self.metadata()
        status, doc = await self._json("GET", meta.jwks_uri, "key set (JWKS)")
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise Unavailable(f"the identity provider's key set answered {status}")
        self._keys, self._keys_at = doc, now
        return doc

    async def exchange(self, code: str, verifier: str, redirect_uri: str) -> str:
        """The ID token the token endpoint gives for ``code`` (with the PKCE
        ``verifier``); the provider refusing the code is InvalidArgument."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        auth = None
        if self._secret:  # client_secret_basic, the default method
            auth = aiohttp.BasicAuth(self.client_id, self._secret)
        else:  # a public client: PKCE is its proof
            form["client_id"] = self.client_id
        status, doc = await self._json(
            "POST", meta.token_endpoint, "token endpoint", data=form, auth=auth
        )
        if status != 200 or not isinstance(doc, dict):
            error = doc.get("error") if isinstance(doc, dict) else None
            raise InvalidArgument(
                f"the identity provider refused the authorization code "
                f"(HTTP {status}, {shown(error or 'no error given', 60)}): "
                "start again with 'pachctl auth login'"
            )
        id_token = doc.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise InvalidArgument("the identity provider's token answer has no ID token")
        return id_token
