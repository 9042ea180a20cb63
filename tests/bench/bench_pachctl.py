"""pachctl's start-up, each row a ratio to ``python -c pass`` timed in the
same run (the same interpreter, runs interleaved so both see the same load):

* ``pachctl version --client-only``: a command that contacts no server;
* ``pachctl list-repo`` against a running embedded cluster (a few repos):
  the client path (gRPC, the pfs stubs, one RPC), which the tutorials run
  once per image (``put-file`` in a loop); next to it, for scale, what just
  importing grpcio and the pfs stubs costs.

Each value is the median of ``RUNS`` runs of the console script, as a user
starts it: from compiled bytecode, as an installed pachctl runs (pip compiles
it at install; a checkout writes ``__pycache__`` on its first run). This
machine's environment sets ``PYTHONDONTWRITEBYTECODE``, under which the
project's own modules (and a uv-installed venv's packages) would be compiled
from source at every start; so every command here, the floor included, keeps
its bytecode in a cache in the work directory, which the warm-up run fills.
Two more rows show ``list-repo`` started as before, compiling the project's
modules each time, and against ``python -S -c pass``, a floor without the
editable install's finder (docs/decisions/0037-pachctl-list-repo-start.md).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.bench import BenchContext, Result
from tests.support.cluster import ROOT, Cluster

RUNS = 11
_STUBS = "import grpc; from libs.api.pfs import pfs_pb2_grpc"


def _pachctl() -> list[str]:
    script = Path(sys.executable).parent / "pachctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "programs.pachctl"]


def _once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    secs = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode()[-2000:]}")
    return secs


def _medians(
    commands: dict[str, list[str]],
    env: dict[str, str],
    envs: dict[str, dict[str, str]] | None = None,
) -> dict[str, float]:
    """The median seconds of each command, runs interleaved (one warm-up
    each); ``envs`` gives a command another environment than ``env``."""
    envs = envs or {}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for name, argv in commands.items():
        _once(argv, envs.get(name, env))
    for _ in range(RUNS):
        for name, argv in commands.items():
            times[name].append(_once(argv, envs.get(name, env)))
    return {name: statistics.median(t) for name, t in times.items()}


def _rows(label: str, secs: float, floor: float, limit: float) -> list[Result]:
    return [
        Result(f"pachctl {label}, median of {RUNS}", round(secs * 1000), "ms"),
        Result(
            f"  pachctl {label} / python -c pass",
            round(secs / floor, 2),
            "x",
            limit,
            higher_is_better=False,
        ),
    ]


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "pachctl"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # as this machine starts Python: modules without a __pycache__ entry (here
    # the project's own) compiled at each start
    compiling = {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    compiling.pop("PYTHONPYCACHEPREFIX", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    pachctl = _pachctl()
    floor = [sys.executable, "-c", "pass"]
    offline = await asyncio.to_thread(
        _medians, {"floor": floor, "version": [*pachctl, "version", "--client-only"]}, env
    )
    cluster = Cluster(work / "data", PACH_LOG_LEVEL="warning")
    cluster.start()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        env["PACHD_ADDRESS"] = compiling["PACHD_ADDRESS"] = f"127.0.0.1:{cluster.grpc_port}"
        for name in ("images", "edges", "montage"):
            await asyncio.to_thread(_once, [*pachctl, "create-repo", name], env)
        online = await asyncio.to_thread(
            _medians,
            {
                "floor": floor,
                "list-repo": [*pachctl, "list-repo"],
                "stubs": [sys.executable, "-c", _STUBS],
                "compiling": [*pachctl, "list-repo"],
                "bare": [sys.executable, "-S", "-c", "pass"],
            },
            env,
            {"compiling": compiling},
        )
    finally:
        await asyncio.to_thread(cluster.kill)
    return [
        Result(f"floor: python -c pass, median of {RUNS}", round(offline["floor"] * 1000), "ms"),
        *_rows("version --client-only", offline["version"], offline["floor"], 3.0),
        Result(f"floor: python -c pass, median of {RUNS}", round(online["floor"] * 1000), "ms"),
        *_rows("list-repo (running cluster)", online["list-repo"], online["floor"], 4.0),
        Result(
            "  peer: python importing grpc + the pfs stubs / python -c pass",
            round(online["stubs"] / online["floor"], 2),
            "x",
            note="what any grpcio client pays before its first call",
        ),
        Result(
            "  pachctl list-repo compiling its modules at each start / python -c pass",
            round(online["compiling"] / online["floor"], 2),
            "x",
            note="PYTHONDONTWRITEBYTECODE=1 and no cache, as this bench ran before 0037",
        ),
        Result(
            "  pachctl list-repo / python -S -c pass",
            round(online["list-repo"] / online["bare"], 2),
            "x",
            note="a floor without site: no .pth files, so not the editable install's finder "
            "that every python -c pass of this venv imports (with pathlib)",
        ),
    ]
