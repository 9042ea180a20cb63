"""The gateway's ID token checks (services/gateway/domain/oidc.py) and OIDC
settings (services/gateway/app/oidc.py), with keys made here: a token that
checks out is accepted; one signed by another key, by an unknown key, with
no usable algorithm, for another issuer or audience, expired, from the
future or with another login's nonce is refused with a message saying
which; how an identity becomes a subject."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.config import Config
from libs.errors import InvalidArgument, InvalidIdToken
from services.gateway.app.oidc import OidcSettings
from services.gateway.domain import oidc

ISSUER = "https://idp.example.com"
CLIENT = "pachyderm"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(*keys: Any) -> dict[str, Any]:
    out = []
    for i, key in enumerate(keys):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        out.append({**jwk, "kid": f"k{i}", "use": "sig"})
    return {"keys": out}


def token(key: Any = KEY, kid: str = "k0", alg: str = "RS256", **over: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 300}
    claims.update({"nonce": "n-1"} if "nonce" not in over else {})
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def verify(tok: str, keys: dict[str, Any] | None = None, nonce: str | None = "n-1") -> Any:
    return oidc.verify_id_token(
        tok, keys or jwks(KEY), issuer=ISSUER, client_id=CLIENT, nonce=nonce
    )


def refused(tok: str, **kw: Any) -> str:
    with pytest.raises(InvalidIdToken) as err:
        verify(tok, **kw)
    return str(err.value)


def test_a_good_token_is_accepted() -> None:
    assert verify(token())["sub"] == "u1"
    assert verify(token(nonce=None), nonce=None)["sub"] == "u1"  # Authenticate: no nonce
    # among several keys, the one the kid names
    assert verify(token(OTHER, kid="k1"), keys=jwks(KEY, OTHER))["sub"] == "u1"


def test_bad_tokens_are_refused_saying_why() -> None:
    assert "signature" in refused(token(OTHER))  # right kid, another key
    with pytest.raises(oidc.UnknownSigningKey):
        verify(token(kid="rotated"))
    assert "another audience" in refused(token(aud="some-other-app"))
    assert f"not issued by {ISSUER}" in refused(token(iss="https://evil.example.com"))
    assert "expired" in refused(token(exp=int(time.time()) - 3600))
    assert "not valid yet" in refused(token(iat=int(time.time()) + 3600))
    assert "nonce" in refused(token(nonce="n-2"))
    assert "nonce" in refused(token(nonce=None))
    assert "'exp'" in refused(token(exp=None))
    assert "malformed" in refused("not.a.jwt")
    # several audiences: only when we are the authorized party
    assert "several audiences" in refused(token(aud=[CLIENT, "x"]))
    assert verify(token(aud=[CLIENT, "x"], azp=CLIENT))["sub"] == "u1"


def test_no_shared_secret_and_no_unsigned_tokens() -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 60}
    # HS256 "signed" with the public key's bytes: the classic confusion
    public = jwks(KEY)["keys"][0]["n"].encode()
    hs = jwt.encode({**claims, "nonce": "n-1"}, public, algorithm="HS256", headers={"kid": "k0"})
    assert "algorithm 'HS256' is not accepted" in refused(hs)
    unsigned = jwt.encode({**claims, "nonce": "n-1"}, "", algorithm="none")
    assert "algorithm 'none' is not accepted" in refused(unsigned)


def test_subjects() -> None:
    assert oidc.subject_for({"sub": "1", "email": "A@B.org", "email_verified": True}) == (
        "oidc:a@b.org"
    )
    assert oidc.subject_for({"sub": "1", "email": "a@b.org"}) == "oidc:1"
    assert oidc.subject_for({"sub": "1", "email": "a@b.org", "email_verified": "true"}) == (
        "oidc:1"
    )
    with pytest.raises(InvalidIdToken, match="did not verify"):
        oidc.subject_for({"sub": "a@b.org"})  # would pass for a@b.org's verified email


def test_pkce_and_authorization_url() -> None:
    login = oidc.new_login(0.0)
    expected = base64.urlsafe_b64encode(hashlib.sha256(login.verifier.encode()).digest())
    assert login.challenge == expected.rstrip(b"=").decode()
    url = oidc.authorization_url("https://idp/auth?x=1", CLIENT, "http://127.0.0.1/cb", login)
    q = parse_qs(urlsplit(url).query)
    assert q["x"] == ["1"] and q["state"] == [login.state] and q["nonce"] == [login.nonce]
    assert q["code_challenge"] == [login.challenge] and q["code_challenge_method"] == ["S256"]
    assert login.verifier not in url
    assert len({oidc.new_login(0.0).state for _ in range(100)}) == 100


def test_settings() -> None:
    cfg = Config(http_port=30080)
    assert OidcSettings.from_env(cfg, {}) is None
    s = OidcSettings.from_env(
        cfg, {"PACH_OIDC_ISSUER": "http://127.0.0.1:9400", "PACH_OIDC_CLIENT_ID": "c"}
    )
    assert s is not None
    assert s.redirect_uri == "http://127.0.0.1:30080/authorization-code/callback"
    assert "secret" not in repr(
        OidcSettings.from_env(
            cfg,
            {
                "PACH_OIDC_ISSUER": ISSUER,
                "PACH_OIDC_CLIENT_ID": "c",
                "PACH_OIDC_CLIENT_SECRET": "secret",
            },
        )
    )
    with pytest.raises(InvalidArgument, match="PACH_OIDC_CLIENT_ID"):
        OidcSettings.from_env(cfg, {"PACH_OIDC_ISSUER": ISSUER})
    with pytest.raises(InvalidArgument, match="https"):
        OidcSettings.from_env(
            cfg, {"PACH_OIDC_ISSUER": "http://idp.example.com", "PACH_OIDC_CLIENT_ID": "c"}
        )
