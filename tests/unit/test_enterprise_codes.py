"""Activation codes: a code minted with the trusted key verifies; a code
signed by another key, tampered with, malformed or expired is refused with
InvalidActivationCode."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from libs.activation_code import mint, verify
from libs.errors import InvalidActivationCode, InvalidArgument


def test_a_minted_code_verifies_with_its_public_key() -> None:
    key = Ed25519PrivateKey.generate()
    expires = int(time.time()) + 60
    claims = verify(mint(key, expires, "acme"), key.public_key(), time.time())
    assert (claims.customer, claims.expires) == ("acme", expires)
    assert len(claims.id) == 16


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("", "empty"),
        ("pach1.abc", "malformed"),
        ("pach2.a.b", "malformed"),
        ("pach1.!!!.???", "bad base64"),
        ("x" * 5000, "longer than"),
    ],
)
def test_malformed_codes_are_refused(code: str, why: str) -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(InvalidActivationCode, match=why):
        verify(code, key.public_key(), time.time())


def test_foreign_tampered_and_expired_codes_are_refused() -> None:
    ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    later = int(time.time()) + 60
    with pytest.raises(InvalidActivationCode, match="not signed by the key"):
        verify(mint(theirs, later), ours.public_key(), time.time())
    head, _claims, sig = mint(ours, later).split(".")
    forged = mint(theirs, later + 10**6).split(".")[1]
    with pytest.raises(InvalidActivationCode, match="not signed by the key"):
        verify(f"{head}.{forged}.{sig}", ours.public_key(), time.time())
    with pytest.raises(InvalidActivationCode, match="expired"):
        verify(mint(ours, int(time.time()) - 1), ours.public_key(), time.time())
    assert issubclass(InvalidActivationCode, InvalidArgument)
