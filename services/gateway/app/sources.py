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
``Unavailable``, a URL we cannot read ``InvalidArgument``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import aiohttp
import botocore.exceptions
from botocore.config import Config as BotoConfig

from libs.errors import InvalidArgument, NotFound, PachError, PermissionDenied, Unavailable
from libs.objects.cloud import CLOUD_SCHEMES, CloudConfig, open_bucket, parse_cloud_url

# Bytes per block handed on to the file writer.
BLOCK = 1 << 20
# Keys per S3 listing page.
LIST_PAGE = 1000
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)

Blocks = AsyncGenerator[bytes, None]
Files = AsyncGenerator[tuple[str, Blocks], None]


def url_files(url: str, recursive: bool) -> Files:
    """The files ``url`` names (see the module doc); InvalidArgument for a
    scheme other than http, https and s3."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return _one(_http_blocks(url))
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


async def _http_blocks(url: str) -> Blocks:
    where = shown(url)
    try:
        async with (
            aiohttp.ClientSession(timeout=_HTTP_TIMEOUT) as session,
            session.get(url) as resp,
        ):
            if not 200 <= resp.status < 300:
                raise _http_status_error(where, resp.status, resp.reason or "")
            async for block in resp.content.iter_chunked(BLOCK):
                yield block
    except aiohttp.InvalidURL as exc:
        raise InvalidArgument(f"put-file from {where}: invalid URL: {exc}", url=where) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unavailable(
            f"put-file from {where}: {type(exc).__name__}: {exc}", url=where
        ) from None


def _http_status_error(where: str, status: int, reason: str) -> PachError:
    message = f"put-file from {where}: the server answered {status} {reason}".rstrip()
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
