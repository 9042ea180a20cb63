"""``put-file`` from a URL: the files a ``PutFileRequest.url`` names, each a
stream of byte blocks read as they are stored (never a whole file in memory).

* ``http://`` / ``https://``: one file, the body of a GET (aiohttp).
* ``gs://bucket/key``, ``as://container/key``, ``wasb://container@account...``:
  as ``s3://``, with the cluster's GCS / Azure settings
  (``libs.objects.cloud``).
* ``s3://bucket/key``: one object; with ``recursive``, every object under
  the prefix ``key`` (``s3://bucket`` for the whole bucket), each named by
  its key relative to the prefix. Credentials, region and endpoint come from
  the AWS variables the gateway sees (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``).

``url_files(url, recursive)`` yields ``(name, blocks)`` pairs: ``name`` is
``""`` for a single file, else the path below the put path; consume each
``blocks`` before asking for the next pair. Failures are typed errors that
name the URL: a missing object, bucket or page is ``NotFound``, refused
access ``PermissionDenied``, an unreachable or failing server
``Unavailable``, a URL we cannot read ``InvalidArgument``. No message
carries a byte the remote server sent.

An http(s) fetch reaches public addresses only (``services.gateway.app.
url_policy``): the host name is resolved, every address checked, and the
connection made to a checked address (the check sits in the resolver the
client connects with, so a name cannot resolve to something else in
between); redirects are followed one by one under the same check. A refused
host is ``PermissionDenied`` before any connection, so refused and open
ports look the same. ``s3://`` goes to the S3 endpoint the operator set."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import aiohttp
import botocore.exceptions
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from botocore.config import Config as BotoConfig

from libs.errors import InvalidArgument, NotFound, PachError, PermissionDenied, Unavailable
from libs.objects.cloud import CLOUD_SCHEMES, CloudConfig, open_bucket, parse_cloud_url
from services.gateway.app.url_policy import UrlPolicy

# Bytes per block handed on to the file writer.
BLOCK = 1 << 20
# Keys per S3 listing page.
LIST_PAGE = 1000
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)

Blocks = AsyncGenerator[bytes, None]
Files = AsyncGenerator[tuple[str, Blocks], None]


def url_files(url: str, recursive: bool, policy: UrlPolicy | None = None) -> Files:
    """The files ``url`` names (see the module doc); InvalidArgument for a
    scheme other than http, https and s3. ``policy`` says which hosts an
    http(s) URL may reach (by default the environment's)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return _one(_http_blocks(url, policy or UrlPolicy.from_env()))
    if scheme == "s3":
        return _s3_files(url, recursive)
    if scheme in (*CLOUD_SCHEMES, "wasbs"):
        return _cloud_files(url, recursive)
    raise InvalidArgument(
        f"put-file from {shown(url)}: unsupported URL scheme {scheme or '(none)'!r}; "
        "use http://, https://, s3://, gs://, as:// or wasb://",
        url=shown(url),
    )


def shown(url: str) -> str:
    """``url`` without a password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


async def _one(blocks: Blocks) -> Files:
    yield "", blocks


# --- http(s) -----------------------------------------------------------------


class _CheckedResolver(AbstractResolver):
    """Resolves a name and refuses it unless every address is allowed; the
    client connects to the addresses it returns, and only to those."""

    def __init__(self, policy: UrlPolicy, where: str) -> None:
        self._policy = policy
        self._where = where
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        self._policy.check_resolved(self._where, host, port, [r["host"] for r in found])
        return found

    async def close(self) -> None:
        await self._inner.close()


async def _http_blocks(url: str, policy: UrlPolicy) -> Blocks:
    where = shown(url)
    connector = aiohttp.TCPConnector(
        resolver=_CheckedResolver(policy, where), use_dns_cache=False, force_close=True
    )
    try:
        async with aiohttp.ClientSession(
            timeout=_HTTP_TIMEOUT, connector=connector, trust_env=False
        ) as session:
            current = url
            for _ in range(MAX_REDIRECTS + 1):
                policy.check_url(where, current)  # an address literal: no resolver runs
                async with session.get(current, allow_redirects=False) as resp:
                    location = resp.headers.get("Location")
                    if resp.status in _REDIRECTS and location:
                        try:
                            current = str(resp.url.join(yarl.URL(location)))
                        except ValueError:
                            raise Unavailable(
                                f"put-file from {where}: the server redirects to a bad URL",
                                url=where,
                            ) from None
                        if urlsplit(current).scheme.lower() not in ("http", "https"):
                            raise PermissionDenied(
                                f"put-file from {where}: refused: it redirects to a "
                                f"{urlsplit(current).scheme or 'relative'} URL",
                                url=where,
                            )
                        continue
                    if not 200 <= resp.status < 300:
                        raise _http_status_error(where, resp.status)
                    async for block in resp.content.iter_chunked(BLOCK):
                        yield block
                    return
            raise Unavailable(
                f"put-file from {where}: more than {MAX_REDIRECTS} redirects", url=where
            )
    except PachError:
        raise
    except (aiohttp.InvalidURL, ValueError) as exc:
        raise InvalidArgument(f"put-file from {where}: invalid URL: {exc}", url=where) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unavailable(f"put-file from {where}: {_why(exc)}", url=where) from None


def _why(exc: BaseException) -> str:
    """What went wrong, in our words: never the remote server's bytes."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to the server ({reason})"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "the server closed the connection before the whole answer"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "the server did not answer with valid HTTP"
    return f"the fetch failed ({type(exc).__name__})"


def _http_status_error(where: str, status: int) -> PachError:
    message = f"put-file from {where}: the server answered HTTP {status}"
    kind: Callable[..., PachError]
    if status in (404, 410):
        kind = NotFound
    elif status in (401, 403):
        kind = PermissionDenied
    elif status >= 500:
        kind = Unavailable
    else:
        kind = InvalidArgument
    return kind(message, url=where, status=status)


# --- s3 ------------------------------------------------------------------------


def _s3_location(url: str, recursive: bool) -> tuple[str, str]:
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket:
        raise InvalidArgument(f"put-file from {url}: no bucket; use s3://bucket/key", url=url)
    if not recursive and (not key or key.endswith("/")):
        raise InvalidArgument(
            f"put-file from {url}: names a prefix, not an object; put it with --recursive",
            url=url,
        )
    return bucket, key


async def _s3_files(url: str, recursive: bool) -> Files:
    bucket, key = _s3_location(url, recursive)
    async with _s3_client(url) as s3:
        if not recursive:
            yield "", _s3_blocks(s3, url, bucket, key)
            return
        prefix = key.rstrip("/") + "/" if key else ""
        found = False
        async with contextlib.aclosing(_s3_keys(s3, url, bucket, prefix)) as keys:
            async for name in keys:
                if name.endswith("/"):
                    continue  # a "directory marker": not a file
                found = True
                yield name[len(prefix) :], _s3_blocks(s3, f"s3://{bucket}/{name}", bucket, name)
        if not found:
            raise NotFound(f"put-file from {url}: no objects under this prefix", url=url)


def _s3_client(url: str) -> Any:
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    config = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        # S3-compatible servers reject botocore's newer CRC trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = aioboto3.Session(region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    return session.client("s3", endpoint_url=endpoint, config=config)


async def _s3_keys(s3: Any, url: str, bucket: str, prefix: str) -> AsyncGenerator[str, None]:
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE}
    )
    try:
        async for page in pages:
            for item in page.get("Contents", ()):
                yield str(item["Key"])
    except Exception as exc:
        raise _s3_error(url, bucket, exc) from None


async def _s3_blocks(s3: Any, url: str, bucket: str, key: str) -> Blocks:
    try:
        resp = await s3.get_object(Bucket=bucket, Key=key)
        body = resp["Body"]
        try:
            async for block in body.iter_chunks(BLOCK):
                yield block
        finally:
            body.close()
    except Exception as exc:
        raise _s3_error(url, bucket, exc) from None


def _s3_error(url: str, bucket: str, exc: Exception) -> PachError:
    if isinstance(exc, PachError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if code == "NoSuchBucket":
            return NotFound(f"put-file from {url}: bucket {bucket!r} does not exist", url=url)
        if code in ("NoSuchKey", "NotFound") or status == 404:
            return NotFound(f"put-file from {url}: no such object", url=url)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status in (
            401,
            403,
        ):
            return PermissionDenied(f"put-file from {url}: access denied ({code})", url=url)
        return Unavailable(f"put-file from {url}: S3 error {code or status}: {exc}", url=url)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return PermissionDenied(
            f"put-file from {url}: no S3 credentials (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY for the gateway)",
            url=url,
        )
    return Unavailable(f"put-file from {url}: {type(exc).__name__}: {exc}", url=url)


# --- gs, as, wasb ----------------------------------------------------------------


async def _cloud_files(url: str, recursive: bool) -> Files:
    cfg = CloudConfig.from_env()
    loc = parse_cloud_url(url, cfg)
    if not recursive and (not loc.key or loc.key.endswith("/")):
        raise InvalidArgument(
            f"put-file from {url}: names a prefix, not an object; put it with --recursive",
            url=url,
        )
    bucket = open_bucket(loc, url, cfg)
    try:
        if not recursive:
            yield "", bucket.read(loc.key)
            return
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        found = False
        async with contextlib.aclosing(bucket.keys(prefix)) as keys:
            async for name in keys:
                if name.endswith("/"):
                    continue  # a "directory marker": not a file
                found = True
                yield name[len(prefix) :], bucket.read(name)
        if not found:
            raise NotFound(f"put-file from {url}: no objects under this prefix", url=url)
    finally:
        await bucket.close()
