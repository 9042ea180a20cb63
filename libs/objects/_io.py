"""The thread pool that blocking object-store work (file I/O, hashing) runs on.

One shared, bounded pool keeps disk and hashing work off the event loop
without competing with ``asyncio.to_thread`` users for the default executor.
Callers hand it big blocks (1-8 MiB) so the hop costs little per byte.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
_Pending = concurrent.futures.Future[Any] | None

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
    pending: _Pending | Iterable[_Pending],
    fn: Callable[[], object],
) -> concurrent.futures.Future[None]:
    """Run ``fn`` on the pool once ``pending`` (a future, several, or None) has finished.

    Used to release a file descriptor only after the reads or writes still
    using it are done, even when the awaiting coroutine was cancelled (then
    nobody waits for the returned future). Work not yet started is cancelled."""
    if pending is None or isinstance(pending, concurrent.futures.Future):
        pending = [pending]
    waits = [f for f in pending if f is not None]

    def _job() -> None:
        for f in waits:
            f.cancel()
        if waits:
            concurrent.futures.wait(waits)
        fn()

    return IO_POOL.submit(_job)
