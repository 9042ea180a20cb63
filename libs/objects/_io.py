"""The thread pool that blocking object-store work (file I/O, hashing) runs on.

One shared, bounded pool keeps disk and hashing work off the event loop
without competing with ``asyncio.to_thread`` users for the default executor.
Callers hand it big blocks (1-8 MiB) so the hop costs little per byte.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

IO_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="objects-io")


def submit(
    fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> concurrent.futures.Future[T]:
    """Start ``fn`` on the pool now; await it later with ``asyncio.wrap_future``."""
    return IO_POOL.submit(fn, *args, **kwargs)


async def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` on the pool and wait for it without blocking the loop."""
    return await asyncio.wrap_future(IO_POOL.submit(fn, *args, **kwargs))


def after(
    pending: concurrent.futures.Future[Any] | None, fn: Callable[[], object]
) -> concurrent.futures.Future[None]:
    """Run ``fn`` on the pool once ``pending`` (if any) has finished.

    Used to release a file descriptor only after the read or write still using
    it is done, even when the awaiting coroutine was cancelled (then nobody
    waits for the returned future)."""

    def _job() -> None:
        if pending is not None:
            pending.cancel()
            concurrent.futures.wait([pending])
        fn()

    return IO_POOL.submit(_job)
