"""Human sizes and ages, the way Pachyderm 1.7's CLI prints them (it uses
Docker's go-units: ``HumanDuration`` and ``BytesSize``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

if TYPE_CHECKING:
    from google.protobuf.message import Message

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(ts: Timestamp, now: float | None = None) -> str:
    """``3 seconds ago``; empty for an unset timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return ""
    now = time.time() if now is None else now
    return f"{human_duration(now - ts.ToNanoseconds() / 1e9)} ago"


def _go_g4(value: float) -> str:
    """Go's ``%.4g``: 4 significant digits, no trailing zeros."""
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        sign, digits = exp[0], exp[1:].lstrip("0")
        text = f"{mantissa}e{sign}{digits.zfill(2)}"
    return text


def size(n: float) -> str:
    """``0B``, ``1.5KiB``, ``2GiB``: powers of 1024, 4 significant digits."""
    unit = 0
    while n >= 1024 and unit < len(_BINARY) - 1:
        n /= 1024
        unit += 1
    return f"{_go_g4(n)}{_BINARY[unit]}"


def raw(msg: Message) -> str:
    """The ``--raw`` form: indented JSON of the message (protobuf JSON names)."""
    from google.protobuf.json_format import MessageToJson  # only for --raw

    return MessageToJson(msg, indent=2) + "\n"


def raw_all(msgs: list[Message]) -> str:
    return "".join(raw(m) for m in msgs) if msgs else ""


__all__ = ["ago", "human_duration", "raw", "raw_all", "size"]
