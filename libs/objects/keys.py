"""Object keys and byte ranges: the checks every backend applies the same way.

A key is a ``/``-separated path of non-empty segments: no leading ``/``, no
``.`` or ``..`` segment, no NUL, no segment starting with ``.put-`` (the
local store's temporary files). Both backends reject the same keys, so a key
that works against the local directory also works against S3.
"""

from __future__ import annotations

from libs.errors import InvalidArgument

TEMP_PREFIX = ".put-"
MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length


def check_key(key: str) -> str:
    """Return ``key`` unchanged, or raise InvalidArgument naming it."""
    if not isinstance(key, str):
        raise InvalidArgument(f"object key must be a string, got {type(key).__name__}", key=key)
    if key == "":
        raise InvalidArgument("object key is empty", key=key)
    if "\x00" in key:
        raise InvalidArgument(f"object key {key!r} contains a NUL byte", key=key)
    if key.startswith("/"):
        raise InvalidArgument(f"object key {key!r} is absolute (starts with '/')", key=key)
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"object key {key!r} is not valid UTF-8", key=key) from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"object key {key[:64]!r}... is {len(encoded)} bytes, over {MAX_KEY_BYTES}", key=key
        )
    for segment in key.split("/"):
        if segment == "":
            raise InvalidArgument(f"object key {key!r} has an empty path segment", key=key)
        if segment in (".", ".."):
            raise InvalidArgument(f"object key {key!r} has a {segment!r} segment", key=key)
        if segment.startswith(TEMP_PREFIX):
            raise InvalidArgument(
                f"object key {key!r} has a segment starting with reserved {TEMP_PREFIX!r}",
                key=key,
            )
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: any string a key could start with (may end in ``/``)."""
    if not isinstance(prefix, str):
        raise InvalidArgument(
            f"object prefix must be a string, got {type(prefix).__name__}", prefix=prefix
        )
    if "\x00" in prefix:
        raise InvalidArgument(f"object prefix {prefix!r} contains a NUL byte", prefix=prefix)
    if prefix.startswith("/"):
        raise InvalidArgument(f"object prefix {prefix!r} is absolute", prefix=prefix)
    return prefix


def check_range(offset: int, length: int | None) -> None:
    """Offsets and lengths are non-negative; a range past the end reads as empty."""
    if offset < 0:
        raise InvalidArgument(f"read offset must be >= 0, got {offset}", offset=offset)
    if length is not None and length < 0:
        raise InvalidArgument(f"read length must be >= 0, got {length}", length=length)


def check_block_size(block_size: int) -> None:
    if block_size <= 0:
        raise InvalidArgument(f"block size must be > 0, got {block_size}", block_size=block_size)
