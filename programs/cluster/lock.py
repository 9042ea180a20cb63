"""One launcher per data dir: an exclusive ``flock`` on ``<data_dir>/cluster.lock``
held for the launcher's whole life. The file holds the owner's pid."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from libs.errors import FailedPrecondition


class ClusterRunning(FailedPrecondition):
    code = "cluster_running"

    def __init__(self, data_dir: Path, pid: str) -> None:
        super().__init__(
            f"a cluster is already running on {data_dir} (pid {pid or 'unknown'})",
            data_dir=str(data_dir),
            pid=pid,
        )


def acquire(data_dir: Path) -> IO[str]:
    """Take the lock or raise ``ClusterRunning`` without changing anything.
    Keep the returned file open: closing it (or exiting) releases the lock."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "cluster.lock"
    handle = open(path, "a+")  # noqa: SIM115 - held open for the process's life
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip()
        handle.close()
        raise ClusterRunning(data_dir, pid) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
