"""An idle cluster: 10 ``cp`` pipelines over one input repo, their first
jobs finished, then a minute in which nothing happens. The CPU its
processes use (nats-server, services, workers: utime + stime from /proc, in
% of one core; was 7.6 before the consumers long-polled and the periodic
checks slowed down) and the warning-level lines they log in that minute (was
28: "interrupted, resuming ... TimeoutError()" for every idle fetch).
"""

from __future__ import annotations

import asyncio
import time

from tests.bench import BenchContext, Result
from tests.support import idle
from tests.support.cluster import Cluster

PIPELINES = 10
WINDOW_S = 60.0
SETTLE_S = 5.0  # after the jobs: the masters' last looks, workers going idle


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "idle"
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(work / "data")  # logs at info: the warnings are counted
    cluster.start()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        await asyncio.to_thread(idle.settle, cluster, PIPELINES)
        await asyncio.sleep(SETTLE_S)
        offset = cluster.log.stat().st_size
        assert cluster.proc is not None
        pids = idle.tree_pids(cluster.proc.pid)
        started = time.monotonic()
        cpu = await asyncio.to_thread(idle.cpu_percent, pids, WINDOW_S)
        minutes = (time.monotonic() - started) / 60.0
        warnings = len(idle.warnings_in(cluster.log, offset))
    finally:
        await asyncio.to_thread(cluster.kill)
    return [
        Result(
            f"idle cluster, {PIPELINES} pipelines: CPU over {WINDOW_S:g}s (was 7.6)",
            round(cpu, 2),
            "% core",
            2.0,
            higher_is_better=False,
        ),
        Result(
            "  warning-level log lines per idle minute (was 28)",
            round(warnings / minutes, 1),
            "lines",
            0.0,
            higher_is_better=False,
        ),
    ]
