"""Plain HTTP file download and upload.

``GET /pfs/<repo>/<commit-or-branch>/<path>`` streams a file's bytes
(``Content-Length`` from InspectFile, ``Accept-Ranges: bytes``; one
``Range: bytes=a-b`` / ``a-`` / ``-n`` answers ``206`` with that slice, a
range past the end ``416``). With the local object store the body goes
from the chunk files to the socket with ``sendfile`` (``libs/objects/
sendfile.py``); the other stores stream it through the gateway. A directory
(or no path: the root) answers a JSON listing ``{"commit": ..., "path":
..., "files": [{"path", "type", "size_bytes"}]}``. A branch is resolved to
its head once, so the length and the bytes come from the same commit. A path with glob characters
(``/users/*``) streams the matching files concatenated in path order, with
their directories' headers and footers, as get-file does (no ranges).

``PUT`` (or ``POST``) ``/pfs/<repo>/<branch-or-commit>/<path>`` streams the
request body into put-file in blocks (never the whole body in memory):
appended to the file by default, replacing it with ``?overwrite=true``
(Pachyderm's put-file semantics). A branch whose head is finished gets a new
commit, finished when the upload ends; an open commit (or open head) takes
the write and stays open. Answers ``201`` with the repo, reference, path and
the bytes received.

Errors go through the gateway's one mapping (``services.gateway.errors``):
a JSON body ``{"error": {"type", "message", "fields"}}`` with 400 (bad path,
bad range, bad ``overwrite``), 404 (no repo, commit or file), 412 (writing to
a finished commit)...
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
from collections.abc import AsyncIterator
from typing import TypeVar

from aiohttp import web
from google.protobuf.message import Message

from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.errors import Internal, InvalidArgument, to_wire
from libs.objects import LocalObjectStore, ObjectStore, chunk_key
from libs.objects.sendfile import SocketSink
from libs.trees.glob import is_glob
from services.gateway.app import file_pages
from services.gateway.app import ingest as files
from services.gateway.app.commits import refuse_finished
from services.gateway.app.file_pages import list_dir
from services.gateway.http.keys import BUS, STORE
from services.gateway.principal import Ask, http_ask

R = TypeVar("R", bound=Message)

# Bytes per PutFile message built from an upload's body.
UPLOAD_BLOCK = 512 * 1024

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def ask_for(http: web.Request) -> Ask:
    """pfs bus calls on behalf of the HTTP caller (its ``authn-token``)."""
    return http_ask(http.app[BUS], http, "pfs")


def _target(request: web.Request) -> tuple[pfs.Commit, str]:
    repo, ref = request.match_info["repo"], request.match_info["ref"]
    path = trees.normalize("/" + request.match_info.get("path", ""))
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref), path


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(offset, length)`` of a single ``bytes=`` range over a file of
    ``size`` bytes; None when it is not satisfiable. InvalidArgument when
    the header is not one byte range."""
    m = _RANGE.match(header.strip())
    if m is None or not (m.group(1) or m.group(2)):
        raise InvalidArgument(
            f"Range {header!r} is not supported: use one range, bytes=first-last, "
            "bytes=first- or bytes=-suffix",
            range=header,
        )
    first, last = m.group(1), m.group(2)
    if not first:  # the last n bytes
        n = int(last)
        return (max(size - n, 0), min(n, size)) if n > 0 and size > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        raise InvalidArgument(f"Range {header!r}: the last byte is before the first", range=header)
    if start >= size:
        return None
    return start, end - start + 1


async def download(request: web.Request) -> web.StreamResponse:
    commit, path = _target(request)
    if is_glob(path):
        return await _glob_download(request, commit, path)
    ask = ask_for(request)
    inspect = pfs.InspectFileRequest(file=pfs.File(commit=commit, path=path))
    info = await ask("InspectFile", inspect, pfs.FileInfo, "qry")
    resolved = info.file.commit  # by id: the bytes come from the same commit
    if info.file_type == pfs.DIR:
        return await _listing(request, ask, resolved, path)
    size = info.size_bytes
    offset, length, status = 0, size, 200
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{info.hash.hex()}"',
        "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
    }
    header = request.headers.get("Range")
    if header is not None:
        wanted = parse_range(header, size)
        if wanted is None:
            msg = f"Range {header!r} is past the end of {path} ({size} bytes)"
            body = {"error": to_wire(InvalidArgument(msg, range=header, size=size))}
            return web.json_response(body, status=416, headers={"Content-Range": f"bytes */{size}"})
        offset, length, status = wanted[0], wanted[1], 206
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{size}"
    store = request.app[STORE]
    if isinstance(store, LocalObjectStore) and length and request.method != "HEAD":
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = length
        file = pfs.File(commit=resolved, path=path)
        return await _send_ranges(request, response, store, file, offset, length)
    blocks = _blocks(request, resolved, path, offset, length)
    # The first block before the headers: an error still gets its status.
    first = await anext(blocks, b"")
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    if request.method != "HEAD":
        if first:
            await response.write(first)
        async for block in blocks:
            await response.write(block)
    await response.write_eof()
    return response


async def _send_ranges(
    request: web.Request,
    response: web.StreamResponse,
    store: LocalObjectStore,
    file: pfs.File,
    offset: int,
    length: int,
) -> web.StreamResponse:
    """The body sent from the chunk files with ``sendfile`` (no byte read
    into Python). A failure once the body has started cuts the connection:
    the client sees fewer bytes than ``Content-Length``, never a short file
    that looks whole."""
    ranges = file_pages.file_ranges(ask_for(request), file, offset, length)
    first = await anext(ranges, None)  # errors before the status is sent
    await response.prepare(request)
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    # The headers (a few hundred bytes) leave the transport's buffer first.
    while transport.get_write_buffer_size():  # noqa: ASYNC110 (no event says it emptied)
        await asyncio.sleep(0.001)
    sink = SocketSink(transport)
    try:
        current = first
        while current is not None:  # each range sent while the next is read in
            following = await anext(ranges, None)
            ahead = None
            if following is not None:
                ahead = (store.path_of(chunk_key(following[0])), following[1], following[2])
            chunk, start, n = current
            await sink.send(store.path_of(chunk_key(chunk)), chunk, start, n, ahead)
            current = following
        if sink.sent != length:
            raise Internal(f"{file.path}: its refs hold {sink.sent} bytes, not {length}")
    except BaseException:
        transport.abort()
        raise
    finally:
        sink.close()
    await response.write_eof()
    return response


async def _blocks(
    request: web.Request, commit: pfs.Commit, path: str, offset: int, length: int
) -> AsyncIterator[bytes | memoryview]:
    if length == 0:
        return
    req = pfs.GetFileRequest(
        file=pfs.File(commit=commit, path=path), offset_bytes=offset, size_bytes=length
    )
    async for block in file_pages.read_file(request.app[STORE], ask_for(request), req):
        yield block


async def _glob_download(request: web.Request, commit: pfs.Commit, path: str) -> web.StreamResponse:
    """The files matching the glob ``path``, concatenated (length unknown
    beforehand: a chunked body)."""
    if request.headers.get("Range") is not None:
        raise InvalidArgument(
            f"Range is not supported for a glob pattern ({path}): download the files one by one",
            path=path,
        )
    req = pfs.GetFileRequest(file=pfs.File(commit=commit, path=path))
    blocks = file_pages.read_file(request.app[STORE], ask_for(request), req)
    first = await anext(blocks, b"")  # errors before the status is sent
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    if request.method != "HEAD":
        if first:
            await response.write(first)
        async for block in blocks:
            await response.write(block)
    await response.write_eof()
    return response


def _entry(info: pfs.FileInfo) -> bytes:
    kind = "dir" if info.file_type == pfs.DIR else "file"
    entry = {"path": info.file.path, "type": kind, "size_bytes": info.size_bytes}
    return json.dumps(entry).encode()


async def _listing(
    request: web.Request, ask: Ask, commit: pfs.Commit, path: str
) -> web.StreamResponse:
    """The JSON listing, written entry by entry as the pages come."""
    entries = list_dir(ask, pfs.File(commit=commit, path=path))
    first = await anext(entries, None)  # errors before the status is sent
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    head = {"repo": commit.repo.name, "commit": commit.id, "path": path}
    await response.write(json.dumps(head)[:-1].encode() + b', "files": [')
    if first is not None:
        await response.write(_entry(first))
        async for info in entries:
            await response.write(b", " + _entry(info))
    await response.write(b"]}")
    await response.write_eof()
    return response


def _overwrite(request: web.Request) -> bool:
    value = request.query.get("overwrite", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidArgument(
            f"overwrite must be true or false, got {request.query['overwrite']!r}",
            overwrite=request.query["overwrite"],
        )
    return value in ("true", "1")


async def upload(request: web.Request) -> web.Response:
    commit, path = _target(request)
    if path == "/":
        raise InvalidArgument("a file path is required: PUT /pfs/<repo>/<branch>/<path>")
    overwrite = _overwrite(request)
    ask = ask_for(request)
    await refuse_finished(ask, commit)
    received = 0

    async def requests() -> AsyncIterator[pfs.PutFileRequest]:
        nonlocal received
        first = pfs.PutFileRequest(file=pfs.File(commit=commit, path=path))
        if overwrite:
            first.overwrite_index.CopyFrom(pfs.OverwriteIndex(index=0))
        yield first
        async for block in request.content.iter_chunked(UPLOAD_BLOCK):
            received += len(block)
            yield pfs.PutFileRequest(value=block)

    await files.put_files(request.app[STORE], ask, requests())
    body = {"repo": commit.repo.name, "ref": commit.id, "path": path, "bytes": received}
    return web.json_response(body, status=201)


def mount(app: web.Application, store: ObjectStore) -> None:
    """Add the routes (after ``api.mount``, which puts the bus on the app);
    the app closes ``store`` on cleanup."""
    app[STORE] = store

    async def close(_: web.Application) -> None:
        await store.close()

    app.on_cleanup.append(close)
    app.router.add_get("/pfs/{repo}/{ref}", download)
    app.router.add_get("/pfs/{repo}/{ref}/{path:.*}", download)
    app.router.add_put("/pfs/{repo}/{ref}/{path:.*}", upload)
    app.router.add_post("/pfs/{repo}/{ref}/{path:.*}", upload)
