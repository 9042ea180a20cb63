"""The quick start's first command: ``make up`` in a fresh clone of this
checkout (its committed HEAD), timed from the command to the first call
that works, beside the target (< 60 s).

* make up -> serving: until ``pachctl list-repo`` answers (the gateway
  reports SERVING only once pfs and pps serve, so the first command after
  the port opens must work: it is run once and must succeed);
* of which the install (``make install`` alone, in a second fresh clone:
  virtualenv, packages from the package cache uv keeps on this machine,
  bytecode);
* of which the cluster: ``make up`` on an installed clone, to serving.

The clone lives under the bench's scratch directory; its cluster listens
on free ports with its own data directory. ``PACH_BENCH_STARTUP=0`` leaves
these rows out.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from programs.cluster.natsserver import free_port
from tests.bench import BenchContext, Result
from tests.support.cluster import ROOT

TARGET_S = 60.0
TIMEOUT_S = 900.0


def _clone(dest: Path) -> None:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=300)


def _env(clone: Path) -> dict[str, str]:
    grpc_port = free_port()
    return {
        **os.environ,
        "PACH_DATA_DIR": str(clone / "data"),
        "PACH_GRPC_PORT": str(grpc_port),
        "PACH_HTTP_PORT": str(free_port()),
        "PACHD_ADDRESS": f"grpc://127.0.0.1:{grpc_port}",
    }


def _list_repo(clone: Path, env: dict[str, str]) -> bool:
    pachctl = clone / ".venv" / "bin" / "pachctl"
    if not pachctl.exists():
        return False
    done = subprocess.run(
        [str(pachctl), "list-repo"], env=env, capture_output=True, text=True, timeout=30
    )
    return done.returncode == 0 and done.stdout.startswith("NAME")


def _up_until_serving(clone: Path) -> float:
    """Seconds from ``make up`` to the first list-repo that works."""
    env = _env(clone)
    log = open(clone / "make-up.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen(
        ["make", "up"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while time.monotonic() - started < TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"make up exited {proc.returncode}: see {clone}/make-up.log")
            ready = (clone / "data" / "cluster.json").exists()
            if ready and _list_repo(clone, env):
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"make up not serving after {TIMEOUT_S:.0f}s")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _measure(work: Path) -> tuple[float, float, float]:
    fresh = work / "fresh"
    _clone(fresh)
    total = _up_until_serving(fresh)
    cluster_only = _up_until_serving(fresh)  # installed now: the cluster alone
    second = work / "install-only"
    _clone(second)
    started = time.monotonic()
    subprocess.run(["make", "install"], cwd=second, check=True, capture_output=True, timeout=900)
    install = time.monotonic() - started
    return total, install, cluster_only


async def run(ctx: BenchContext) -> list[Result]:
    if os.environ.get("PACH_BENCH_STARTUP", "1") == "0":
        return []
    total, install, cluster_only = await asyncio.to_thread(_measure, ctx.work_dir / "startup")
    return [
        Result(
            "make up of a fresh clone -> first pachctl list-repo works",
            total,
            "s",
            TARGET_S,
            higher_is_better=False,
        ),
        Result("  of which make install (another fresh clone, alone)", install, "s"),
        Result("  make up of the installed clone -> list-repo works", cluster_only, "s"),
    ]
