"""``make bench``: run every ``tests/bench/bench_*.py`` and print one table.

Starts what the benchmarks need: a real nats-server with JetStream, and the
real S3 test server (radosgw) when its packages are installed. Each row shows
the measured value next to the floor it is compared to.

    python -m tests.bench [NAME_SUBSTRING ...]
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

import structlog
import uvloop

import tests.bench as bench_pkg
from programs.cluster.natsserver import NatsServer
from tests.bench import BenchContext, Result


def _modules(filters: list[str]) -> list[str]:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench_pkg.__path__) if m.name.startswith("bench_")
    )
    return [n for n in names if not filters or any(f in n for f in filters)]


def _start_s3(work: Path) -> object | None:
    if os.environ.get("PACH_SKIP_S3") == "1":
        return None
    from tests.servers.s3server import S3ServerError, missing_binaries, start_s3_server

    if missing_binaries():
        print(f"(S3 benchmarks skipped: {', '.join(missing_binaries())} not installed)")
        return None
    try:
        server = start_s3_server(work / "s3")
    except S3ServerError as exc:
        print(f"(S3 benchmarks skipped: the S3 test server did not start: {exc})")
        return None
    os.environ.update(server.env())
    return server


def _format(results: list[Result]) -> str:
    rows = [("BENCHMARK", "VALUE", "UNIT", "FLOOR", "")]
    for r in results:
        floor = "" if r.floor is None else f"{'>=' if r.higher_is_better else '<='} {r.floor:g}"
        verdict = {None: "", True: "ok", False: "BELOW FLOOR"}[r.ok]
        rows.append((r.name, f"{r.value:,.3f}", r.unit, floor, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].ljust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


async def _run(names: list[str], ctx: BenchContext) -> list[Result]:
    results: list[Result] = []
    for name in names:
        module = importlib.import_module(f"tests.bench.{name}")
        started = time.perf_counter()
        print(f"running {name} ...", flush=True)
        results.extend(await module.run(ctx))
        print(f"  done in {time.perf_counter() - started:.1f}s", flush=True)
    return results


def main(argv: list[str]) -> int:
    # Benchmarks measure the code, not the terminal: keep logs to warnings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    names = _modules(argv)
    if not names:
        print(f"no benchmark matches {argv}")
        return 1
    with tempfile.TemporaryDirectory(prefix="pach-bench-") as tmp:
        work = Path(tmp)
        nats = NatsServer(store_dir=work / "nats").start()
        s3 = _start_s3(work) if any("object" in n for n in names) else None
        try:
            ctx = BenchContext(
                work_dir=work,
                nats_url=nats.url,
                s3_endpoint=os.environ.get("PACH_S3_ENDPOINT") if s3 else None,
            )
            # The services run on uvloop (libs/service.py); so do the benchmarks.
            results = uvloop.run(_run(names, ctx))
        finally:
            nats.stop()
            if s3 is not None:
                s3.stop()  # type: ignore[attr-defined]
    print()
    print(_format(results))
    notes = [f"  {r.name}: {r.note}" for r in results if r.note]
    if notes:
        print("\n".join(["", "notes:", *notes]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
