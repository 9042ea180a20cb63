"""The push webhook's signature check and payload reading (pure parts)."""

from __future__ import annotations

import hmac
import json

import pytest

from libs.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.gateway.app.githook import parse_push, verify

BODY = json.dumps(
    {"ref": "refs/heads/main", "after": "A" * 40, "repository": {"clone_url": "https://h/r.git"}}
).encode()


def sig(secret: bytes, body: bytes, algo: str = "sha256") -> str:
    return f"{algo}=" + hmac.new(secret, body, algo).hexdigest()


def test_signatures() -> None:
    verify(b"k", BODY, {"X-Hub-Signature-256": sig(b"k", BODY)})
    verify(b"k", BODY, {"X-Hub-Signature": sig(b"k", BODY, "sha1")})
    with pytest.raises(Unauthenticated):
        verify(b"k", BODY, {})
    with pytest.raises(PermissionDenied, match="does not match"):
        verify(b"k", BODY, {"X-Hub-Signature-256": sig(b"other", BODY)})
    with pytest.raises(PermissionDenied, match="does not match"):
        verify(b"k", BODY + b" ", {"X-Hub-Signature-256": sig(b"k", BODY)})
    # A SHA-1 header cannot stand in for a wrong SHA-256 one.
    headers = {"X-Hub-Signature-256": "sha256=00", "X-Hub-Signature": sig(b"k", BODY, "sha1")}
    with pytest.raises(PermissionDenied):
        verify(b"k", BODY, headers)
    with pytest.raises(PermissionDenied, match="no secret"):
        verify(b"", BODY, {"X-Hub-Signature-256": sig(b"", BODY)})


def test_payloads() -> None:
    push = parse_push(BODY, "application/json")
    assert (push.branch, push.after, push.urls) == ("main", "a" * 40, ("https://h/r.git",))
    form = b"payload=" + BODY.replace(b" ", b"+")
    assert parse_push(form, "application/x-www-form-urlencoded").branch == "main"
    assert parse_push(BODY.replace(b"refs/heads", b"refs/tags"), "application/json").branch is None
    for bad in (b"{", b"[]", b'{"ref": "x"}', b'{"ref": "x", "after": "y", "repository": {}}'):
        with pytest.raises(InvalidArgument):
            parse_push(bad, "application/json")
