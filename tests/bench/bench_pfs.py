"""PFS end to end: pachctl against a running cluster (``python -m
programs.cluster``), each row next to a peer measured in the same run on the
same disk.

* put-file 1 GiB through pachctl vs ``cp`` (+ ``sync``) and vs ``dvc add``;
* get-file 1 GiB through pachctl (its HTTP fast path, and kept on gRPC)
  and through the gRPC API vs ``cat``, all warm and all cold (dropped with
  ``posix_fadvise(DONTNEED)``);
* 100,000 files of 1 KiB in one commit (start-commit, ``put-file -r`` of a
  directory, finish-commit; the stream and the finish also shown apart) vs
  ``cp -r`` (+ ``sync``) and ``dvc add`` of the same directory;
* finish-commit of a 1-path change on top of a 100,000-file commit, timed at
  the gRPC call (start-commit and the put are not timed), next to the same on
  a 1,000-file commit: it must not grow with the tree.

The dvc peer comes from ``.venv-bench`` (``make bench`` installs it); without
it those rows are left out and said so. pachctl's own start-up (~0.3 s of
imports) is inside its times, as a user sees it.

``PACH_BENCH_PFS_ONLY=putr`` runs only the put-file -r row and its ``cp -r``
peer, ``PACH_BENCH_PFS_REPEAT=N`` runs that pair N times (medians shown) and
``PACH_BENCH_PFS_FILES=N`` sets its file count (100,000 by default: a
smaller one is for iterating, not for the table).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import grpc

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from tests.bench import BenchContext, Result
from tests.support.cluster import ROOT, Cluster

MiB = 1 << 20
BIG = 1 << 30
SMALL_FILES = int(os.environ.get("PACH_BENCH_PFS_FILES") or 100_000)
# PACH_BENCH_PFS_ONLY=putr: only the put-file -r row and its cp -r peer, REPEAT times.
REPEAT = max(1, int(os.environ.get("PACH_BENCH_PFS_REPEAT") or 1))
SMALL_SIZE = 1024
SMALL_DIRS = 100
FINISH_SAMPLES = 7
READS = 3
READS_ONLY = 5  # with PACH_BENCH_PFS_ONLY=get
# PACH_BENCH_PFS_ONLY=get: only the get-file rows (and the put they need).
ONLY = os.environ.get("PACH_BENCH_PFS_ONLY", "")
DVC = ROOT / ".venv-bench" / "bin" / "dvc"


def _mbs(nbytes: int, seconds: float) -> float:
    return round(nbytes / MiB / max(seconds, 1e-9), 1)


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 1)


def _write_big(path: Path) -> None:
    """1 GiB, every 1 MiB block distinct (chunks are content-addressed)."""
    base = os.urandom(MiB - 16)
    with path.open("wb") as f:
        for i in range(BIG // MiB):
            f.write(i.to_bytes(16, "big") + base)
        f.flush()
        os.fsync(f.fileno())


def _write_small(root: Path) -> None:
    body = os.urandom(SMALL_SIZE - 16)
    per_dir = SMALL_FILES // SMALL_DIRS
    for d in range(SMALL_DIRS):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            n = d * per_dir + i
            (sub / f"f{i:04}").write_bytes(n.to_bytes(16, "big") + body)
    os.sync()


def _drop_tree_cache(root: Path) -> None:
    for directory, _, names in os.walk(root):
        for name in names:
            _drop_cache(Path(directory) / name)


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def _timed(cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(
        cmd, cwd=cwd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"command failed: {cmd}: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def _pachctl(cluster: Cluster) -> tuple[str, dict[str, str]]:
    env = {
        **os.environ,
        "PACHD_ADDRESS": f"127.0.0.1:{cluster.grpc_port}",
        "PYTHONPATH": str(ROOT),
        # its own config dir (where it keeps the local read socket's path)
        "PACH_CONFIG": str(cluster.data_dir.parent / "pachctl" / "config.json"),
        # compiled once, as an installed pachctl is (0037's bench_pachctl)
        "PYTHONPYCACHEPREFIX": str(cluster.data_dir.parent / "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return f"{sys.executable} -m programs.pachctl", env


def _finish_times(address: str, repo: str) -> list[float]:
    """Seconds FinishCommit took for commits that each put one new file."""
    times = []
    with grpc.insecure_channel(address) as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        for i in range(FINISH_SAMPLES):
            commit = api.StartCommit(
                pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name=repo)), branch="master")
            )
            put = pfs.PutFileRequest(
                file=pfs.File(commit=commit, path=f"/one-path/{i}"), value=b"x" * 100
            )
            api.PutFile(iter([put]), timeout=60)
            start = time.perf_counter()
            api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=60)
            times.append(time.perf_counter() - start)
    return times


def _api_get(address: str, repo: str, path: str, size: int) -> float:
    """Seconds a GetFile of ``path`` on master takes through the gRPC API,
    replies parsed as the generated stub (and python-pachyderm) parses them."""
    start = time.perf_counter()
    got = 0
    with grpc.insecure_channel(address) as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        file = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=repo), id="master"), path=path)
        for reply in api.GetFile(pfs.GetFileRequest(file=file), timeout=600):
            got += len(reply.value)
    if got != size:
        raise RuntimeError(f"GetFile returned {got} bytes, not {size}")
    return time.perf_counter() - start


def _put_files(address: str, repo: str, n: int) -> None:
    with grpc.insecure_channel(address) as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=repo)))
        commit = api.StartCommit(
            pfs.StartCommitRequest(parent=pfs.Commit(repo=pfs.Repo(name=repo)), branch="master")
        )
        api.PutFile(
            (
                pfs.PutFileRequest(
                    file=pfs.File(commit=commit, path=f"/d{i // 1000:03}/f{i % 1000:04}"),
                    value=i.to_bytes(8, "big") * 16,
                )
                for i in range(n)
            ),
            timeout=600,
        )
        api.FinishCommit(pfs.FinishCommitRequest(commit=commit), timeout=600)


async def _dvc_add(work: Path, target: Path) -> float:
    """Seconds ``dvc add`` takes on ``target`` in a fresh ``dvc init --no-scm`` repo."""
    repo = work / "dvc-repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    await _timed(f"{DVC} init --no-scm -q", cwd=repo, env=env)
    dest = repo / target.name
    os.rename(target, dest)
    try:
        return await _timed(f"{DVC} add -q {dest.name}", cwd=repo, env=env)
    finally:
        # dvc add leaves the workspace copy in place (cache link type copy):
        # hand it back for the next peer.
        os.rename(dest, target)
        shutil.rmtree(repo, ignore_errors=True)


async def _get_rows(
    work: Path, src: Path, pachctl: str, env: dict[str, str], address: str
) -> list[Result]:
    """get-file of ``src`` (put as big@master:/big.bin) against ``cat``."""
    results: list[Result] = []
    # get-file against cat of the same file, both warm and both cold
    # (the median of READS runs each: one run swings by +-30% on a shared
    # VM): pachctl as a user runs it (the gateway's local read socket,
    # 0039), pachctl on the HTTP download sent with sendfile (0036:
    # PACH_LOCAL_SOCKET=off), pachctl kept on gRPC (both off: the path
    # before 0036, plus one InspectFile), and the gRPC API as
    # python-pachyderm reads it. Cold: the source file and every object
    # of the store are dropped from the page cache (posix_fadvise
    # DONTNEED) before each.
    get = f"{pachctl} get-file big master /big.bin > /dev/null"
    paths = {
        "": env,
        " over HTTP (0036)": {**env, "PACH_LOCAL_SOCKET": "off"},
        " over gRPC only": {**env, "PACH_LOCAL_SOCKET": "off", "PACH_HTTP_ADDRESS": "off"},
    }
    reads = READS_ONLY if ONLY == "get" else READS
    for temp in ("warm", "cold"):
        cold = temp == "cold"
        cats: list[float] = []
        gets: dict[str, list[float]] = {name: [] for name in paths}
        apis: list[float] = []
        if not cold:  # warm them all up once (and pachctl learns the socket)
            await _timed(f"cat {src} > /dev/null")
            await _timed(get, env=env)
        for _ in range(reads):
            if cold:
                _drop_cache(src)
            cats.append(await _timed(f"cat {src} > /dev/null"))
            for name, path_env in paths.items():
                if cold:
                    _drop_tree_cache(work / "data" / "objects")
                gets[name].append(await _timed(get, env=path_env))
            if cold:
                _drop_tree_cache(work / "data" / "objects")
            apis.append(await asyncio.to_thread(_api_get, address, "big", "/big.bin", BIG))
        cat_s, api_s = statistics.median(cats), statistics.median(apis)
        floor = 0.8 if cold else 0.5
        results.append(
            Result(f"peer: cat 1 GiB > /dev/null (median, {temp})", _mbs(BIG, cat_s), "MB/s")
        )
        for name in paths:
            get_s = statistics.median(gets[name])
            results += [
                Result(
                    f"pachctl get-file{name} 1 GiB > /dev/null (median, {temp})",
                    _mbs(BIG, get_s),
                    "MB/s",
                    500.0 if cold and not name else None,
                ),
                Result(
                    f"  pachctl get-file{name} speed / cat speed, {temp}",
                    round(cat_s / get_s, 2),
                    "x",
                    floor if not name else None,
                ),
            ]
        results += [
            Result(f"gRPC GetFile 1 GiB (median, {temp})", _mbs(BIG, api_s), "MB/s"),
            Result(f"  gRPC GetFile speed / cat speed, {temp}", round(cat_s / api_s, 2), "x"),
        ]
    # Where a warm get-file's time goes: pachctl's start, then the start and
    # the socket's handshake (a 1-byte file), the rest is the transfer.
    await _timed(f"echo -n x | {pachctl} put-file big master /one", env=env)
    starts, ones = [], []
    for _ in range(reads):
        starts.append(await _timed(f"{pachctl} version --client-only", env=env))
        ones.append(await _timed(f"{pachctl} get-file big master /one > /dev/null", env=env))
    results += [
        Result("  pachctl start (version --client-only, median)", _ms(starts), "ms"),
        Result("  pachctl get-file of 1 byte (start + handshake, median)", _ms(ones), "ms"),
    ]
    return results


async def run(ctx: BenchContext) -> list[Result]:
    work = ctx.work_dir / "pfs"
    work.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    has_dvc = DVC.exists()
    if not has_dvc:
        print(f"  (dvc peer rows skipped: {DVC} missing; `make bench` installs it)")

    cluster = Cluster(work / "data", PACH_OBJECT_BACKEND="local", PACH_LOG_LEVEL="warning")
    cluster.start()
    try:
        await asyncio.to_thread(cluster.wait_ready, 60)
        pachctl, env = _pachctl(cluster)
        address = f"127.0.0.1:{cluster.grpc_port}"

        if ONLY == "putr":
            return results + await _small_rows(work, pachctl, env, False)

        # --- one 1 GiB file ----------------------------------------------------
        src = work / "big.bin"
        await asyncio.to_thread(_write_big, src)
        if ONLY == "get":
            await _timed(f"{pachctl} create-repo big", env=env)
            await _timed(f"{pachctl} put-file big master /big.bin -f {src}", env=env)
            results += await _get_rows(work, src, pachctl, env, address)
            return results
        secs = await _timed(f"cp {src} {work / 'copy.bin'} && sync {work / 'copy.bin'}")
        os.unlink(work / "copy.bin")
        results.append(Result("peer: cp 1 GiB (+sync)", _mbs(BIG, secs), "MB/s"))
        dvc_secs = None
        if has_dvc:
            dvc_secs = await _dvc_add(work, src)
            results.append(Result("peer: dvc add 1 GiB", _mbs(BIG, dvc_secs), "MB/s"))
        await _timed(f"{pachctl} create-repo big", env=env)
        secs = await _timed(f"{pachctl} put-file big master /big.bin -f {src}", env=env)
        results.append(Result("pachctl put-file 1 GiB", _mbs(BIG, secs), "MB/s", 250.0))
        if dvc_secs is not None:
            results.append(
                Result(
                    "pachctl put-file 1 GiB time / dvc add time",
                    round(secs / dvc_secs, 2),
                    "x",
                    0.5,
                    higher_is_better=False,
                )
            )

        results += await _get_rows(work, src, pachctl, env, address)
        os.unlink(src)

        # --- 100,000 files of 1 KiB ----------------------------------------------
        results += await _small_rows(work, pachctl, env, has_dvc)

        # --- finish-commit of a 1-path change ---------------------------------------
        await asyncio.to_thread(_put_files, address, "thousand", 1000)
        for repo, label in (("small", "100k"), ("thousand", "1k")):
            times = await asyncio.to_thread(_finish_times, address, repo)
            results.append(
                Result(
                    f"finish-commit, 1-path change on a {label}-file commit (median)",
                    round(statistics.median(times) * 1000, 2),
                    "ms",
                    100.0,
                    higher_is_better=False,
                )
            )
    finally:
        await asyncio.to_thread(cluster.kill)
    return results


async def _small_rows(
    work: Path, pachctl: str, env: dict[str, str], with_dvc: bool
) -> list[Result]:
    """put-file -r of SMALL_FILES x 1 KiB into an open commit, then
    finish-commit, next to ``cp -r`` + ``sync`` of the same directory just
    before it (REPEAT times, alternating; the medians when repeated)."""
    results: list[Result] = []
    label = f"{SMALL_FILES // 1000}k x 1 KiB"
    small = work / "small"
    await asyncio.to_thread(_write_small, small)
    if with_dvc:
        secs = await _dvc_add(work, small)
        results.append(Result(f"peer: dvc add {label}", round(SMALL_FILES / secs), "files/s"))
    cps: list[float] = []
    puts: list[float] = []
    finishes: list[float] = []
    for i in range(REPEAT):
        copy = work / "small-copy"
        cps.append(await _timed(f"cp -r {small} {copy} && sync"))
        shutil.rmtree(copy)
        repo = "small" if i == 0 else f"small{i}"
        await _timed(f"{pachctl} create-repo {repo}", env=env)
        # Into an open commit, so the stream and the finish are timed apart.
        await _timed(f"{pachctl} start-commit {repo} master", env=env)
        puts.append(await _timed(f"{pachctl} put-file {repo} master /in -r -f {small}", env=env))
        finishes.append(await _timed(f"{pachctl} finish-commit {repo} master", env=env))
        if REPEAT > 1:
            whole = puts[-1] + finishes[-1]
            print(
                f"  run {i + 1}: cp -r + sync {cps[-1]:.2f} s, put-file -r {puts[-1]:.2f} s "
                f"+ finish-commit {finishes[-1]:.2f} s: {cps[-1] / whole:.2f}x",
                flush=True,
            )
    ratios = [c / (p + f) for c, p, f in zip(cps, puts, finishes, strict=True)]
    cp_secs, put_secs, finish_secs = (statistics.median(t) for t in (cps, puts, finishes))
    median = " (median)" if REPEAT > 1 else ""
    results += [
        Result(f"peer: cp -r {label} (+sync){median}", round(SMALL_FILES / cp_secs), "files/s"),
        Result(
            f"pachctl put-file -r {label} + finish-commit{median}",
            round(SMALL_FILES / (put_secs + finish_secs)),
            "files/s",
            5000.0,
        ),
        Result(
            f"  put-file -r (+finish-commit) speed / cp -r (+sync) speed{median}",
            round(statistics.median(ratios), 2),
            "x",
            1.5,
        ),
        Result(f"  of which the put-file -r stream{median}", round(put_secs, 2), "s"),
        Result(f"  of which finish-commit{median}", round(finish_secs, 2), "s"),
    ]
    shutil.rmtree(small)
    return results
