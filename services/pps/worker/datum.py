"""Run one datum: lay out its inputs, run the user code, upload ``/pfs/out``.

As Pachyderm 1.7's worker: the environment has ``PACH_JOB_ID``,
``PACH_OUTPUT_COMMIT_ID``, and for each input ``<name>`` (the datum's path
as the code sees it, ``/pfs/<name>/<path>``) and ``<name>_COMMIT``, on top of
``transform.env``; ``transform.stdin`` is written to stdin, one line each; a
try fails on an exit code other than 0 and ``accept_return_code``, or when it
runs longer than ``datum_timeout``; a datum gets ``datum_tries`` tries
(default 3), each with a fresh ``/pfs/out`` (incremental pipelines: the
previous output). Output lines become user LogMessages.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import duration_pb2, timestamp_pb2

from libs.api.events import pps_pb2 as pachevents
from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.errors import FailedPrecondition, PachError
from libs.objects import ObjectStore
from services.pps.adapters.secrets import SecretStore
from services.pps.domain.resources import limits_of
from services.pps.runners.base import Runner, RunResult
from services.pps.runners.warm import clear_dir
from services.pps.worker.layout import OUT, PFS, InputIndex, Layout, LazyFeeder, lay_out, write_tree
from services.pps.worker.upload import stats_tree, upload

DEFAULT_DATUM_TRIES = 3
KEPT_LOG_BYTES = 8 << 20  # log text a datum's stats keep (enable_stats)
LogSink = Callable[[pps_pb2.LogMessage], Awaitable[None]]


def datum_env(
    task: pachinternal.DatumTask,
    job_id: str,
    output_commit: str,
    spec: pps_pb2.CreatePipelineRequest,
) -> dict[str, str]:
    """The variables a datum's code gets (the runner adds its base environment)."""
    env = dict(spec.transform.env)
    for inp in task.inputs:
        env[inp.name] = posixpath.join(PFS, inp.name, inp.path.lstrip("/")).rstrip("/")
        env[f"{inp.name}_COMMIT"] = inp.commit
    env["PACH_JOB_ID"] = job_id
    env["PACH_OUTPUT_COMMIT_ID"] = output_commit
    return env


def transform_secrets(
    store: SecretStore | None, spec: pps_pb2.CreatePipelineRequest
) -> tuple[dict[str, str], list[tuple[Path, str]]]:
    """``transform.secrets``: the variables (``env_var`` = the value of
    ``key``) and the read-only binds (the secret's directory at
    ``mount_path``). NotFound names a missing secret or key."""
    env: dict[str, str] = {}
    binds: list[tuple[Path, str]] = []
    if not spec.transform.secrets:
        return env, binds
    if store is None:
        raise FailedPrecondition("this worker has no secret store: transform.secrets cannot run")
    for secret in spec.transform.secrets:
        if secret.env_var:
            env[secret.env_var] = store.value(secret.name, secret.key)
        if secret.mount_path:
            binds.append((store.dir_of(secret.name), secret.mount_path))
    return env, binds


def stdin_bytes(spec: pps_pb2.CreatePipelineRequest) -> bytes:
    lines = list(spec.transform.stdin)
    return ("\n".join(lines) + "\n").encode() if lines else b""


def timeout_s(spec: pps_pb2.CreatePipelineRequest) -> float | None:
    if not spec.HasField("datum_timeout"):
        return None
    seconds = spec.datum_timeout.seconds + spec.datum_timeout.nanos / 1e9
    return seconds if seconds > 0 else None


def input_files(task: pachinternal.DatumTask) -> list[pps_pb2.InputFile]:
    return [pps_pb2.InputFile(path=i.path, hash=_hash_bytes(i.hash)) for i in task.inputs]


def datum_files(task: pachinternal.DatumTask) -> list[pachevents.DatumFile]:
    """The datum's input files as its result records them: input, repo,
    commit, path and hash."""
    return [
        pachevents.DatumFile(
            name=i.name, repo=i.repo, commit=i.commit, path=i.path, hash=_hash_bytes(i.hash)
        )
        for i in task.inputs
    ]


def describe(task: pachinternal.DatumTask) -> str:
    paths = ", ".join(f"{i.name}:{i.path}" for i in task.inputs)
    return f"datum {task.id} ({paths})"


async def run_datum(
    task: pachinternal.DatumTask,
    *,
    job_id: str,
    output_commit: str,
    spec: pps_pb2.CreatePipelineRequest,
    store: ObjectStore,
    runner: Runner,
    scratch_root: Path,
    log: LogSink,
    previous_output: str = "",
    worker_id: str = "",
    secret_store: SecretStore | None = None,
    restart: asyncio.Event | None = None,
    slot: Path | None = None,
) -> pachevents.DatumResult:
    """Process ``task`` with up to ``datum_tries`` tries; never raises for a
    failure of the datum itself (the result says FAILED and why). Setting
    ``restart`` (restart-datum) stops the user code and runs the try again
    from a fresh ``/pfs/out``; the stopped try does not count. ``slot``: the
    worker slot's directory, used instead of a scratch directory of the
    datum's own: its ``pfs`` entries are emptied and kept from one datum to
    the next (the runner may keep the slot's sandbox running)."""
    run = _DatumRun(task, job_id, spec, log, worker_id, keep=spec.enable_stats)
    tries = spec.datum_tries if spec.datum_tries > 0 else DEFAULT_DATUM_TRIES
    env = datum_env(task, job_id, output_commit, spec)
    stdin = stdin_bytes(spec)
    timeout = timeout_s(spec)
    accept = {0, *spec.transform.accept_return_code}
    limits = limits_of(spec)
    if slot is not None:
        scratch = slot
    else:
        scratch = scratch_root / f"{job_id[:12]}-{task.id[:12]}-{secrets.token_hex(4)}"
    names = {i.name for i in task.inputs}
    stats = pps_pb2.ProcessStats()
    download_s = process_s = upload_s = 0.0
    layout: Layout | None = None
    reason = ""
    output = ""
    used = 0
    attempt = 0
    try:
        while attempt < tries:
            attempt += 1
            used = attempt
            try:
                secret_env, binds = (
                    await asyncio.to_thread(transform_secrets, secret_store, spec)
                    if spec.transform.secrets
                    else ({}, [])
                )
                if layout is None:
                    # a failed earlier try (or the slot's previous datum)
                    # may have left part of a layout
                    if not _emptied(scratch / "pfs", names if slot else set()):
                        await asyncio.to_thread(
                            reset_pfs, scratch / "pfs", names if slot else set()
                        )
                    layout = await lay_out(task, store, scratch / "pfs")
                    download_s += layout.seconds
                    stats.download_bytes += layout.download_bytes
                started = time.monotonic()
                laid_out_ns = await _fresh_out(layout, spec, store, previous_output, runner)
                download_s += time.monotonic() - started
                feeder = LazyFeeder(store, layout.lazy)
                feeder.start()
                await run.log_worker("beginning to run user code")
                try:
                    user_code = runner.run(
                        list(spec.transform.cmd),
                        pfs_dir=layout.pfs_dir,
                        stdin=stdin,
                        env={**env, **secret_env},
                        working_dir=spec.transform.working_dir,
                        timeout=timeout,
                        on_line=run.log_user,
                        extra_ro_binds=binds,
                        user=spec.transform.user,
                        limits=limits,
                        warm=slot is not None,
                    )
                    result = await _unless_restarted(user_code, restart)
                finally:
                    stats.download_bytes += await feeder.stop()
                if result is None:
                    await run.log_worker("restarted by restart-datum: running the user code again")
                    attempt -= 1
                    continue
                process_s += result.seconds
                if result.timed_out:
                    reason = f"{describe(task)} timed out after {timeout:g}s (datum_timeout)"
                elif result.returncode not in accept:
                    code = result.returncode
                    reason = f"{describe(task)} failed: user code exited with code {code}"
                    if result.reason:
                        reason += f": {result.reason}"
                else:
                    await run.log_worker(f"finished running user code after {result.seconds:.3f}s")
                    done = await upload(
                        store,
                        layout.pfs_dir,
                        InputIndex(store, task.inputs),
                        previous=previous_output if laid_out_ns else "",
                        laid_out_ns=laid_out_ns,
                        host_readable=runner.sees,
                    )
                    upload_s += done.seconds
                    stats.upload_bytes += done.upload_bytes
                    output = done.root.hash
                    reason = ""
                    break
            except (PachError, OSError) as err:
                reason = f"{describe(task)} failed: {err}"
            await run.log_worker(f"{reason} (try {attempt} of {tries})")
    finally:
        if slot is not None:
            await asyncio.to_thread(reset_pfs, scratch / "pfs", names)
        else:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
    stats.download_time.CopyFrom(_duration(download_s))
    stats.process_time.CopyFrom(_duration(process_s))
    stats.upload_time.CopyFrom(_duration(upload_s))
    stats_root = ""
    if spec.enable_stats:
        try:
            built = await stats_tree(
                store,
                task,
                job_id=job_id,
                stats=stats,
                logs=run.kept,
                output_tree="" if reason else output,
                failure=reason,
            )
            stats_root = built.hash
        except (PachError, OSError) as err:  # stats are extra: the datum stands
            await run.log_worker(f"stats of {describe(task)} not stored: {err}")
    return pachevents.DatumResult(
        id=task.id,
        index=task.index,
        state=pps_pb2.FAILED if reason else pps_pb2.SUCCESS,
        output_tree="" if reason else output,
        stats=stats,
        reason=reason,
        tries=used,
        inputs=datum_files(task),
        stats_tree=stats_root,
    )


async def _unless_restarted(
    code: Awaitable[RunResult], restart: asyncio.Event | None
) -> RunResult | None:
    """``code``'s result, or None when ``restart`` is set first (``code`` is
    cancelled: the runner kills the process)."""
    if restart is None:
        return await code
    running = asyncio.ensure_future(code)
    restarted = asyncio.ensure_future(restart.wait())
    try:
        await asyncio.wait({running, restarted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        restarted.cancel()
        if not running.done():
            running.cancel()
        await asyncio.gather(running, restarted, return_exceptions=True)
    if running.cancelled():
        if not restart.is_set():  # cancelled from outside: pass it on
            raise asyncio.CancelledError
        restart.clear()
        return None
    restart.clear()  # finished first: nothing left to restart
    return running.result()


async def _fresh_out(
    layout: Layout,
    spec: pps_pb2.CreatePipelineRequest,
    store: ObjectStore,
    previous: str,
    runner: Runner,
) -> int:
    """An empty ``/pfs/out``, or for an incremental pipeline the previous
    output (given to the sandbox's user first: that changes ctimes); then
    the ctime (ns) every file laid out here is older than and every later
    change is not (0: nothing laid out)."""
    out = layout.out_dir
    if not out.exists():
        out.mkdir()
    elif any(os.scandir(out)):  # emptied, not replaced: a warm sandbox binds it
        await asyncio.to_thread(clear_dir, out)
    if not (spec.incremental and previous):
        return 0
    await write_tree(store, previous, "/", out)
    await asyncio.to_thread(runner.give_out, out)
    return await asyncio.to_thread(_next_tick, layout.pfs_dir.parent / ".laid-out")


def reset_pfs(pfs_dir: Path, names: set[str]) -> None:
    """Empty ``pfs_dir`` for a datum with inputs ``names``: their
    directories and ``out`` are emptied but kept (their inodes are what a
    warm sandbox binds), everything else goes."""
    if not pfs_dir.exists():
        return
    keep = {*names, OUT} if names else set()
    with os.scandir(pfs_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and entry.name in keep:
                clear_dir(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _emptied(pfs_dir: Path, names: set[str]) -> bool:
    """Whether ``pfs_dir`` is absent or already as ``reset_pfs`` leaves it
    (a quick look: the usual case needs no thread)."""
    if not pfs_dir.exists():
        return True
    keep = {*names, OUT} if names else set()
    with os.scandir(pfs_dir) as entries:
        for entry in entries:
            if entry.name not in keep or not entry.is_dir(follow_symlinks=False):
                return False
            with os.scandir(entry.path) as inside:
                if next(inside, None) is not None:
                    return False
    return True


def _next_tick(marker: Path) -> int:
    """A ctime later than that of every file written before the call (file
    times are coarse: wait for the clock to move past the last one)."""
    marker.write_bytes(b"x")
    first = marker.stat().st_ctime_ns
    while True:
        marker.write_bytes(b"x")
        now = marker.stat().st_ctime_ns
        if now > first:
            return now
        time.sleep(0.001)


class _DatumRun:
    """Turns a datum's output lines and the worker's notes into LogMessages."""

    def __init__(
        self,
        task: pachinternal.DatumTask,
        job_id: str,
        spec: pps_pb2.CreatePipelineRequest,
        log: LogSink,
        worker_id: str,
        *,
        keep: bool = False,
    ) -> None:
        self._keep = keep
        self._kept_bytes = 0
        self.kept: list[pps_pb2.LogMessage] = []  # for the stats tree
        self._base = pps_pb2.LogMessage(
            pipeline_name=spec.pipeline.name,
            job_id=job_id,
            datum_id=task.id,
            worker_id=worker_id,
            data=input_files(task),
        )
        self._log = log

    async def log_user(self, line: str) -> None:
        await self._emit(line, user=True)

    async def log_worker(self, line: str) -> None:
        await self._emit(line, user=False)

    async def _emit(self, line: str, *, user: bool) -> None:
        msg = pps_pb2.LogMessage()
        msg.CopyFrom(self._base)
        msg.message = line
        msg.user = user
        msg.ts.CopyFrom(_now())
        if self._keep and self._kept_bytes < KEPT_LOG_BYTES:
            self.kept.append(msg)
            self._kept_bytes += len(line)
        with contextlib.suppress(PachError):  # losing a log line never fails a datum
            await self._log(msg)


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _hash_bytes(hex_hash: str) -> bytes:
    try:
        return bytes.fromhex(hex_hash)
    except ValueError:
        return hex_hash.encode()


__all__ = [
    "DEFAULT_DATUM_TRIES",
    "LogSink",
    "datum_env",
    "datum_files",
    "describe",
    "input_files",
    "run_datum",
    "stdin_bytes",
    "timeout_s",
]
