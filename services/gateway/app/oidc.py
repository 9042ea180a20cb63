"""Login through the cluster's OpenID Connect provider
(docs/decisions/0028-oidc-login.md).

``start`` (gRPC ``auth.API/GetOIDCLogin``, what ``pachctl auth login``
calls) remembers a fresh state, nonce and PKCE verifier and answers the
provider's authorization URL. The provider sends the browser to the
gateway's callback (``http/oidc.py``), which calls ``finish``: the state
is taken (once; unknown, used or expired ones are refused), the code is
exchanged at the provider's token endpoint, the ID token is verified and
its user becomes a subject (``domain/oidc.py``), and the auth service
issues a Pachyderm token for it (``cmd.auth.IssueIdentityToken``, sent as
the gateway's own request). ``authenticate`` does the last two steps for
an ID token a client brings (1.7's ``Authenticate`` with ``github_token``).

Settings (``OidcSettings.from_env``): ``PACH_OIDC_ISSUER`` (unset: OIDC
login is off), ``PACH_OIDC_CLIENT_ID``, ``PACH_OIDC_CLIENT_SECRET`` (empty
for a public client), ``PACH_OIDC_REDIRECT_URI`` (default: this gateway's
own ``/authorization-code/callback``)."""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from libs.api.internal import auth_service_pb2 as internal
from libs.bus import Bus
from libs.config import Config
from libs.errors import FailedPrecondition, InvalidArgument, PermissionDenied, shown
from services.gateway.adapters.oidc_provider import Provider
from services.gateway.app.authn import Authenticator
from services.gateway.domain import oidc

CALLBACK_PATH = "/authorization-code/callback"
PENDING_TTL_S = 600.0  # a login must come back within ten minutes
MAX_PENDING = 1024  # GetOIDCLogin is public: what it remembers stays bounded

NOT_CONFIGURED = (
    "OIDC is not configured: this cluster has no OpenID Connect identity provider "
    "(the gateway's PACH_OIDC_ISSUER and PACH_OIDC_CLIENT_ID); log in with "
    "'pachctl auth login --one-time-password' (an admin gets one with "
    "'pachctl auth get-otp <subject>')"
)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(value: str, name: str) -> str:
    parts = urlsplit(value)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host:
        return value
    if parts.scheme == "http" and _loopback(host):
        return value
    raise InvalidArgument(
        f"{name} must be an https:// URL (http:// only on loopback), got {value!r}", name=name
    )


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str = field(default="", repr=False)
    redirect_uri: str = ""

    @classmethod
    def from_env(cls, cfg: Config, env: Mapping[str, str] | None = None) -> OidcSettings | None:
        e: Mapping[str, str] = os.environ if env is None else env
        issuer = e.get("PACH_OIDC_ISSUER", "").strip()
        if not issuer:
            return None
        client_id = e.get("PACH_OIDC_CLIENT_ID", "").strip()
        if not client_id:
            raise InvalidArgument(
                "PACH_OIDC_CLIENT_ID must be set with PACH_OIDC_ISSUER", name="PACH_OIDC_CLIENT_ID"
            )
        host = cfg.grpc_host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        elif ":" in host:
            host = f"[{host}]"
        default = f"http://{host}:{cfg.http_port}{CALLBACK_PATH}"
        redirect = e.get("PACH_OIDC_REDIRECT_URI", "").strip() or default
        return cls(
            issuer=_url(issuer, "PACH_OIDC_ISSUER"),
            client_id=client_id,
            client_secret=e.get("PACH_OIDC_CLIENT_SECRET", ""),
            redirect_uri=_url(redirect, "PACH_OIDC_REDIRECT_URI"),
        )


class OidcLogin:
    def __init__(self, settings: OidcSettings | None, bus: Bus, authn: Authenticator) -> None:
        self.settings = settings
        self.bus = bus
        self.authn = authn
        self.provider = (
            Provider(settings.issuer, settings.client_id, settings.client_secret)
            if settings
            else None
        )
        self._pending: OrderedDict[str, oidc.PendingLogin] = OrderedDict()

    async def close(self) -> None:
        if self.provider is not None:
            await self.provider.close()

    def _configured(self) -> tuple[OidcSettings, Provider]:
        if self.settings is None or self.provider is None:
            raise FailedPrecondition(NOT_CONFIGURED)
        return self.settings, self.provider

    def _auth_active(self) -> None:
        if not self.authn.view.state.active:
            raise FailedPrecondition(
                "the auth service is not activated: run 'pachctl auth activate'"
            )

    # --- the authorization-code flow ------------------------------------------

    @property
    def configured(self) -> bool:
        return self.settings is not None

    async def start(self) -> tuple[str, str]:
        """(the provider's authorization URL, the login's state)."""
        url, login = await self.start_login()
        return url, login.state

    async def start_login(
        self, *, browser: bool = False, next_path: str = "/"
    ) -> tuple[str, oidc.PendingLogin]:
        """(the provider's authorization URL, the pending login); with
        ``browser`` a dashboard sign-in bound to the starting browser."""
        settings, provider = self._configured()
        self._auth_active()
        meta = await provider.metadata()
        now = time.monotonic()
        self._expire(now)
        while len(self._pending) >= MAX_PENDING:
            self._pending.popitem(last=False)
        login = oidc.new_login(now, browser=browser, next_path=next_path)
        self._pending[login.state] = login
        url = oidc.authorization_url(
            meta.authorization_endpoint, settings.client_id, settings.redirect_uri, login
        )
        return url, login

    def _expire(self, now: float) -> None:
        while self._pending:
            first = next(iter(self._pending.values()))
            if now - first.created < PENDING_TTL_S:
                break
            self._pending.popitem(last=False)

    def _take(self, state: str) -> oidc.PendingLogin:
        """The login ``state`` names, forgotten at once: it serves once."""
        self._expire(time.monotonic())
        login = self._pending.pop(state, None) if state else None
        if login is None:
            raise InvalidArgument(
                "unknown, used or expired login state: start again with 'pachctl auth login'"
            )
        return login

    async def finish(
        self, state: str, code: str, error: str = "", browser: str = ""
    ) -> tuple[str, str, oidc.PendingLogin]:
        """The provider came back: (subject, Pachyderm token, the login).
        ``browser``: the sign-in cookie the callback came with (a dashboard
        sign-in only finishes in the browser that started it)."""
        settings, provider = self._configured()
        if not state:
            raise InvalidArgument(
                "the callback carries no state: start again with 'pachctl auth login'"
            )
        login = self._take(state)
        if login.browser and not hmac.compare_digest(login.browser, browser):
            raise PermissionDenied(
                "this sign-in was started in another browser: sign in again from the dashboard"
            )
        if error:
            raise InvalidArgument(f"the identity provider refused the login: {shown(error, 60)}")
        if not code:
            raise InvalidArgument("the callback carries no authorization code")
        id_token = await provider.exchange(code, login.verifier, settings.redirect_uri)
        claims = await self._verify(id_token, login.nonce)
        subject, token = await self._issue(claims)
        return subject, token, login

    async def authenticate(self, id_token: str) -> tuple[str, str]:
        """An ID token a client brought (no nonce of ours): (subject, token)."""
        self._configured()
        self._auth_active()
        return await self._issue(await self._verify(id_token, None))

    async def _verify(self, id_token: str, nonce: str | None) -> dict[str, Any]:
        settings, provider = self._configured()

        def check(keys: Mapping[str, Any]) -> dict[str, Any]:
            return oidc.verify_id_token(
                id_token, keys, issuer=settings.issuer, client_id=settings.client_id, nonce=nonce
            )

        try:
            return check(await provider.keys())
        except oidc.UnknownSigningKey:  # maybe rotated: look once more
            return check(await provider.keys(refresh=True))

    async def _issue(self, claims: Mapping[str, Any]) -> tuple[str, str]:
        subject = oidc.subject_for(claims)
        reply = await self.bus.request(
            "auth",
            "IssueIdentityToken",
            internal.IssueIdentityToken(subject=subject),
            internal.IdentityToken,
            auth_seq=-1,  # the gateway's own request, not a client's
        )
        await self.authn.changed()  # the token works from the very next call
        return subject, reply.pach_token
