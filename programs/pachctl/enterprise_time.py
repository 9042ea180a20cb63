"""Durations on pachctl's command lines (``--ttl 30d``, ``--expires 12h``)."""

from __future__ import annotations

import re

from libs.errors import InvalidArgument

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str, flag: str) -> int:
    m = _DURATION.match(text.strip())
    if not m:
        raise InvalidArgument(f"bad {flag} {text!r}: a duration such as 30d, 12h, 90m or 45s")
    return int(m.group(1)) * _UNIT[m.group(2)]
