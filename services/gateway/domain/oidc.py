"""OpenID Connect login, the pure part (docs/decisions/0028-oidc-login.md):
a login's secrets (state, nonce, PKCE verifier), the provider's
authorization URL, verifying an ID token against the provider's published
keys, and the Pachyderm subject an identity becomes.

Verification uses PyJWT: the signature with the key the token's ``kid``
names in the provider's JWKS (asymmetric algorithms only, the algorithm
must fit the key), then ``iss``, ``aud`` (and ``azp`` when there are
several audiences), ``exp``/``iat`` and, for a login this gateway started,
``nonce``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jwt

from libs.errors import InvalidIdToken

SUBJECT_PREFIX = "oidc:"
SCOPES = "openid email profile"
# Signatures with a public key only: never "none", never a shared secret
# (an HS256 token "signed" with the public key is the classic confusion).
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
LEEWAY_S = 60  # clock skew allowed between the provider and the gateway


@dataclass(frozen=True)
class PendingLogin:
    """What the gateway remembers of a login it started, by ``state``."""

    state: str
    nonce: str
    verifier: str  # PKCE code_verifier: only its S256 challenge leaves here
    created: float
    # A dashboard sign-in: the secret in the cookie of the browser that
    # started it (the callback must come from that browser), and where the
    # browser goes once signed in. Empty for pachctl's login.
    browser: str = ""
    next: str = "/"

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_login(now: float, *, browser: bool = False, next_path: str = "/") -> PendingLogin:
    """Fresh secrets: 256 random bits each (and the browser's, for a
    dashboard sign-in)."""
    return PendingLogin(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        verifier=secrets.token_urlsafe(48),
        created=now,
        browser=secrets.token_urlsafe(32) if browser else "",
        next=next_path,
    )


def authorization_url(endpoint: str, client_id: str, redirect_uri: str, login: PendingLogin) -> str:
    """The provider's authorization-code request for ``login``."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPES,
            "state": login.state,
            "nonce": login.nonce,
            "code_challenge": login.challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


class UnknownSigningKey(InvalidIdToken):
    """The token names a key (``kid``) the JWKS at hand does not hold: the
    provider may have rotated its keys, so the caller fetches them again."""


def _signing_key(token: str, jwks: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidIdToken("the ID token is malformed: not a signed JWT") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidIdToken(
            f"the ID token's algorithm {str(alg)[:20]!r} is not accepted "
            f"(one of {', '.join(sorted(ALGORITHMS))})"
        )
    try:
        keys = jwt.PyJWKSet.from_dict(dict(jwks)).keys
    except jwt.PyJWTError:
        raise InvalidIdToken("the identity provider publishes no usable signing key") from None
    kid = header.get("kid")
    candidates = [k for k in keys if kid is None or k.key_id == kid]
    if kid is None and len(candidates) > 1:
        raise InvalidIdToken("the ID token names no key (kid) and the provider has several")
    if not candidates:
        raise UnknownSigningKey(
            f"the ID token is signed by a key the identity provider does not publish "
            f"(kid {str(kid)[:64]!r})"
        )
    return candidates[0].key, str(alg)


def verify_id_token(
    token: str,
    jwks: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
) -> dict[str, Any]:
    """The claims of ``token`` once everything checks out; else
    ``InvalidIdToken`` saying what failed. ``nonce`` is the login's (None:
    a token the caller brought, with no login of ours behind it)."""
    key, alg = _signing_key(token, jwks)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidIdToken("the ID token has expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidIdToken(
            "the ID token is for another audience, not this cluster's client id"
        ) from None
    except jwt.InvalidIssuerError:
        raise InvalidIdToken(f"the ID token was not issued by {issuer}") from None
    except jwt.InvalidSignatureError:
        raise InvalidIdToken(
            "the ID token's signature does not verify with the identity provider's keys"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidIdToken(f"the ID token has no {exc.claim!r} claim") from None
    except jwt.ImmatureSignatureError:
        raise InvalidIdToken("the ID token is not valid yet (issued in the future)") from None
    except jwt.PyJWTError as exc:
        raise InvalidIdToken(f"the ID token is not valid: {exc}") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise InvalidIdToken("the ID token has several audiences and is not authorized for us")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise InvalidIdToken("the ID token's nonce is not this login's: refused as a replay")
    return claims


def subject_for(claims: Mapping[str, Any]) -> str:
    """``oidc:<email>`` (lower case) when the provider says the email is
    verified; else ``oidc:<sub>``. A ``sub`` with an ``@`` and no verified
    email is refused, so it can never pass for someone's email."""
    email = claims.get("email")
    if isinstance(email, str) and email and claims.get("email_verified") is True:
        return SUBJECT_PREFIX + email.strip().lower()
    sub = str(claims.get("sub", ""))
    if not sub:
        raise InvalidIdToken("the ID token has no subject (sub)")
    if "@" in sub:
        raise InvalidIdToken(
            "the identity provider's subject looks like an email that it did not verify: "
            "refused (verified emails become oidc:<email>)"
        )
    return SUBJECT_PREFIX + sub
