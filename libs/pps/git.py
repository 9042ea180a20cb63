"""Git inputs: which repository URLs the cluster may fetch, and the names a
push webhook carries. Pure: no I/O (host names are not resolved).

``url_problem(url, allowed)`` is None for a URL the cluster may fetch, else
a one-line reason. Refused unless a prefix in ``allowed`` starts the URL:
``file://`` URLs and local paths, ``ext::`` and other transports than
``http``, ``https``, ``git`` and ``ssh`` (or ``user@host:path``), and hosts
that are loopback, link-local, private or unspecified addresses (or
``localhost``). ``allowed`` comes from ``PACH_GIT_ALLOWED_URLS`` (comma
separated prefixes, e.g. ``http://127.0.0.1:9418/``)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

ALLOWED_ENV = "PACH_GIT_ALLOWED_URLS"
_SCHEMES = ("http", "https", "git", "ssh")
_SCP = re.compile(r"^[A-Za-z0-9._-]+@(?P<host>[A-Za-z0-9.-]+):(?!//)\S+$")


def allowed_prefixes(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The allow-list from the environment (empty: none)."""
    raw = (os.environ if env is None else env).get(ALLOWED_ENV, "")
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _local_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip.is_reserved
    )


def url_problem(url: str, allowed: Sequence[str] = ()) -> str | None:
    """Why the cluster will not fetch ``url`` (None: it will)."""
    if any(url.startswith(prefix) for prefix in allowed):
        return None
    if not url or url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        return f"git URL {url!r} is malformed"
    scp = _SCP.match(url)
    if scp is not None:
        host = scp.group("host")
    else:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file" or not scheme or "::" in url.split("/", 1)[0]:
            return (
                f"git URL {url!r} names a local path: only remote repositories are fetched "
                f"(list a prefix in {ALLOWED_ENV} to allow it)"
            )
        if scheme not in _SCHEMES:
            return f"git URL {url!r}: scheme {scheme!r} is not one of {', '.join(_SCHEMES)}"
        host = parts.hostname or ""
    if _local_host(host):
        return (
            f"git URL {url!r} names a local or private host ({host or 'none'}): "
            f"list a prefix in {ALLOWED_ENV} to allow it"
        )
    return None


def same_repository(a: str, b: str) -> bool:
    """Whether two URLs name one repository (a trailing ``/`` or ``.git``
    and the scheme/host case do not count)."""

    def norm(url: str) -> str:
        url = url.strip().rstrip("/")
        url = url[: -len(".git")] if url.endswith(".git") else url
        parts = urlsplit(url)
        if parts.scheme:
            return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}"
        return url

    return bool(a) and bool(b) and norm(a) == norm(b)
