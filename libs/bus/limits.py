"""What nats-server refuses, refused before it is sent.

nats-server answers a protocol line longer than its ``max_control_line``
(4096 bytes by default: ``HPUB <subject> <reply> <header bytes> <total
bytes>``) or a message over ``max_payload`` (headers included) with an error
and closes the connection: every request of the process that sent it would
then fail. ``guard`` makes a connection check each publish and subscribe
first and raise ``InvalidArgument`` naming what is too long instead, so one
bad request (a 4,100-character repo name in an event subject) fails alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from nats.aio.client import Client

from libs.errors import InvalidArgument, MessageTooLarge

# nats-server's default max_control_line; a protocol line (without its CRLF)
# must stay within it.
MAX_CONTROL_LINE = 4096
_HEADER_LINE = len("NATS/1.0\r\n") + len("\r\n")
_guarded: weakref.WeakSet[Client] = weakref.WeakSet()


class SubjectTooLong(InvalidArgument):
    code = "subject_too_long"


def _shown(subject: str) -> str:
    return subject if len(subject) <= 60 else f"{subject[:48]}...({len(subject)} characters)"


def header_bytes(headers: Mapping[str, str] | None) -> int:
    """The size of ``headers`` as NATS sends them (0 without any)."""
    if not headers:
        return 0
    return _HEADER_LINE + sum(
        len(k.encode()) + len(str(v).encode()) + 4 for k, v in headers.items()
    )


def check_publish(
    subject: str,
    reply: str = "",
    headers: Mapping[str, str] | None = None,
    payload_bytes: int = 0,
    *,
    max_payload: int,
    max_control_line: int = MAX_CONTROL_LINE,
) -> None:
    """Raise ``InvalidArgument`` if nats-server would refuse this message
    (and close the connection that sent it)."""
    hdr = header_bytes(headers)
    line = f"HPUB {subject} {reply} {hdr} {hdr + payload_bytes}".encode()
    if len(line) > max_control_line:
        raise SubjectTooLong(
            f"NATS subject {_shown(subject)} is too long: its protocol line would be "
            f"{len(line)} bytes, over the server's limit of {max_control_line}",
            size=len(line),
            limit=max_control_line,
        )
    if max_payload > 0 and hdr > max_payload:
        raise MessageTooLarge(hdr, max_payload, f"the headers of a message to {_shown(subject)}")
    if max_payload > 0 and hdr + payload_bytes > max_payload:
        raise MessageTooLarge(
            hdr + payload_bytes, max_payload, f"a message to {_shown(subject)} (with headers)"
        )


def check_subscribe(
    subject: str, queue: str = "", *, max_control_line: int = MAX_CONTROL_LINE
) -> None:
    line = f"SUB {subject} {queue} 18446744073709551615".encode()
    if len(line) > max_control_line:
        raise SubjectTooLong(
            f"NATS subject {_shown(subject)} is too long to subscribe to: "
            f"{len(line)} bytes, over the server's limit of {max_control_line}",
            size=len(line),
            limit=max_control_line,
        )


def guard(nc: Client, *, max_control_line: int = MAX_CONTROL_LINE) -> Client:
    """Have ``nc`` check every publish (requests and JetStream calls go
    through it too) and subscribe first. Idempotent; returns ``nc``."""
    if nc in _guarded:
        return nc
    publish = nc.publish
    subscribe = nc.subscribe

    async def guarded_publish(
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        check_publish(
            subject,
            reply,
            headers,
            len(payload),
            max_payload=nc.max_payload,
            max_control_line=max_control_line,
        )
        await publish(subject, payload, reply=reply, headers=headers)

    async def guarded_subscribe(subject: str, queue: str = "", **kwargs: Any) -> Any:
        check_subscribe(subject, queue, max_control_line=max_control_line)
        return await subscribe(subject, queue, **kwargs)

    setattr(nc, "publish", guarded_publish)  # noqa: B010 - an instance's own method
    setattr(nc, "subscribe", guarded_subscribe)  # noqa: B010
    _guarded.add(nc)
    return nc
