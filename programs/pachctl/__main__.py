"""``pachctl`` / ``python -m programs.pachctl``."""

from __future__ import annotations

import contextlib
import os
import sys

from programs.pachctl import lean_imports
from programs.pachctl.cli import run


def _others_running() -> bool:
    """Whether a non-daemon thread besides this one is still alive (then the
    interpreter's ordinary exit, which waits for it, is the right one)."""
    threading = sys.modules.get("threading")  # never imported: no threads
    if threading is None:
        return False
    main = threading.main_thread()
    return any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate())


def main() -> None:
    # grpc and protobuf, if the command loads them, come without their asyncio
    # and pure-Python halves (docs/decisions/0037-pachctl-list-repo-start.md)
    lean_imports.install()
    code = run(sys.argv[1:])
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``pachctl list-file … | head``): say nothing
        # more, and let the exit's own flush write to nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = code or 1
    if _others_running():
        sys.exit(code)
    # The command is done: its output flushed, its files closed (``with``),
    # its worker threads joined. Skip the interpreter's teardown, which with
    # gRPC loaded (its channel threads, ~1,000 modules to free) is ~50 ms of
    # a ~250 ms ``pachctl list-repo`` (docs/decisions/0032-pachctl-lazy-start.md).
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
