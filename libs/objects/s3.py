"""``S3ObjectStore``: objects in an S3 bucket (AWS, Ceph radosgw, MinIO, moto…).

One aioboto3 client per store, opened on first use and closed by ``close()``.
Streams above ``part_size`` go up as multipart uploads (parts uploaded
``part_concurrency`` at a time; the upload is aborted if anything fails, so
no partial object and no orphaned parts remain). Reads use ``Range: bytes=``.
Errors come out typed: a missing key is ObjectNotFound, a server that cannot
be reached (or answers 5xx / SlowDown) is Unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

import aioboto3
import aiohttp
import botocore.exceptions
from botocore.config import Config as BotoConfig

from libs.errors import Internal, InvalidArgument, NotFound, ObjectNotFound, Unavailable
from libs.objects.base import ObjectInfo, ObjectStore
from libs.objects.keys import check_block_size, check_key, check_prefix, check_range

PART_SIZE = 8 << 20
MIN_PART_SIZE = 5 << 20  # S3's floor for every part but the last
_MISSING = {"NoSuchKey", "404", "NotFound"}
_RETRYABLE = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"}
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.ResponseStreamingError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


class S3ObjectStore(ObjectStore):
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        *,
        part_size: int = PART_SIZE,
        part_concurrency: int = 4,
        max_connections: int = 16,
        list_page_size: int = 1000,
        max_attempts: int = 3,
    ) -> None:
        if not bucket:
            raise InvalidArgument("S3 object store needs a bucket name")
        if part_size < MIN_PART_SIZE:
            raise InvalidArgument(
                f"S3 part size must be >= {MIN_PART_SIZE} bytes, got {part_size}",
                part_size=part_size,
            )
        if part_concurrency < 1:
            raise InvalidArgument(
                f"S3 part concurrency must be >= 1, got {part_concurrency}",
                part_concurrency=part_concurrency,
            )
        if not 1 <= list_page_size <= 1000:
            raise InvalidArgument(
                f"S3 list page size must be 1..1000, got {list_page_size}",
                list_page_size=list_page_size,
            )
        self._page_size = list_page_size
        if prefix:
            prefix = prefix if prefix.endswith("/") else prefix + "/"
            check_key(prefix[:-1])
        self._bucket = bucket
        self._prefix = prefix
        self._part_size = part_size
        self._part_concurrency = part_concurrency
        self._endpoint_url = endpoint_url or None
        self._session = aioboto3.Session(
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region or "us-east-1",
        )
        self._boto_config = BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": max(1, max_attempts), "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=max_connections,
            # Plain S3 checksums: S3-compatible servers (radosgw, older MinIO)
            # reject the newer CRC trailers botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    @property
    def bucket(self) -> str:
        return self._bucket

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    with _mapped("connect", self._bucket):
                        self._client = await stack.enter_async_context(
                            self._session.client(
                                "s3", endpoint_url=self._endpoint_url, config=self._boto_config
                            )
                        )
                    self._stack = stack
        return self._client

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet (idempotent)."""
        s3 = await self._s3()
        with _mapped("create bucket", self._bucket):
            try:
                await s3.head_bucket(Bucket=self._bucket)
                return
            except botocore.exceptions.ClientError as exc:
                if _code(exc) not in _MISSING and _code(exc) != "NoSuchBucket":
                    raise
            try:
                await s3.create_bucket(Bucket=self._bucket)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # --- writes -------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        full = self._key(key)
        _check_block(key, data)
        s3 = await self._s3()
        with _mapped("put", key):
            await s3.put_object(Bucket=self._bucket, Key=full, Body=bytes(data))

    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        full = self._key(key)
        s3 = await self._s3()
        buf = bytearray()
        total = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        inflight: deque[asyncio.Task[dict[str, Any]]] = deque()

        async def upload(number: int, body: bytes) -> dict[str, Any]:
            with _mapped("upload part", key):
                resp = await s3.upload_part(
                    Bucket=self._bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
                )
            return {"PartNumber": number, "ETag": resp["ETag"]}

        async def start_part(body: bytes) -> None:
            nonlocal upload_id
            if upload_id is None:
                with _mapped("start multipart upload", key):
                    resp = await s3.create_multipart_upload(Bucket=self._bucket, Key=full)
                upload_id = str(resp["UploadId"])
            number = len(parts) + len(inflight) + 1
            inflight.append(asyncio.create_task(upload(number, body)))
            while len(inflight) >= self._part_concurrency:
                parts.append(await inflight.popleft())

        try:
            async for block in blocks:
                _check_block(key, block)
                total += len(block)
                buf += block
                while len(buf) >= self._part_size:
                    with memoryview(buf) as view, view[: self._part_size] as head:
                        body = bytes(head)
                    del buf[: self._part_size]
                    await start_part(body)
            if upload_id is None:
                with _mapped("put", key):
                    await s3.put_object(Bucket=self._bucket, Key=full, Body=bytes(buf))
                return total
            if buf:
                await start_part(bytes(buf))
                buf = bytearray()
            while inflight:
                parts.append(await inflight.popleft())
            with _mapped("complete multipart upload", key):
                await s3.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            return total
        except BaseException:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            if upload_id is not None:
                await asyncio.shield(self._abort(full, upload_id))
            raise

    async def _abort(self, full: str, upload_id: str) -> None:
        s3 = await self._s3()
        with contextlib.suppress(Exception):
            await s3.abort_multipart_upload(Bucket=self._bucket, Key=full, UploadId=upload_id)

    async def delete(self, key: str) -> None:
        full = self._key(key)
        s3 = await self._s3()
        with _mapped("delete", key):
            await s3.delete_object(Bucket=self._bucket, Key=full)

    # --- reads --------------------------------------------------------------

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        parts = [b async for b in self.get_stream(key, offset, length, block_size=8 << 20)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        check_range(offset, length)
        check_block_size(block_size)
        full = self._key(key)
        if length == 0:
            await self.stat(key)  # still ObjectNotFound for a missing key
            return
        s3 = await self._s3()
        args: dict[str, Any] = {"Bucket": self._bucket, "Key": full}
        if offset or length is not None:
            last = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{last}"
        with _mapped("get", key):
            try:
                resp = await s3.get_object(**args)
            except botocore.exceptions.ClientError as exc:
                if _code(exc) == "InvalidRange":
                    return  # the object exists; the range starts past its end
                raise
        body = resp["Body"]
        done = False
        try:
            buf = bytearray()
            while True:
                with _mapped("get", key):
                    data = await body.read(block_size - len(buf))
                if not data:
                    break
                if not buf and len(data) == block_size:
                    yield data
                    continue
                buf += data
                if len(buf) >= block_size:
                    yield bytes(buf)
                    buf = bytearray()
            done = True
            if buf:
                yield bytes(buf)
        finally:
            if not done:
                body.close()

    async def touch(self, key: str) -> bool:
        """Copy the object onto itself (``MetadataDirective`` REPLACE): S3
        has no other way to renew ``LastModified``."""
        full = self._key(key)
        s3 = await self._s3()
        try:
            with _mapped("touch", key):
                await s3.copy_object(
                    Bucket=self._bucket,
                    Key=full,
                    CopySource={"Bucket": self._bucket, "Key": full},
                    MetadataDirective="REPLACE",
                )
        except ObjectNotFound:
            return False
        return True

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        full = self._key(key)
        s3 = await self._s3()
        with _mapped("stat", key):
            resp = await s3.head_object(Bucket=self._bucket, Key=full)
        return ObjectInfo(
            key=key, size=int(resp["ContentLength"]), modified=_seconds(resp.get("LastModified"))
        )

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self._bucket,
            Prefix=self._prefix + prefix,
            PaginationConfig={"PageSize": self._page_size},
        )
        strip = len(self._prefix)
        iterator = pages.__aiter__()
        while True:
            with _mapped("list", prefix):
                try:
                    page = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            for obj in page.get("Contents", ()):
                yield ObjectInfo(
                    key=obj["Key"][strip:],
                    size=int(obj["Size"]),
                    modified=_seconds(obj.get("LastModified")),
                )


def _check_block(key: str, block: object) -> None:
    if not isinstance(block, bytes | bytearray | memoryview):
        raise InvalidArgument(
            f"object {key!r}: data blocks must be bytes, got {type(block).__name__}", key=key
        )


def _seconds(when: Any) -> float:
    """S3's ``LastModified`` (a datetime) as unix seconds; 0 when missing."""
    return float(when.timestamp()) if isinstance(when, datetime.datetime) else 0.0


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _mapped(op: str, key: str) -> Iterator[None]:
    """Turn botocore/aiohttp failures into this project's typed errors."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING:
            raise ObjectNotFound(key) from None
        if code == "NoSuchBucket":
            raise NotFound(f"S3 bucket does not exist ({op} {key!r})", key=key) from None
        if code in _RETRYABLE or (isinstance(status, int) and status >= 500):
            raise Unavailable(f"S3 {op} {key!r} failed: {code} (retry later)", key=key) from exc
        raise Internal(f"S3 {op} {key!r} failed: {code}: {exc}", key=key, code=code) from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise Unavailable(f"S3 {op} {key!r}: no credentials configured", key=key) from exc
    except _CONNECTION_ERRORS as exc:
        raise Unavailable(f"S3 {op} {key!r}: cannot reach the server: {exc}", key=key) from exc
