"""What keeps a web page the user happens to visit from using the gateway's
HTTP front behind the user's back (docs/decisions/0018-safe-surfaces.md).
One aiohttp middleware and one response hook, for every route:

- **Host** must be a name this gateway answers to: ``localhost``, an IP
  literal (an attacker cannot rebind an address, only a name), the bind
  address, or one of ``PACH_HTTP_ALLOWED_HOSTS`` (comma-separated names).
  Any other name is a DNS-rebinding page: 403.
- **Origin**, when a browser sends one, must be this same origin (scheme
  aside: host and port as the ``Host`` header says); a foreign one is 403.
- A **POST** must carry a content type that a cross-site form or a
  ``no-cors`` fetch cannot send without a CORS preflight: ``application/json``
  for the JSON API, and anything but ``application/x-www-form-urlencoded``,
  ``multipart/form-data``, ``text/plain`` or none for a file upload. PUT and
  DELETE always need a preflight, which no CORS header here ever grants.
- A route that checks a signature on every request (the git push webhook,
  ``SIGNED_PATHS``) is exempt from the Host and content-type rules.
- GET and HEAD never change state (the JSON API answers 405 for a command
  asked with GET; see ``api.py``).
- Every response says ``Content-Security-Policy: default-src 'self';
  frame-ancestors 'none'`` (a file from a repo, under ``/pfs/``, gets a
  sandbox of its own with no script at all), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: same-origin`` and ``X-Frame-Options: DENY``; no
  ``Access-Control-Allow-*`` header is ever sent.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from libs.config import Config
from libs.errors import PermissionDenied

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Files served from repos are anyone's bytes (an .html a pipeline wrote):
# shown in a sandbox of their own origin, never running script as ours.
FILE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; sandbox; frame-ancestors 'none'"
)
# Routes that authenticate each request by its own signature (git inputs'
# push webhook, HMAC-signed by the git host, which posts form-encoded or
# JSON bodies under the public name it was given): no page can forge one,
# so the Host and content-type rules do not apply; Origin still does.
SIGNED_PATHS = frozenset({"/v1/handle/push"})
# What a cross-site <form> (or a no-cors fetch) may send without a preflight.
SIMPLE_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain", "")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class GuardSettings:
    """The names the HTTP front answers to besides localhost and IP literals."""

    allowed_hosts: frozenset[str]

    @classmethod
    def from_env(cls, cfg: Config, env: Mapping[str, str] | None = None) -> GuardSettings:
        e: Mapping[str, str] = os.environ if env is None else env
        names = {"localhost", _bare(cfg.grpc_host)}
        names.update(
            _bare(n.strip()) for n in e.get("PACH_HTTP_ALLOWED_HOSTS", "").split(",") if n.strip()
        )
        return cls(allowed_hosts=frozenset(n for n in names if n))


def _bare(host: str) -> str:
    """``Name:port`` / ``[::1]:port`` -> ``name`` / ``::1`` (lower case)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(settings: GuardSettings, host_header: str) -> bool:
    host = _bare(host_header).rstrip(".")
    return bool(host) and (_is_ip(host) or host in settings.allowed_hosts)


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    return host, port if port is not None else _DEFAULT_PORTS.get(scheme, 80)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``Origin: origin`` names the host and port the ``Host`` header
    does (the scheme aside: behind a TLS proxy the request reaches us as
    http)."""
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False  # "null" (a sandbox, a file) or something odd
    theirs = _host_port(parts.netloc, parts.scheme)
    return theirs is not None and theirs == _host_port(host_header, parts.scheme)


def _media_type(request: web.Request) -> str:
    raw = request.headers.get("Content-Type", "")
    return raw.split(";", 1)[0].strip().lower()


def _json_type(media: str) -> bool:
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def check(settings: GuardSettings, request: web.Request) -> None:
    """PermissionDenied (403) unless ``request`` may be served."""
    host = request.headers.get("Host")
    signed = request.path in SIGNED_PATHS
    if host is not None and not signed and not host_allowed(settings, host):
        raise PermissionDenied(
            f"HTTP Host {host!r} is not one this gateway answers to (localhost, an IP address, "
            "or a name in PACH_HTTP_ALLOWED_HOSTS): refused as a possible DNS-rebinding page",
            host=host,
        )
    origin = request.headers.get("Origin")
    if origin is not None and not (host is not None and same_origin(origin, host)):
        raise PermissionDenied(
            f"cross-origin request from Origin {origin!r} refused: the gateway serves its own "
            "pages only",
            origin=origin,
        )
    if request.method != "POST" or signed:
        return
    media = _media_type(request)
    if request.path.startswith("/pfs/"):
        if media in SIMPLE_TYPES:
            raise PermissionDenied(
                f"an upload by POST needs a Content-Type a cross-site form cannot send (such as "
                f"application/octet-stream), not {media or 'none'!r}; or use PUT",
                content_type=media,
            )
    elif not _json_type(media):
        raise PermissionDenied(
            f"a POST to {request.path} needs Content-Type: application/json, "
            f"not {media or 'none'!r}",
            content_type=media,
        )


def guard(settings: GuardSettings) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        check(settings, request)
        return await handler(request)

    return middleware


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response (errors, 404s, downloads too)."""
    if request.path.startswith("/pfs/"):
        response.headers["Content-Security-Policy"] = FILE_CSP
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    for name in list(response.headers):
        if name.lower().startswith("access-control-allow-"):
            del response.headers[name]
