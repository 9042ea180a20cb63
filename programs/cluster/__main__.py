"""``python -m programs.cluster`` (``make up``): the embedded cluster, in the foreground."""

from __future__ import annotations

import asyncio
import sys

import structlog

from libs.errors import PachError
from libs.observe import configure_logging
from programs.cluster import lock
from programs.cluster.launcher import main_async
from programs.cluster.settings import ClusterSettings


def main() -> None:
    try:
        settings = ClusterSettings.from_env()
        configure_logging(settings.config)
        held = lock.acquire(settings.data_dir)
    except PachError as err:
        print(
            f"pachyderm cluster: {err}" if not isinstance(err, lock.ClusterRunning) else str(err),
            file=sys.stderr,
        )
        sys.exit(1)
    try:
        asyncio.run(main_async(settings))
    except PachError as err:
        structlog.get_logger("cluster").error("cluster failed", error=str(err))
        sys.exit(1)
    finally:
        held.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
