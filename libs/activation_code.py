"""Enterprise activation codes: what they say, how they are signed and how a
cluster checks them. Shared by the enterprise service (verify) and pachctl's
hidden ``enterprise mint-code`` (sign).

A code is ``pach1.<claims>.<signature>``: the claims are canonical JSON
``{"id", "customer", "expires"}`` (expires in unix seconds), base64url
without padding, and the signature is Ed25519 over ``pach1.<claims>``. A
cluster trusts the public key ``PACH_ENTERPRISE_PUBLIC_KEY`` names (a PEM
file as ``openssl pkey -pubout`` writes it)."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from libs.errors import FailedPrecondition, InvalidActivationCode, InvalidArgument

PREFIX = "pach1"
MAX_CODE_CHARS = 4096


@dataclass(frozen=True)
class Claims:
    id: str
    customer: str
    expires: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidActivationCode("activation code is malformed: bad base64") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgument(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise FailedPrecondition(f"cannot read the enterprise public key {path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise FailedPrecondition(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise FailedPrecondition(f"{path}: not an Ed25519 public key")
    return key


def mint(key: Ed25519PrivateKey, expires: int, customer: str = "") -> str:
    claims = {"customer": customer, "expires": int(expires), "id": secrets.token_hex(8)}
    body = f"{PREFIX}.{_b64(json.dumps(claims, sort_keys=True, separators=(',', ':')).encode())}"
    return f"{body}.{_b64(key.sign(body.encode()))}"


def verify(code: str, key: Ed25519PublicKey, now: float) -> Claims:
    """The claims of a code signed by ``key`` that has not expired."""
    code = code.strip()
    if not code:
        raise InvalidActivationCode("activation code is empty")
    if len(code) > MAX_CODE_CHARS:
        raise InvalidActivationCode(f"activation code is longer than {MAX_CODE_CHARS} characters")
    parts = code.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidActivationCode(
            f"activation code is malformed: expected {PREFIX}.<claims>.<sig>"
        )
    try:
        key.verify(_unb64(parts[2]), f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise InvalidActivationCode(
            "activation code is not signed by the key this cluster trusts"
        ) from None
    try:
        raw = json.loads(_unb64(parts[1]))
        claims = Claims(str(raw["id"]), str(raw.get("customer", "")), int(raw["expires"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidActivationCode("activation code is malformed: bad claims") from None
    if claims.expires <= now:
        raise InvalidActivationCode(f"activation code expired at unix time {claims.expires}")
    return claims
