"""An Azure Blob Storage container (azure-storage-blob's asyncio client,
shared-key credentials). Reads stream the blob's chunks, listings page,
writes upload blocks from the stream; no blob is held whole."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Any

from libs.errors import InvalidArgument, NotFound, PachError, PermissionDenied, Unavailable


class AzureContainer:
    def __init__(self, container: str, *, url: str, endpoint: str, account: str, key: str) -> None:
        self._name = container
        self._url = url
        self._endpoint = endpoint
        self._credential = {"account_name": account, "account_key": key}
        self._service: Any = None

    def _container(self) -> Any:
        if self._service is None:
            from azure.storage.blob.aio import BlobServiceClient  # imported only when used

            self._service = BlobServiceClient(
                self._endpoint, credential=self._credential, retry_total=3
            )
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
        from azure.core.exceptions import HttpResponseError, ServiceRequestError

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
