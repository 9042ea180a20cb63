"""Warm sandboxes (services/pps/runners/warm.py): a worker slot's datums run
one after another in one bubblewrap sandbox, each seeing only its own
inputs, an empty /pfs/out and an empty /tmp, with nothing of the previous
datum left running; the outputs are those of a sandbox per datum."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.objects import LocalObjectStore
from services.pps.runners.local import LocalRunner
from services.pps.runners.warm import WarmSandbox
from services.pps.worker.datum import run_datum
from tests.integration.test_pps_worker import Logs, _files, _spec, _task, _tree


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[LocalRunner]:
    (tmp_path / "scratch").mkdir(mode=0o755)
    runner = LocalRunner(hide=[tmp_path / "scratch"], reuse=True)
    yield runner
    runner.close()


async def _in_slot(
    store: LocalObjectStore,
    runner: LocalRunner,
    tmp_path: Path,
    task: pachinternal.DatumTask,
    spec: pps_pb2.CreatePipelineRequest,
    slot: Path | None,
    logs: Logs | None = None,
) -> tuple[str, dict[str, bytes]]:
    result = await run_datum(
        task,
        job_id="job1",
        output_commit="out1",
        spec=spec,
        store=store,
        runner=runner,
        scratch_root=tmp_path / "scratch",
        log=logs or Logs(),
        worker_id="w1",
        slot=slot,
    )
    files = await _files(store, result.output_tree) if result.output_tree else {}
    return result.reason, files


def _box(runner: LocalRunner, slot: Path) -> WarmSandbox | None:
    return runner._warm.get(slot / "pfs")


async def test_a_slots_datums_share_a_sandbox_but_nothing_else(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"first secret\n", "/b": b"second\n"})
    slot = tmp_path / "scratch" / "slot-0"
    # Each datum: report what it sees, then leave traces behind: a file in
    # /tmp and /pfs/out, a process in the background (its own session),
    # and a System V shared memory segment.
    script = (
        "{ echo in: $(ls -A /pfs/in); echo pfs: $(ls -A /pfs); "
        "echo out: $(ls -A /pfs/out | grep -vx seen); "
        "echo tmp: $(ls -A /tmp); echo procs: $(cat /proc/[0-9]*/cmdline | tr '\\0' ' '); "
        "echo ipc: $(tail -n +2 /proc/sysvipc/shm | wc -l); } > /pfs/out/seen; "
        "cp /pfs/in/* /tmp/stolen; echo left > /pfs/out/left-$(ls /pfs/in); "
        "setsid sh -c 'sleep 60; cp /pfs/in/* /pfs/out/ 2>/dev/null' >/dev/null 2>&1 & "
        "python3 -c 'import ctypes; ctypes.CDLL(None).shmget(4242, 4096, 0o1600)'; "
        "tail -n +2 /proc/sysvipc/shm | wc -l > /pfs/out/ipc-after"
    )
    spec = _spec("sh", "-c", script)
    reason, first = await _in_slot(
        store, runner, tmp_path, await _task(store, tree, "/a"), spec, slot
    )
    assert reason == ""
    box = _box(runner, slot)
    assert box is not None
    reason, second = await _in_slot(
        store, runner, tmp_path, await _task(store, tree, "/b"), spec, slot
    )
    assert reason == ""
    assert _box(runner, slot) is box and box.datums == 2  # one sandbox
    seen = dict(line.split(":", 1) for line in second["/seen"].decode().splitlines())
    assert seen["in"].split() == ["b"]  # only its own input
    assert seen["pfs"].split() == ["in", "out"]
    assert seen["out"].split() == []  # an empty /pfs/out
    assert seen["tmp"].split() == []  # nothing the first datum left in /tmp
    assert "sleep" not in seen["procs"]  # nor running
    assert seen["ipc"].strip() == "0"  # nor in System V IPC
    assert set(second) == {"/seen", "/left-b", "/ipc-after"}
    assert set(first) == {"/seen", "/left-a", "/ipc-after"}
    assert first["/ipc-after"].strip() == b"1"  # the first did make a segment
    assert not any(p.is_file() for p in slot.rglob("*"))  # nothing left on the host either


async def test_user_code_cannot_trace_or_read_the_driver(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"x\n"})
    slot = tmp_path / "scratch" / "slot-0"
    script = (
        "for f in fd/0 environ mem maps; do "
        "if cat /proc/$PPID/$f >/dev/null 2>&1; then echo $f:OPEN; else echo $f:BLOCKED; fi; "
        "done > /pfs/out/r; ls /proc/$PPID/fd >/dev/null 2>&1 && echo fdlist:OPEN >> /pfs/out/r; "
        "cat /proc/$PPID/cmdline | tr '\\0' ' ' > /pfs/out/parent"
    )
    reason, out = await _in_slot(
        store, runner, tmp_path, await _task(store, tree, "/a"), _spec("sh", "-c", script), slot
    )
    assert reason == ""
    assert b"-I -S -c" in out["/parent"]  # the parent is the driver
    assert out["/r"].decode().split() == [
        "fd/0:BLOCKED",
        "environ:BLOCKED",
        "mem:BLOCKED",
        "maps:BLOCKED",
    ]


async def test_a_datum_that_kills_the_driver_fails_and_the_next_gets_a_new_sandbox(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"x\n", "/b": b"y\n"})
    slot = tmp_path / "scratch" / "slot-0"
    spec = _spec("sh", "-c", "cp /pfs/in/* /pfs/out/; test -e /pfs/in/b || kill -9 $PPID; sleep 1")
    spec.datum_tries = 1
    reason, _ = await _in_slot(store, runner, tmp_path, await _task(store, tree, "/a"), spec, slot)
    assert "failed" in reason
    assert _box(runner, slot) is None  # ended
    reason, out = await _in_slot(
        store, runner, tmp_path, await _task(store, tree, "/b"), spec, slot
    )
    assert reason == "" and out == {"/b": b"y\n"}


async def test_a_timed_out_datum_ends_its_sandbox_and_the_next_runs(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"x\n", "/b": b"y\n"})
    slot = tmp_path / "scratch" / "slot-0"
    spec = _spec(
        "sh", "-c", "cp /pfs/in/* /pfs/out/; test -e /pfs/in/b || sleep 30", datum_timeout=1
    )
    spec.datum_tries = 1
    reason, _ = await _in_slot(store, runner, tmp_path, await _task(store, tree, "/a"), spec, slot)
    assert "timed out" in reason
    reason, out = await _in_slot(
        store, runner, tmp_path, await _task(store, tree, "/b"), spec, slot
    )
    assert reason == "" and out == {"/b": b"y\n"}


async def test_outputs_in_a_warm_sandbox_equal_a_sandbox_per_datum(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    files = {f"/d{i}/f{i}": b"line %d\n" % i for i in range(6)}
    tree = await _tree(store, files)
    script = (
        "n=$(ls /pfs/in); mkdir -p /pfs/out/by/$n; cat /pfs/in/$n/* > /pfs/out/by/$n/copy; "
        "echo $n >> /pfs/out/all; wc -c /pfs/in/$n/* | cut -d' ' -f1 > /pfs/out/by/$n/size; "
        "echo $n > /tmp/scratch; cat /tmp/scratch > /pfs/out/by/$n/tmp"
    )
    spec = _spec("sh", "-c", script)
    warm: list[tuple[str, dict[str, bytes]]] = []
    cold: list[tuple[str, dict[str, bytes]]] = []
    slot = tmp_path / "scratch" / "slot-0"
    for path in sorted(files):
        task = await _task(store, tree, path.rsplit("/", 1)[0])
        warm.append(await _in_slot(store, runner, tmp_path, task, spec, slot))
        cold.append(await _in_slot(store, runner, tmp_path, task, spec, None))
    box = _box(runner, slot)
    assert box is not None and box.datums == len(files)
    assert warm == cold
    assert all(reason == "" for reason, _ in warm)
    assert warm[2][1]["/by/d2/copy"] == b"line 2\n"


async def test_exit_codes_match_a_sandbox_per_datum(runner: LocalRunner, tmp_path: Path) -> None:
    pfs = tmp_path / "scratch" / "slot-0" / "pfs"
    (pfs / "in").mkdir(parents=True)
    (pfs / "out").mkdir()

    async def ignore(_: str) -> None:
        return None

    for cmd in (["sh", "-c", "exit 3"], ["sh", "-c", "kill -9 $$"], ["no-such-program"]):
        codes = []
        for warm in (True, False):
            result = await runner.run(
                cmd,
                pfs_dir=pfs,
                stdin=b"",
                env={},
                working_dir="",
                timeout=20,
                on_line=ignore,
                warm=warm,
            )
            codes.append(result.returncode)
        assert codes[0] == codes[1], (cmd, codes)
    assert runner._warm[pfs].datums == 3


def test_many_datums_under_uvloop_keep_their_output_and_leak_nothing(tmp_path: Path) -> None:
    # The workers run on uvloop: two slots, each many datums with stdin,
    # stdout and stderr; every line arrives, no descriptor is left open.
    import os
    import time

    import uvloop

    (tmp_path / "scratch").mkdir(mode=0o755)
    slots = [tmp_path / "scratch" / f"slot-{n}" / "pfs" for n in range(2)]
    for pfs in slots:
        (pfs / "in").mkdir(parents=True)
        (pfs / "out").mkdir()
    lines: list[str] = []

    async def keep(line: str) -> None:
        lines.append(line)

    async def main() -> tuple[int, int, float]:
        runner = LocalRunner(hide=[tmp_path / "scratch"], reuse=True)
        try:

            async def slot(pfs: Path, n: int) -> None:
                for _ in range(n):
                    result = await runner.run(
                        ["sh", "-c", "cat; echo err >&2"],
                        pfs_dir=pfs,
                        stdin=b"in\n",
                        env={},
                        working_dir="",
                        timeout=20,
                        on_line=keep,
                        warm=True,
                    )
                    assert result.returncode == 0, result

            await asyncio.gather(*(slot(p, 3) for p in slots))
            before = len(os.listdir("/proc/self/fd"))
            started = time.monotonic()
            await asyncio.gather(*(slot(p, 100) for p in slots))
            return before, len(os.listdir("/proc/self/fd")), time.monotonic() - started
        finally:
            runner.close()

    before, after, seconds = uvloop.run(main())
    assert after <= before
    assert sorted(set(lines)) == ["err", "in"] and len(lines) == 2 * 2 * 103
    assert seconds < 60  # no datum waits out the drain time (5 s)
