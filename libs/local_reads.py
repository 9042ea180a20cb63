"""The gateway's same-host read socket: its wire protocol and the checks
both ends share (docs/decisions/0039-get-file-local-socket.md).

A ``SOCK_SEQPACKET`` Unix socket in the cluster's data directory (its
directory 0700, the socket 0600): every message is whole, so a frame never
has to be found in a byte stream and descriptors ride on the message they
belong to. One connection reads one file:

- client -> gateway, one message of at most ``MAX_REQUEST`` bytes, JSON:
  ``{"v": 1, "token", "repo", "ref", "path"}``;
- gateway -> client, JSON messages: first ``{"ok": true, "cluster",
  "grpc_port", "commit", "size", "hash"}`` or ``{"error": {"type",
  "message"}}``; then, in file order, ``{"fds": [[offset, length], ...]}``
  carrying that many read-only descriptors (``SCM_RIGHTS``), or ``{"bytes":
  n}`` followed by ``n`` bytes in messages of at most ``DATA_BYTES``; last
  ``{"end": true}`` (or an error, and the connection closes);
- client -> gateway, one ``ACK`` message per ``fds`` frame it is done with:
  at most ``WINDOW`` such frames are unanswered, so the descriptors in
  flight stay bounded whatever the file's size.

A descriptor is only ever passed for an object the range covers whole
(``whole_object``): its every byte is the caller's file. A range of a pack
shared with other files (maybe another repo's) goes as bytes.
"""

from __future__ import annotations

import os
import stat

VERSION = 1
MAX_REQUEST = 64 << 10  # one request message, bytes
MAX_HEADER = 64 << 10  # one JSON frame from the gateway, bytes
DATA_BYTES = 64 << 10  # one message of a ``bytes`` frame's body
FDS_PER_FRAME = 64  # under SCM_MAX_FD (253)
WINDOW = 2  # fds frames sent and not yet acknowledged
ACK = b"+"
SOCKET_DIR = "run"  # under the data directory
MAX_SUN_PATH = 100  # sockaddr_un's sun_path is 108 bytes with its NUL

# InspectFile's trailing metadata, sent when the gateway serves this socket.
SOCKET_KEY = "pach-local-socket"
CLUSTER_KEY = "pach-cluster-id"


def socket_name(grpc_port: int) -> str:
    """The socket's file name in ``<data dir>/run``: one per gateway port."""
    return f"gateway-{grpc_port}.sock"


def open_flags() -> int:
    """How an object file is opened to be passed: read only, never through
    a symbolic link, not inherited by a child."""
    return os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def whole_object(st: os.stat_result, offset: int, length: int) -> bool:
    """Whether the range ``[offset, offset+length)`` of a file with status
    ``st`` is all of a regular file: only then may its descriptor be given
    (the caller may read every byte of it)."""
    return stat.S_ISREG(st.st_mode) and offset == 0 and length == st.st_size and length > 0


def short_path(path: str) -> tuple[str, int | None]:
    """An address for ``path`` that fits ``sun_path``: the path itself, or,
    when longer, ``/proc/self/fd/<dir>/<name>`` through a descriptor of its
    directory (returned, for the caller to close after bind or connect)."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        return path, None
    directory, name = os.path.split(path)
    dfd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{dfd}/{name}", dfd
