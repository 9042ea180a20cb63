"""Tree paths: absolute, ``/``-separated, printable ASCII, at most 4096
bytes with components of at most 255 (``libs.bounds``).

``normalize`` is the one gate every path goes through; ``sort_key`` orders
paths depth-first (a directory's entries right after it, by name), which is
the order of walks, listings and the builder's sorted runs.
"""

from __future__ import annotations

import re

from libs.bounds import MAX_PATH_BYTES, MAX_PATH_COMPONENT_BYTES, check_path
from libs.errors import InvalidArgument, shown

ROOT = "/"
_PRINTABLE = re.compile(r"[ -~]*")
# A path that is already normal: printable ASCII segments (no "/", not "."
# or "..", within the component bound) each after one "/". Such a path
# (every path of a put-file -r, every path pfs recorded) needs no more work.
_NORMAL = re.compile(rf"(?:/(?!\.\.?(?:/|$))[ -.0-~]{{1,{MAX_PATH_COMPONENT_BYTES}}})+")


def normalize(path: str) -> str:
    """``a/b/`` -> ``/a/b``; InvalidArgument naming the path if it is not valid."""
    if isinstance(path, str) and len(path) <= MAX_PATH_BYTES and _NORMAL.fullmatch(path):
        return path
    if not isinstance(path, str):
        raise InvalidArgument(f"path must be a string, got {type(path).__name__}", path=path)
    check_path(path)
    if not _PRINTABLE.fullmatch(path):
        bad = next(ch for ch in path if not " " <= ch <= "~")
        raise InvalidArgument(
            f"path {shown(path)}: only printable ASCII (0x20-0x7E) is allowed, found {bad!r}",
            path=path,
        )
    if "//" in path:
        raise InvalidArgument(f"path {shown(path)}: empty segment", path=path)
    body = path[:-1] if path.endswith("/") else path
    body = body[1:] if body.startswith("/") else body
    if not body:
        return ROOT
    for seg in body.split("/"):
        if seg in (".", ".."):
            raise InvalidArgument(
                f"path {shown(path)}: {seg!r} segments are not allowed", path=path
            )
    return "/" + body


def segments(path: str) -> list[str]:
    """The names along a normalized path; ``[]`` for the root."""
    return [] if path == ROOT else path[1:].split("/")


def join(parent: str, name: str) -> str:
    return parent + name if parent == ROOT else f"{parent}/{name}"


def parent_of(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or ROOT


def sort_key(path: str) -> bytes:
    """Depth-first order: ``/a`` < ``/a/b`` < ``/a-c`` (``/`` sorts below every name)."""
    return path.encode("ascii").replace(b"/", b"\x00")
