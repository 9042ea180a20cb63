"""A Google Cloud Storage bucket over its JSON API (aiohttp).

Reads stream (``alt=media``), listings page (1,000 keys a page), writes use
a resumable upload sent in 8 MiB pieces, so no object is held whole. With a
service account key file, requests carry an OAuth token (gcloud-aio-auth
signs and refreshes it); without one they carry none (an emulator, or a
public bucket)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any
from urllib.parse import quote

import aiohttp

from libs.errors import InvalidArgument, NotFound, PachError, PermissionDenied, Unavailable

BLOCK = 1 << 20
PIECE = 8 << 20  # a resumable upload's piece: a multiple of 256 KiB
LIST_PAGE = 1000
_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


class GcsBucket:
    def __init__(self, bucket: str, *, url: str, endpoint: str, credentials: str = "") -> None:
        self._bucket = bucket
        self._url = url
        self._api = endpoint.rstrip("/")
        self._credentials = credentials
        self._session: aiohttp.ClientSession | None = None
        self._token: Any = None

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
            if self._credentials:
                from gcloud.aio.auth import Token  # imported only when used

                self._token = Token(service_file=self._credentials, scopes=_SCOPES)
        return self._session

    async def _headers(self) -> dict[str, str]:
        if self._token is None:
            return {}
        try:
            token = await self._token.get()
        except Exception as exc:
            raise PermissionDenied(
                f"{self._url}: cannot get a Google Cloud token: {type(exc).__name__}", url=self._url
            ) from None
        return {"Authorization": f"Bearer {token}"}

    def _object(self, key: str) -> str:
        return f"{self._api}/storage/v1/b/{quote(self._bucket, safe='')}/o/{quote(key, safe='')}"

    async def keys(self, prefix: str) -> AsyncGenerator[str, None]:
        http = await self._http()
        url = f"{self._api}/storage/v1/b/{quote(self._bucket, safe='')}/o"
        params = {
            "prefix": prefix,
            "maxResults": str(LIST_PAGE),
            "fields": "items(name),nextPageToken",
        }
        while True:
            try:
                async with http.get(url, params=params, headers=await self._headers()) as resp:
                    await self._check(resp, "")
                    page = await resp.json(content_type=None)
            except aiohttp.ClientError as exc:
                raise self._unreachable(exc) from None
            for item in page.get("items", ()):
                yield str(item["name"])
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    async def read(self, key: str) -> AsyncGenerator[bytes, None]:
        http = await self._http()
        try:
            async with http.get(
                self._object(key), params={"alt": "media"}, headers=await self._headers()
            ) as resp:
                await self._check(resp, key)
                async for block in resp.content.iter_chunked(BLOCK):
                    yield block
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None

    async def write(self, key: str, blocks: AsyncIterable[bytes]) -> int:
        http = await self._http()
        start = f"{self._api}/upload/storage/v1/b/{quote(self._bucket, safe='')}/o"
        try:
            async with http.post(
                start,
                params={"uploadType": "resumable", "name": key},
                json={"name": key},
                headers=await self._headers(),
            ) as resp:
                await self._check(resp, "")  # a 404 here: no such bucket
                session_uri = resp.headers.get("Location", "")
            if not session_uri:
                raise Unavailable(
                    f"{self._url}: the server started no upload session", url=self._url
                )
            sent = 0
            buf = bytearray()
            async for block in blocks:
                buf += block
                while len(buf) > PIECE:  # keep the last piece for the final request
                    await self._piece(http, session_uri, sent, bytes(buf[:PIECE]), final=False)
                    sent += PIECE
                    del buf[:PIECE]
            await self._piece(http, session_uri, sent, bytes(buf), final=True)
            return sent + len(buf)
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None

    async def _piece(
        self, http: aiohttp.ClientSession, uri: str, offset: int, body: bytes, *, final: bool
    ) -> None:
        total = str(offset + len(body)) if final else "*"
        span = f"{offset}-{offset + len(body) - 1}" if body else "*"
        headers = {**await self._headers(), "Content-Range": f"bytes {span}/{total}"}
        async with http.put(uri, data=body, headers=headers) as resp:
            if resp.status == 308 and not final:
                return  # piece taken, more expected
            await self._check(resp, "")

    async def _check(self, resp: aiohttp.ClientResponse, key: str) -> None:
        if 200 <= resp.status < 300:
            return
        where = self._url
        if resp.status == 404:
            what = f"no object {key!r}" if key else f"no bucket {self._bucket!r}"
            raise NotFound(f"{where}: {what}", url=where)
        if resp.status in (401, 403):
            raise PermissionDenied(f"{where}: access denied ({resp.status})", url=where)
        if resp.status == 400:
            raise InvalidArgument(f"{where}: the server refused the request (400)", url=where)
        raise Unavailable(f"{where}: the server answered {resp.status}", url=where)

    def _unreachable(self, exc: Exception) -> PachError:
        return Unavailable(f"{self._url}: {type(exc).__name__}: {exc}", url=self._url)

    async def close(self) -> None:
        if self._token is not None:
            await self._token.close()
            self._token = None
        if self._session is not None:
            await self._session.close()
            self._session = None
