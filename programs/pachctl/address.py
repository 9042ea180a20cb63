"""Where pachd is: ``PACHD_ADDRESS`` (``host:port`` or ``grpc://host:port``),
by default ``localhost:30650``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from libs.errors import InvalidArgument

DEFAULT_ADDRESS = "localhost:30650"


class Address(NamedTuple):  # not a dataclass: ``dataclasses`` costs ~10 ms to load
    host: str
    port: int

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.target


def parse_address(raw: str) -> Address:
    text = raw.strip()
    for scheme in ("grpc://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.rstrip("/")
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text:
        raise InvalidArgument(
            f"PACHD_ADDRESS must be host:port or grpc://host:port, got {raw!r}",
            name="PACHD_ADDRESS",
        )
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise InvalidArgument(
            f"PACHD_ADDRESS has a bad port {port_text!r} (in {raw!r})", name="PACHD_ADDRESS"
        )
    return Address(host, port)


def from_env(env: Mapping[str, str] | None = None) -> Address:
    e: Mapping[str, str] = os.environ if env is None else env
    return parse_address(e.get("PACHD_ADDRESS", "") or DEFAULT_ADDRESS)
