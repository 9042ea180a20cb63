"""Which hosts ``put-file`` from an http(s) URL may reach.

A URL is fetched by the gateway, inside the cluster's network: left open,
``put-file -f http://127.0.0.1:<port>/`` reads internal endpoints into a repo
and probes ports. So a URL's host must be a public address: every address
its name resolves to is checked, and refused when it is unspecified,
loopback, link-local (cloud metadata lives there), private (RFC 1918, ULA),
multicast, reserved or otherwise not global, or one of the cluster's own
addresses (the bind address, the NATS server's, this machine's names).

``PACH_URL_ALLOW`` lets an operator open what they trust, comma-separated:
an address (``127.0.0.1``), an address and port (``127.0.0.1:9000``,
``[::1]:9000``), a network (``10.0.0.0/8``) or a host name with or without a
port (``minio.internal:9000``: whatever it resolves to). The S3 endpoint the
cluster is configured with (``AWS_ENDPOINT_URL``, ``PACH_S3_ENDPOINT``) is
allowed too. Refusals are ``PermissionDenied``, one line naming the URL's
host and why."""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from libs.errors import InvalidArgument, PermissionDenied

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlPolicy:
    """Allowed networks (any port), addresses with a port, names (with a
    port or any: ``None``), and the cluster's own addresses (refused)."""

    networks: tuple[Net, ...] = ()
    addresses: frozenset[tuple[IP, int]] = frozenset()
    names: frozenset[tuple[str, int | None]] = frozenset()
    own: frozenset[IP] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> UrlPolicy:
        e: Mapping[str, str] = os.environ if env is None else env
        policy = parse_allow(e.get("PACH_URL_ALLOW", ""))
        networks, addresses, names = (
            list(policy.networks),
            set(policy.addresses),
            set(policy.names),
        )
        for var in ("AWS_ENDPOINT_URL", "PACH_S3_ENDPOINT"):
            endpoint = e.get(var, "")
            if endpoint:
                parts = urlsplit(endpoint)
                host = (parts.hostname or "").lower()
                try:
                    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
                except ValueError:
                    continue
                ip = _ip(host)
                if ip is not None:
                    addresses.add((ip, port))
                elif host:
                    names.add((host, port))
        own = set(_own_addresses(e))
        return cls(tuple(networks), frozenset(addresses), frozenset(names), frozenset(own))

    # --- checks ------------------------------------------------------------

    def check_url(self, where: str, url: str) -> None:
        """PermissionDenied when ``url``'s host is an address literal that is
        refused (names are checked as they resolve: ``check_resolved``)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if not host:
            raise InvalidArgument(f"put-file from {where}: the URL names no host", url=where)
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
        except ValueError:
            raise InvalidArgument(
                f"put-file from {where}: the URL's port is bad", url=where
            ) from None
        ip = _ip(host)
        if ip is not None:
            self.check_resolved(where, host, port, [str(ip)])

    def check_resolved(self, where: str, host: str, port: int, addresses: Iterable[str]) -> None:
        """PermissionDenied unless ``host`` is allowed by name or every one of
        its ``addresses`` is allowed."""
        name = host.lower().rstrip(".")
        if (name, port) in self.names or (name, None) in self.names:
            return
        for raw in addresses:
            ip = _ip(raw)
            if ip is None:
                raise PermissionDenied(
                    f"put-file from {where}: refused: host {host} resolves to {raw!r}, "
                    "not an IP address",
                    url=where,
                    host=host,
                )
            why = self.refusal(ip, port)
            if why is not None:
                shown = host if str(ip) == name.strip("[]") else f"{host} ({ip})"
                raise PermissionDenied(
                    f"put-file from {where}: refused: host {shown} is {why}; an operator can "
                    "allow it with PACH_URL_ALLOW",
                    url=where,
                    host=host,
                )

    def refusal(self, ip: IP, port: int) -> str | None:
        """Why ``ip`` (on ``port``) may not be fetched from; None if it may."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (ip, port) in self.addresses or any(ip in net for net in self.networks):
            return None
        why = _not_public(ip)
        if why is None and ip in self.own:
            return "one of the cluster's own addresses"
        return why


def _not_public(ip: IP) -> str | None:
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "not a public address"
    if isinstance(ip, ipaddress.IPv6Address) and (ip.sixtofour or ip.teredo):
        return "a tunnelled address"
    return None


def _ip(text: str) -> IP | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def parse_allow(raw: str) -> UrlPolicy:
    """``PACH_URL_ALLOW`` as a policy (InvalidArgument for a bad entry)."""
    networks: list[Net] = []
    addresses: set[tuple[IP, int]] = set()
    names: set[tuple[str, int | None]] = set()
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        if "/" in item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise _bad(item) from None
            continue
        ip = _ip(item)
        if ip is not None:
            networks.append(ipaddress.ip_network(ip))
            continue
        try:
            parts = urlsplit(f"//{item}")
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            raise _bad(item) from None
        if not host:
            raise _bad(item)
        ip = _ip(host)
        if ip is None:
            names.add((host.rstrip("."), port))
        elif port is None:
            networks.append(ipaddress.ip_network(ip))
        else:
            addresses.add((ip, port))
    return UrlPolicy(tuple(networks), frozenset(addresses), frozenset(names))


def _bad(item: str) -> InvalidArgument:
    return InvalidArgument(
        f"PACH_URL_ALLOW entry {item!r} is not an address, address:port, network "
        "(10.0.0.0/8) or host name[:port]",
        name="PACH_URL_ALLOW",
    )


def _own_addresses(env: Mapping[str, str]) -> Iterable[IP]:
    """The addresses this cluster is reached at: its bind address, the NATS
    server's, and what this machine's name resolves to."""
    hosts = [
        env.get("PACH_BIND_ADDRESS") or env.get("PACH_GRPC_HOST") or "",
        # every node of a NATS cluster (comma-separated URLs)
        *(urlsplit(u.strip()).hostname or "" for u in env.get("PACH_NATS_URL", "").split(",")),
    ]
    for host in hosts:
        ip = _ip(host)
        if ip is not None and not ip.is_unspecified:
            yield ip
    yield from _machine_addresses()


@functools.cache
def _machine_addresses() -> tuple[IP, ...]:
    """What this machine's name resolves to (looked up once per process)."""
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except OSError:
        return ()
    found = (_ip(str(info[4][0])) for info in infos)
    return tuple(ip for ip in found if ip is not None)
