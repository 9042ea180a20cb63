"""Where ``extract -u URL`` writes and ``restore -u URL`` reads: an object in
S3 (``s3://bucket/key``, through the cluster's S3 endpoint and credentials)
or a file on admin's machine (``/abs/path`` or ``file:///abs/path``) under
the one backup directory (``PACH_BACKUP_DIR``, by default
``<data dir>/backups``). Anything else is refused before it is touched: a
path elsewhere, a ``..`` or a symlink leading out (``PermissionDenied``
naming the backup directory). Messages never quote a file's bytes.

Writing is atomic: readers see the whole extract or nothing (S3's multipart
upload completes at the end; a local file is written beside its target and
renamed over it). Reading streams in blocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from libs.config import ObjectStoreConfig
from libs.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from libs.objects.base import ObjectStore

BLOCK = 1 << 20
USAGE = "s3://bucket/key, file:///absolute/path or /absolute/path"


@dataclass(frozen=True)
class BackupUrl:
    """A parsed URL: ``bucket``/``key`` for S3, ``path`` for a local file."""

    url: str
    scheme: str  # "s3" or "file"
    bucket: str = ""
    key: str = ""
    path: Path = Path("/")


def parse_backup_url(url: str, backup_dir: Path) -> BackupUrl:
    """InvalidArgument unless ``url`` is one of ``USAGE``; PermissionDenied
    for a file outside ``backup_dir``."""
    if not url:
        raise InvalidArgument(f"backup URL is empty: give {USAGE}")
    if url.startswith("/"):
        return BackupUrl(url, "file", path=_inside(url, _local(url, url), backup_dir))
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        key = parsed.path.lstrip("/")
        if not parsed.netloc or not key:
            raise InvalidArgument(f"backup URL {url!r} needs a bucket and a key: s3://bucket/key")
        return BackupUrl(url, "s3", bucket=parsed.netloc, key=key)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"backup URL {url!r} names host {parsed.netloc!r}: a file URL is "
                "file:///absolute/path, on pachd's machine"
            )
        path = _local(url, unquote(parsed.path))
        return BackupUrl(url, "file", path=_inside(url, path, backup_dir))
    if parsed.scheme:
        raise InvalidArgument(
            f"backup URL {url!r}: scheme {parsed.scheme!r} is not supported; give {USAGE}"
        )
    raise InvalidArgument(
        f"backup URL {url!r} is a relative path: pachd would resolve it against its own "
        f"working directory; give {USAGE}"
    )


def _local(url: str, path: str) -> Path:
    if not path.startswith("/"):
        raise InvalidArgument(f"backup URL {url!r} needs an absolute path; give {USAGE}")
    if "\x00" in path:
        raise InvalidArgument(f"backup URL {url!r} holds a NUL byte")
    p = Path(os.path.normpath(path))
    if p == Path("/"):
        raise InvalidArgument(f"backup URL {url!r} names a directory, not a file")
    return p


def _inside(url: str, path: Path, backup_dir: Path) -> Path:
    """``path`` with its symlinks resolved, when that lies under
    ``backup_dir`` (itself resolved); else PermissionDenied. (``..`` is
    already folded away, so it cannot climb out.)"""
    root = Path(os.path.realpath(backup_dir))
    real = Path(os.path.realpath(path))
    if real == root or not real.is_relative_to(root):
        raise PermissionDenied(
            f"backup URL {url!r} is refused: extract -u and restore -u use files under the "
            f"backup directory {backup_dir} (PACH_BACKUP_DIR) or s3://bucket/key",
            url=url,
            backup_dir=str(backup_dir),
        )
    return real


def _s3_store(target: BackupUrl, cfg: ObjectStoreConfig) -> ObjectStore:
    from libs.objects.s3 import S3ObjectStore

    return S3ObjectStore(
        bucket=target.bucket,
        endpoint_url=cfg.s3_endpoint,
        region=cfg.s3_region,
        access_key=cfg.s3_access_key,
        secret_key=cfg.s3_secret_key,
    )


async def write_url(
    url: str, chunks: AsyncIterable[bytes], cfg: ObjectStoreConfig, backup_dir: Path
) -> int:
    """Store the stream ``chunks`` at ``url`` atomically; the byte count."""
    target = parse_backup_url(url, backup_dir)
    if target.scheme == "s3":
        store = _s3_store(target, cfg)
        try:
            return await store.put_stream(target.key, chunks)
        finally:
            await store.close()
    return await _write_file(target.path, chunks)


def _open_temp(path: Path) -> tuple[BinaryIO, str]:
    """A new file beside ``path`` (so the final rename is atomic)."""
    if not path.parent.is_dir():
        raise NotFound(f"cannot write the extract to {path}: {path.parent} is not a directory")
    if path.is_dir():
        raise InvalidArgument(f"cannot write the extract to {path}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise Unavailable(f"cannot write the extract to {path}: {exc.strerror}") from None
    return os.fdopen(fd, "wb"), tmp


async def _write_file(path: Path, chunks: AsyncIterable[bytes]) -> int:
    f, tmp = await asyncio.to_thread(_open_temp, path)
    written = 0
    try:
        with f:
            async for chunk in chunks:
                await asyncio.to_thread(f.write, chunk)
                written += len(chunk)
            await asyncio.to_thread(_sync, f)
        await asyncio.to_thread(os.replace, tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return written


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


async def read_url(url: str, cfg: ObjectStoreConfig, backup_dir: Path) -> AsyncIterator[bytes]:
    """The bytes stored at ``url``, in blocks; NotFound when nothing is there."""
    target = parse_backup_url(url, backup_dir)
    if target.scheme == "s3":
        store = _s3_store(target, cfg)
        try:
            async for block in store.get_stream(target.key, block_size=BLOCK):
                yield block
        finally:
            await store.close()
        return
    f = await asyncio.to_thread(_open_read, target.path)
    with f:
        while block := await asyncio.to_thread(f.read, BLOCK):
            yield block


def _open_read(path: Path) -> BinaryIO:
    # O_NOFOLLOW: the path was resolved; a symlink put there since is refused.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"no extract at {path}") from None
    except OSError as exc:
        raise Unavailable(f"cannot read the extract at {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidArgument(f"cannot restore from {path}: it is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
