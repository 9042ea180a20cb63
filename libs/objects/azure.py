"""Azure Blob Storage (azure-storage-blob's asyncio client, shared-key
credentials): ``AzureObjectStore``, the cluster's object store when
``PACH_OBJECT_BACKEND=azure``, and ``AzureContainer``, the small adapter
behind ``as://`` / ``wasb://`` URLs (put-file ``-f``, egress).

Nothing is held whole. Writes above ``block_size`` are staged as blocks
(``block_concurrency`` at a time) and committed with one block list, so a
reader sees the old object or the new one, never a part; the blocks of a
failed write stay uncommitted (invisible; Azure discards them after a week).
Reads are ranged and come in pieces of at most 4 MiB; listings page.

Errors come out typed: a missing blob is ObjectNotFound, a missing container
NotFound, a refused key PermissionDenied, a server that cannot be reached
(or answers 5xx / ServerBusy) Unavailable. This module imports the SDK
(~0.3-4 s); ``libs.objects`` loads it only when the azure backend or an
Azure URL is used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import secrets
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from typing import Any

import aiohttp
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock
from azure.storage.blob.aio import BlobServiceClient

from libs.azure_names import check_account, check_account_key, check_container
from libs.errors import (
    Internal,
    InvalidArgument,
    NotFound,
    ObjectNotFound,
    PachError,
    PermissionDenied,
    Unavailable,
)
from libs.objects.base import ObjectInfo, ObjectStore
from libs.objects.keys import check_block_size, check_key, check_prefix, check_range

BLOCK_SIZE = 8 << 20
MAX_BLOCK_SIZE = 4000 << 20  # Azure's limit for one staged block
GET_PIECE = 4 << 20  # what one ranged read fetches (and holds) at most
_RETRYABLE = {"ServerBusy", "InternalError", "OperationTimedOut", "ServiceUnavailable"}
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ServiceRequestError,
    ServiceResponseError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
)


def service_client(endpoint: str, account: str, key: str, **options: Any) -> BlobServiceClient:
    """A blob service client (no connection is made until the first request)."""
    credential = {"account_name": account, "account_key": key}
    return BlobServiceClient(endpoint, credential=credential, **options)


class AzureObjectStore(ObjectStore):
    def __init__(
        self,
        container: str,
        *,
        account: str,
        key: str,
        endpoint: str = "",
        prefix: str = "",
        block_size: int = BLOCK_SIZE,
        block_concurrency: int = 4,
        list_page_size: int = 1000,
        max_attempts: int = 3,
    ) -> None:
        check_container(container)
        check_account(account)
        check_account_key(key)
        if not 1 <= block_size <= MAX_BLOCK_SIZE:
            raise InvalidArgument(
                f"Azure block size must be 1..{MAX_BLOCK_SIZE} bytes, got {block_size}",
                block_size=block_size,
            )
        if block_concurrency < 1:
            raise InvalidArgument(
                f"Azure block concurrency must be >= 1, got {block_concurrency}",
                block_concurrency=block_concurrency,
            )
        if not 1 <= list_page_size <= 5000:
            raise InvalidArgument(
                f"Azure list page size must be 1..5000, got {list_page_size}",
                list_page_size=list_page_size,
            )
        if prefix:
            prefix = prefix if prefix.endswith("/") else prefix + "/"
            check_key(prefix[:-1])
        self._name = container
        self._prefix = prefix
        self._block_size = block_size
        self._concurrency = block_concurrency
        self._page_size = list_page_size
        self._endpoint = endpoint or f"https://{account}.blob.core.windows.net"
        self._account = account
        self._key_secret = key
        self._attempts = max(1, max_attempts)
        self._service: BlobServiceClient | None = None

    @property
    def container(self) -> str:
        return self._name

    @property
    def prefix(self) -> str:
        return self._prefix

    def _client(self) -> Any:
        """The container's client; the service client is built on first use."""
        if self._service is None:
            self._service = service_client(
                self._endpoint,
                self._account,
                self._key_secret,
                retry_total=self._attempts - 1,
                initial_backoff=1,
                increment_base=2,
                connection_timeout=5,
                read_timeout=60,
                max_single_put_size=self._block_size,
                max_block_size=min(self._block_size, 100 << 20),
                max_single_get_size=GET_PIECE,
                max_chunk_get_size=GET_PIECE,
            )
        return self._service.get_container_client(self._name)

    def _blob(self, key: str) -> Any:
        return self._client().get_blob_client(self._prefix + check_key(key))

    async def close(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            await service.close()

    async def ensure_container(self) -> None:
        """Create the container if it does not exist yet (idempotent)."""
        with _mapped("create container", "", self._name), contextlib.suppress(ResourceExistsError):
            await self._client().create_container()

    # --- writes -------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        _check_block(key, data)
        body = bytes(data)
        with _mapped("put", key, self._name):
            await blob.upload_blob(body, length=len(body), overwrite=True)

    async def put_stream(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        blob = self._blob(key)
        # Every block id of one blob has the same length (Azure's rule); the
        # random part keeps two concurrent writers' uncommitted blocks apart.
        tag = secrets.token_hex(8)
        ids: list[str] = []
        inflight: deque[asyncio.Task[None]] = deque()
        buf = bytearray()
        total = 0

        async def stage(block_id: str, body: bytes) -> None:
            with _mapped("stage block", key, self._name):
                await blob.stage_block(block_id, body, length=len(body))

        async def start_block(body: bytes) -> None:
            block_id = base64.b64encode(f"{tag}-{len(ids):06d}".encode()).decode()
            ids.append(block_id)
            inflight.append(asyncio.create_task(stage(block_id, body)))
            while len(inflight) >= self._concurrency:
                await inflight.popleft()

        try:
            async for block in blocks:
                _check_block(key, block)
                total += len(block)
                buf += block
                while len(buf) >= self._block_size:
                    with memoryview(buf) as view, view[: self._block_size] as head:
                        body = bytes(head)
                    del buf[: self._block_size]
                    await start_block(body)
            if not ids:
                body = bytes(buf)
                with _mapped("put", key, self._name):
                    await blob.upload_blob(body, length=len(body), overwrite=True)
                return total
            if buf:
                await start_block(bytes(buf))
                buf = bytearray()
            while inflight:
                await inflight.popleft()
            with _mapped("commit block list", key, self._name):
                await blob.commit_block_list([BlobBlock(block_id=i) for i in ids])
            return total
        except BaseException:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            raise

    async def delete(self, key: str) -> None:
        blob = self._blob(key)
        with contextlib.suppress(ObjectNotFound), _mapped("delete", key, self._name):
            await blob.delete_blob()

    async def touch(self, key: str) -> bool:
        """Rewrite the blob's (empty) metadata: any write to a blob renews
        its ``Last-Modified``, and this one moves no data."""
        blob = self._blob(key)
        try:
            with _mapped("touch", key, self._name):
                await blob.set_blob_metadata({})
        except ObjectNotFound:
            return False
        return True

    async def delete_if_older(self, key: str, cutoff: float) -> bool:
        """Stat, then delete only if the blob is still the one stat saw (its
        ETag): a ``touch`` in between changes the ETag, so the delete is
        refused and the object stays."""
        blob = self._blob(key)
        try:
            with _mapped("stat", key, self._name):
                props = await blob.get_blob_properties()
        except ObjectNotFound:
            return False
        if _seconds(props.last_modified) >= cutoff:
            return False
        try:
            with _mapped("delete", key, self._name):
                await blob.delete_blob(
                    etag=props.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ObjectNotFound, _Changed):
            return False
        return True

    # --- reads --------------------------------------------------------------

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        parts = [b async for b in self.get_stream(key, offset, length, block_size=8 << 20)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def get_stream(
        self, key: str, offset: int = 0, length: int | None = None, block_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        check_range(offset, length)
        check_block_size(block_size)
        blob = self._blob(key)
        if length == 0:
            await self.stat(key)  # still ObjectNotFound for a missing key
            return
        with _mapped("get", key, self._name):
            try:
                download = await blob.download_blob(offset=offset, length=length)
            except HttpResponseError as exc:
                if exc.status_code == 416:
                    return  # the blob exists; the range starts past its end
                raise
        pieces = download.chunks().__aiter__()
        buf = bytearray()
        while True:
            with _mapped("get", key, self._name):
                try:
                    data = bytes(await pieces.__anext__())
                except StopAsyncIteration:
                    break
            if not buf and len(data) == block_size:
                yield data
                continue
            buf += data
            while len(buf) >= block_size:
                with memoryview(buf) as view, view[:block_size] as head:
                    out = bytes(head)
                del buf[:block_size]
                yield out
        if buf:
            yield bytes(buf)

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    async def stat(self, key: str) -> ObjectInfo:
        blob = self._blob(key)
        with _mapped("stat", key, self._name):
            props = await blob.get_blob_properties()
        return ObjectInfo(key=key, size=int(props.size), modified=_seconds(props.last_modified))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        check_prefix(prefix)
        blobs = self._client().list_blobs(
            name_starts_with=self._prefix + prefix or None, results_per_page=self._page_size
        )
        strip = len(self._prefix)
        iterator = blobs.__aiter__()
        while True:
            with _mapped("list", prefix, self._name):
                try:
                    props = await iterator.__anext__()
                except StopAsyncIteration:
                    return
            yield ObjectInfo(
                key=str(props.name)[strip:],
                size=int(props.size),
                modified=_seconds(props.last_modified),
            )


class _Changed(PachError):
    """A conditional request found the blob changed (HTTP 412)."""


def _check_block(key: str, block: object) -> None:
    if not isinstance(block, bytes | bytearray | memoryview):
        raise InvalidArgument(
            f"object {key!r}: data blocks must be bytes, got {type(block).__name__}", key=key
        )


def _seconds(when: Any) -> float:
    """A blob's ``last_modified`` (a datetime) as unix seconds; 0 when missing."""
    return float(when.timestamp()) if isinstance(when, datetime.datetime) else 0.0


@contextlib.contextmanager
def _mapped(op: str, key: str, container: str) -> Iterator[None]:
    """Turn azure-core/aiohttp failures into this project's typed errors."""
    try:
        yield
    except PachError:
        raise
    except HttpResponseError as exc:
        code = str(getattr(exc, "error_code", "") or "")
        status = int(exc.status_code or 0)
        if code == "ContainerNotFound":
            raise NotFound(
                f"Azure container {container!r} does not exist ({op} {key!r})",
                container=container,
            ) from None
        if status == 404:
            raise ObjectNotFound(key) from None
        if status == 412:
            raise _Changed(f"Azure {op} {key!r}: the blob changed", key=key) from None
        if status in (401, 403):
            raise PermissionDenied(
                f"Azure {op} {key!r}: access denied ({code or status}); check the account "
                "name and key",
                key=key,
            ) from None
        if code in _RETRYABLE or status >= 500 or status in (408, 429):
            raise Unavailable(
                f"Azure {op} {key!r} failed: {code or status} (retry later)", key=key
            ) from exc
        raise Internal(f"Azure {op} {key!r} failed: {code or status}", key=key, code=code) from exc
    except _CONNECTION_ERRORS as exc:
        raise Unavailable(f"Azure {op} {key!r}: cannot reach the server: {exc}", key=key) from exc


class AzureContainer:
    """A container named by an ``as://`` / ``wasb://`` URL: keys under a
    prefix, a blob's bytes, a blob written from a stream."""

    def __init__(self, container: str, *, url: str, endpoint: str, account: str, key: str) -> None:
        self._name = container
        self._url = url
        self._endpoint = endpoint
        self._account = account
        self._key = key
        self._service: BlobServiceClient | None = None

    def _container(self) -> Any:
        if self._service is None:
            self._service = service_client(self._endpoint, self._account, self._key, retry_total=3)
        return self._service.get_container_client(self._name)

    async def keys(self, prefix: str) -> AsyncGenerator[str, None]:
        try:
            async for blob in self._container().list_blobs(name_starts_with=prefix or None):
                yield str(blob.name)
        except Exception as exc:
            raise self._error(exc, "") from None

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:
        try:
            stream = await self._container().get_blob_client(key).download_blob()
            async for chunk in stream.chunks():
                yield bytes(chunk)
        except Exception as exc:
            raise self._error(exc, key) from None

    async def write(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        total = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal total
            async for block in blocks:
                total += len(block)
                yield block

        try:
            await self._container().get_blob_client(key).upload_blob(counted(), overwrite=True)
        except Exception as exc:
            raise self._error(exc, key) from None
        return total

    def _error(self, exc: Exception, key: str) -> PachError:
        where = self._url
        if isinstance(exc, PachError):
            return exc
        if isinstance(exc, HttpResponseError):
            code = str(getattr(exc, "error_code", "") or "")
            status = int(exc.status_code or 0)
            if code == "ContainerNotFound":
                return NotFound(f"{where}: no container {self._name!r}", url=where)
            if status == 404:
                return NotFound(f"{where}: no blob {key!r}", url=where)
            if status in (401, 403):
                return PermissionDenied(f"{where}: access denied ({code or status})", url=where)
            if status == 400:
                return InvalidArgument(
                    f"{where}: the server refused the request ({code})", url=where
                )
            return Unavailable(f"{where}: Azure error {code or status}", url=where)
        if isinstance(exc, ServiceRequestError):
            return Unavailable(f"{where}: cannot reach the blob service", url=where)
        return Unavailable(f"{where}: {type(exc).__name__}", url=where)

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()
            self._service = None
