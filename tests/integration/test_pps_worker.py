"""run_datum with real bubblewrap sandboxes and a real local object store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest
from google.protobuf import duration_pb2
from google.protobuf.empty_pb2 import Empty
from nats.aio.client import Client

from libs.api.events import pps_pb2 as pachevents
from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.api.pps import pps_pb2
from libs.bus import Bus, Context
from libs.errors import DeadlineExceeded, InvalidArgument, Unavailable
from libs.filedata import FileWriter, read_refs
from libs.objects import LocalObjectStore
from libs.trees import DataRef, Op, Put, SetFooter, SetHeader, build, effective_refs, get, walk
from programs.cluster.natsserver import NatsServer
from services.pps.adapters import work_queue as wq
from services.pps.adapters.logs import LogStore
from services.pps.runners.local import LocalRunner
from services.pps.worker.datum import run_datum
from services.pps.worker.loop import Worker, WorkerSettings


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[LocalRunner]:
    # The datums' scratch root, as the worker gives it to its runner.
    (tmp_path / "scratch").mkdir(mode=0o755)
    runner = LocalRunner(hide=[tmp_path / "scratch"])
    yield runner
    runner.close()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _tree(store: LocalObjectStore, files: dict[str, bytes], *extra: Op) -> str:
    writer = FileWriter(store)
    ops: list[Op] = [Put(p, await writer.write_file(_one(d))) for p, d in files.items()]
    await writer.flush()

    async def stream() -> AsyncIterator[Op]:
        for op in [*ops, *extra]:
            yield op

    return (await build(store, None, stream())).hash


async def _bytes(store: LocalObjectStore, refs: tuple[DataRef, ...]) -> bytes:
    return b"".join([b async for b in read_refs(store, refs)])


async def _files(store: LocalObjectStore, root: str) -> dict[str, bytes]:
    out = {}
    async for path, node in walk(store, root):
        if not node.is_dir:
            out[path] = await _bytes(store, await effective_refs(store, root, path))
    return out


async def _task(
    store: LocalObjectStore, tree: str, path: str, name: str = "in", **flags: bool
) -> pachinternal.DatumTask:
    node = await get(store, tree, path)
    assert node is not None
    inp = pachinternal.DatumInput(
        name=name,
        repo=name,
        branch="master",
        commit="c0ffee",
        tree=tree,
        path=path,
        hash=node.hash,
        is_dir=node.is_dir,
    )
    for flag, value in flags.items():  # lazy, empty_files
        setattr(inp, flag, value)
    return pachinternal.DatumTask(id="d" * 64, index=7, inputs=[inp])


def _spec(*cmd: str, **kw: object) -> pps_pb2.CreatePipelineRequest:
    spec = pps_pb2.CreatePipelineRequest(
        pipeline=pps_pb2.Pipeline(name="p"), transform=pps_pb2.Transform(cmd=list(cmd))
    )
    for key, value in kw.items():
        if key in ("stdin", "env", "accept_return_code", "working_dir"):
            target = getattr(spec.transform, key)
            if isinstance(value, dict):
                target.update(value)
            elif isinstance(value, list):
                target.extend(value)
            else:
                setattr(spec.transform, key, value)
        elif key == "datum_timeout":
            spec.datum_timeout.CopyFrom(duration_pb2.Duration(seconds=int(str(value))))
        else:
            setattr(spec, key, value)
    return spec


class Logs:
    def __init__(self) -> None:
        self.messages: list[pps_pb2.LogMessage] = []

    async def __call__(self, msg: pps_pb2.LogMessage) -> None:
        self.messages.append(msg)

    def user(self) -> list[str]:
        return [m.message for m in self.messages if m.user]


async def _run(
    store: LocalObjectStore,
    runner: LocalRunner,
    tmp_path: Path,
    task: pachinternal.DatumTask,
    spec: pps_pb2.CreatePipelineRequest,
    logs: Logs | None = None,
    previous: str = "",
) -> pachevents.DatumResult:
    result = await run_datum(
        task,
        job_id="job1",
        output_commit="out1",
        spec=spec,
        store=store,
        runner=runner,
        scratch_root=tmp_path / "scratch",
        log=logs or Logs(),
        previous_output=previous,
        worker_id="w1",
    )
    assert list((tmp_path / "scratch").iterdir()) == []  # scratch cleaned
    return result


async def test_env_stdin_and_output(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/dir/a.txt": b"alpha\n"})
    task = await _task(store, tree, "/dir/a.txt")
    spec = _spec(
        "sh",
        env={"GREETING": "hi", "PACH_JOB_ID": "not-this"},
        stdin=[
            'echo "$in|$in_COMMIT|$PACH_JOB_ID|$PACH_OUTPUT_COMMIT_ID|$GREETING" > /pfs/out/env',
            "cat $in > /pfs/out/copy; mkdir -p /pfs/out/sub/empty; echo said hello",
        ],
    )
    logs = Logs()
    result = await _run(store, runner, tmp_path, task, spec, logs)
    assert result.state == pps_pb2.SUCCESS, result.reason
    assert result.tries == 1
    out = await _files(store, result.output_tree)
    assert out == {"/env": b"/pfs/in/dir/a.txt|c0ffee|job1|out1|hi\n", "/copy": b"alpha\n"}
    assert logs.user() == ["said hello"]
    line = next(m for m in logs.messages if m.user)
    assert (line.pipeline_name, line.job_id, line.datum_id, line.worker_id) == (
        "p",
        "job1",
        "d" * 64,
        "w1",
    )
    assert [f.path for f in line.data] == ["/dir/a.txt"] and line.ts.seconds > 0
    stats = result.stats
    assert stats.download_bytes == 6 and stats.upload_bytes > 0
    assert [(f.name, f.repo, f.commit, f.path) for f in result.inputs] == [
        ("in", "in", "c0ffee", "/dir/a.txt")
    ]


async def test_directory_datum_and_working_dir(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/d/x": b"1", "/d/sub/y": b"22", "/other": b"no"})
    task = await _task(store, tree, "/d")
    script = "pwd > /pfs/out/pwd; find . -type f | sort > /pfs/out/ls"
    spec = _spec("sh", "-c", script, working_dir="/pfs/in")
    result = await _run(store, runner, tmp_path, task, spec)
    out = await _files(store, result.output_tree)
    assert out == {"/pwd": b"/pfs/in\n", "/ls": b"./d/sub/y\n./d/x\n"}


async def test_header_and_footer_frame_input_files(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    writer = FileWriter(store)
    head, foot = await writer.write_file(_one(b"H,")), await writer.write_file(_one(b",F"))
    await writer.flush()
    frame = SetHeader("/t", head), SetFooter("/t", foot)
    tree = await _tree(store, {"/t/a": b"a", "/t/b": b"b"}, *frame)
    task = await _task(store, tree, "/t")
    spec = _spec("sh", "-c", "cat /pfs/in/t/a /pfs/in/t/b > /pfs/out/all")
    result = await _run(store, runner, tmp_path, task, spec)
    out = await _files(store, result.output_tree)
    assert out == {"/all": b"H,a,FH,b,F"}


async def test_retries_then_accept_return_code(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"a"})
    task = await _task(store, tree, "/a")
    # Every try fails alike (each starts with an empty /pfs/out).
    spec = _spec(
        "sh", "-c", "n=$(ls /pfs/out | wc -l); echo $n > /pfs/out/n; exit 3", datum_tries=2
    )
    logs = Logs()
    failed = await _run(store, runner, tmp_path, task, spec, logs)
    assert failed.state == pps_pb2.FAILED
    assert failed.tries == 2 and failed.output_tree == ""
    assert "exited with code 3" in failed.reason and "in:/a" in failed.reason
    assert sum("try 2 of 2" in m.message for m in logs.messages if not m.user) == 1

    spec = _spec(
        "sh", "-c", "n=$(ls /pfs/out | wc -l); echo $n > /pfs/out/n; exit 3", accept_return_code=[3]
    )
    ok = await _run(store, runner, tmp_path, task, spec)
    assert ok.state == pps_pb2.SUCCESS and ok.tries == 1
    assert await _files(store, ok.output_tree) == {"/n": b"0\n"}


async def test_default_three_tries_each_with_fresh_out(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"a"})
    task = await _task(store, tree, "/a")
    spec = _spec("sh", "-c", "ls /pfs/out; touch /pfs/out/x; echo try; exit 1")
    logs = Logs()
    result = await _run(store, runner, tmp_path, task, spec, logs)
    assert result.tries == 3
    assert logs.user() == ["try", "try", "try"]  # /pfs/out was empty every time


async def test_datum_timeout_kills(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"a"})
    task = await _task(store, tree, "/a")
    spec = _spec("sh", "-c", "sleep 30 & sleep 30", datum_timeout=1, datum_tries=1)
    result = await _run(store, runner, tmp_path, task, spec)
    assert result.state == pps_pb2.FAILED
    assert "timed out after 1s" in result.reason
    assert result.stats.process_time.seconds < 5


async def test_symlink_to_input_is_stored_by_reference(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    big = os.urandom(3 << 20)  # a chunked file, not packed
    tree = await _tree(store, {"/img/big.bin": big, "/img/small": b"s"})
    task = await _task(store, tree, "/img")
    spec = _spec(
        "sh",
        "-c",
        "ln -s /pfs/in/img/big.bin /pfs/out/big; cd /pfs/out && ln -s ../in/img dir && "
        "ln -s big again",
    )
    result = await _run(store, runner, tmp_path, task, spec)
    root = result.output_tree
    expected = await effective_refs(store, tree, "/img/big.bin")
    for path in ("/big", "/again", "/dir/big.bin"):
        assert await effective_refs(store, root, path) == expected
    assert await _files(store, root) == {
        "/big": big,
        "/again": big,
        "/dir/big.bin": big,
        "/dir/small": b"s",
    }
    assert result.stats.upload_bytes == 0


async def test_dangling_symlink_fails_the_datum(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"a"})
    task = await _task(store, tree, "/a")
    spec = _spec("sh", "-c", "echo x > /tmp/x; ln -s /tmp/x /pfs/out/x", datum_tries=1)
    result = await _run(store, runner, tmp_path, task, spec)
    assert result.state == pps_pb2.FAILED
    assert "symlink to /tmp/x" in result.reason


async def test_lazy_input_is_a_pipe_fed_on_open(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    data = os.urandom(300_000)  # more than a pipe buffer holds
    tree = await _tree(store, {"/l/read": data, "/l/unread": b"never opened"})
    task = await _task(store, tree, "/l", lazy=True)
    spec = _spec(
        "sh", "-c", "test -p /pfs/in/l/read && cat /pfs/in/l/read > /pfs/out/got", datum_timeout=20
    )
    result = await _run(store, runner, tmp_path, task, spec)
    assert result.state == pps_pb2.SUCCESS, result.reason
    assert await _files(store, result.output_tree) == {"/got": data}
    assert result.stats.download_bytes == len(data)


async def test_empty_files_input(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/e/a": b"content", "/e/b": b"more"})
    task = await _task(store, tree, "/e", empty_files=True)
    spec = _spec("sh", "-c", "wc -c /pfs/in/e/a /pfs/in/e/b | head -2 > /pfs/out/sizes")
    result = await _run(store, runner, tmp_path, task, spec)
    out = await _files(store, result.output_tree)
    assert out["/sizes"].split() == [b"0", b"/pfs/in/e/a", b"0", b"/pfs/in/e/b"]


async def test_inputs_are_read_only_and_incremental_out(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/a": b"a"})
    previous = await _tree(store, {"/count": b"1\n"})
    task = await _task(store, tree, "/")
    spec = _spec(
        "sh",
        "-c",
        "touch /pfs/in/new 2>/dev/null && echo writable; "
        "echo $(( $(cat /pfs/out/count) + 1 )) > /pfs/out/count; echo $in",
        incremental=True,
    )
    logs = Logs()
    result = await _run(store, runner, tmp_path, task, spec, logs, previous=previous)
    assert logs.user() == ["/pfs/in"]
    assert await _files(store, result.output_tree) == {"/count": b"2\n"}


async def test_enable_stats_builds_the_datum_stats_tree(
    store: LocalObjectStore, runner: LocalRunner, tmp_path: Path
) -> None:
    tree = await _tree(store, {"/d/a": b"alpha"})
    task = await _task(store, tree, "/d")
    ok = await _run(
        store,
        runner,
        tmp_path,
        task,
        _spec("sh", "-c", "echo hi; cp $in/a /pfs/out/", enable_stats=True),
    )
    files = await _files(store, ok.stats_tree)
    base = "/" + "d" * 64
    assert files[f"{base}/job:job1"] == b""
    assert files[f"{base}/pfs/in/d/a"] == b"alpha" and files[f"{base}/pfs/out/a"] == b"alpha"
    assert b'"message": "hi"' in files[f"{base}/logs"] and b'"user": true' in files[f"{base}/logs"]
    assert b"downloadBytes" in files[f"{base}/stats"]
    assert f"{base}/failure" not in files

    bad = await _run(
        store, runner, tmp_path, task, _spec("false", enable_stats=True, datum_tries=1)
    )
    files = await _files(store, bad.stats_tree)
    assert b"exited with code 1" in files[f"{base}/failure"]
    assert not any(p.startswith(f"{base}/pfs/out") for p in files)
    plain = await _run(store, runner, tmp_path, task, _spec("true"))
    assert plain.stats_tree == ""


# --- the worker process: chunks in, ChunkDone out ----------------------------


class FakePps:
    """Serves what a worker asks of pps: the spec and ChunkDone (the first
    report is answered Unavailable, as a pps restarting would)."""

    def __init__(self, spec: pps_pb2.CreatePipelineRequest) -> None:
        self.spec = spec
        self.reports: list[pachinternal.ChunkDoneRequest] = []
        self.refused = 0
        self.spec_asks = 0

    async def serve(self, bus: Bus) -> None:
        async def get_spec(
            req: pachinternal.PipelineSpecRequest, _: Context
        ) -> pachinternal.PipelineSpec:
            self.spec_asks += 1
            assert req.pipeline.name == self.spec.pipeline.name
            return pachinternal.PipelineSpec(spec=self.spec, version=1, salt="s")

        async def chunk_done(req: pachinternal.ChunkDoneRequest, _: Context) -> Empty:
            if not self.refused:
                self.refused += 1
                raise Unavailable("pps is restarting")
            self.reports.append(req)
            return Empty()

        await bus.serve("GetPipelineSpec", pachinternal.PipelineSpecRequest, get_spec, kind="qry")
        await bus.serve("ChunkDone", pachinternal.ChunkDoneRequest, chunk_done, kind="cmd")


async def _until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polls test state
            await asyncio.sleep(0.05)


async def _chunk(store: LocalObjectStore, n: int, datums: int = 2) -> pachinternal.WorkChunk:
    tree = await _tree(store, {f"/f{i}": f"datum {i}\n".encode() for i in range(datums)})
    tasks = []
    for i in range(datums):
        task = await _task(store, tree, f"/f{i}")
        task.id, task.index = f"{n}-{i}".ljust(64, "0"), i
        tasks.append(task)
    return pachinternal.WorkChunk(
        job_id="job1", pipeline="p", pipeline_version=1, chunk=n, datums=tasks, output_commit="o"
    )


async def test_worker_runs_chunks_reports_and_acks(
    nc: Client, store: LocalObjectStore, tmp_path: Path
) -> None:
    js = nc.jetstream()
    await wq.ensure_stream(js)
    logs = LogStore(js)
    await logs.ensure()
    fake = FakePps(_spec("sh", "-c", "cat $in > /pfs/out/$(basename $in); echo did $in"))
    pps_bus = Bus(nc, service="pps")
    await fake.serve(pps_bus)
    settings = WorkerSettings("p", "w1", 5.0, tmp_path / "scratch")
    worker = Worker(
        bus=Bus(nc, service="pps-worker", timeout=2.0),
        js=js,
        store=store,
        runner=LocalRunner(hide=[settings.scratch_root]),
        logs=logs,
        settings=settings,
    )
    running = asyncio.create_task(worker.run())
    try:
        for n in range(2):
            await wq.publish_chunk(js, await _chunk(store, n))
        await _until(lambda: worker.chunks_done == 2)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await pps_bus.close()
    assert [r.chunk for r in fake.reports] == [0, 1] and fake.refused == 1
    assert fake.spec_asks == 1  # cached by version
    for report in fake.reports:
        assert report.worker_id == "w1" and report.job_id == "job1"
        assert [r.state for r in report.results] == [pps_pb2.SUCCESS] * 2
        assert await _files(store, report.results[1].output_tree) == {"/f1": b"datum 1\n"}
    assert (await js.stream_info(wq.STREAM)).state.messages == 0  # acked
    page = await logs.page(pps_pb2.GetLogsRequest(pipeline=pps_pb2.Pipeline(name="p")))
    user = [m.message for m in page.messages if m.user]
    # Two datums of a chunk run at once: their lines may interleave.
    assert sorted(user) == ["did /pfs/in/f0"] * 2 + ["did /pfs/in/f1"] * 2
    # no datum file is left; the slots' directories stay for the next chunk
    assert [p for p in (tmp_path / "scratch" / "w1").rglob("*") if not p.is_dir()] == []


def _worker_env(nats_url: str, data: Path, worker_id: str) -> dict[str, str]:
    return {
        **os.environ,
        "PACH_NATS_URL": nats_url,
        "PACH_DATA_DIR": str(data),
        "PACH_PPS_PIPELINE": "p",
        "PACH_PPS_WORKER_ID": worker_id,
        "PACH_PPS_ACK_WAIT_S": "2",
        "PACH_LOG_LEVEL": "warning",
    }


async def _start_worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.pps.worker", env=env
    )


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline() or []
    except psutil.Error:
        return []


def _sandboxed(marker: str) -> list[psutil.Process]:
    """Processes running user code whose command line holds ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in p.info["cmdline"] or []):
                found.append(p)
    return found


async def test_killed_worker_chunk_goes_to_another_and_its_code_dies(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "objects").mkdir(parents=True)
    store = LocalObjectStore(data / "objects", durable=False)
    js = nc.jetstream()
    await wq.ensure_stream(js)
    fake = FakePps(
        _spec("sh", "-c", "echo started $PACH_JOB_ID; sleep 2.7181; echo ok > /pfs/out/x")
    )
    fake.refused = 1  # answer at once
    pps_bus = Bus(nc, service="pps")
    await fake.serve(pps_bus)
    logs = LogStore(js)
    await logs.ensure()
    await wq.publish_chunk(js, await _chunk(store, 0, datums=1))
    first = await _start_worker(_worker_env(nats_server.url, data, "wa"))
    second = None
    try:
        req = pps_pb2.GetLogsRequest(pipeline=pps_pb2.Pipeline(name="p"))

        async def started() -> bool:
            return any(m.user for m in (await logs.page(req)).messages)

        async with asyncio.timeout(20):
            while not await started():  # noqa: ASYNC110 - polls the log stream
                await asyncio.sleep(0.1)
        assert _sandboxed("2.7181")
        # the worker's sandboxes (a warm one: bwrap, its init, the driver, the code)
        under = psutil.Process(first.pid).children(recursive=True)
        assert any("-I" in _cmdline(p) for p in under)  # the driver
        first.kill()
        await first.wait()
        await _until(lambda: not _sandboxed("2.7181"), 5)  # the user code died with it
        await _until(lambda: not [p for p in under if _alive(p)], 5)
        second = await _start_worker(_worker_env(nats_server.url, data, "wb"))
        await _until(lambda: len(fake.reports) == 1, 30)
        report = fake.reports[0]
        assert report.worker_id == "wb"
        assert report.results[0].state == pps_pb2.SUCCESS
        assert await _files(store, report.results[0].output_tree) == {"/x": b"ok\n"}
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await pps_bus.close()


async def test_worker_exits_when_its_parent_dies(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    pid_file = tmp_path / "worker.pid"
    env = _worker_env(nats_server.url, tmp_path / "data", "wp")
    script = f'"{sys.executable}" -m services.pps.worker & echo $! > {pid_file}; wait'
    parent = await asyncio.create_subprocess_exec("sh", "-c", script, env=env)
    bus = Bus(nc, service="test")
    try:
        async with asyncio.timeout(20):  # the worker is up and serving
            while True:
                with contextlib.suppress(Unavailable, DeadlineExceeded):
                    health = await bus.request(
                        "pps-worker", "Health", HealthRequest(), HealthResponse, kind="qry"
                    )
                    if health.ready:
                        break
                await asyncio.sleep(0.1)
        worker = psutil.Process(int(pid_file.read_text()))
        parent.kill()
        await parent.wait()
        await _until(lambda: not worker.is_running() or worker.status() == "zombie", 10)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        with contextlib.suppress(psutil.Error, ValueError, OSError):
            psutil.Process(int(pid_file.read_text())).kill()


async def test_worker_waiting_for_nats_exits_when_its_parent_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    env = _worker_env("nats://127.0.0.1:1", tmp_path / "data", "wn")  # nothing listens
    script = f'"{sys.executable}" -m services.pps.worker & echo $! > {pid_file}; wait'
    parent = await asyncio.create_subprocess_exec("sh", "-c", script, env=env)
    try:
        await _until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 10)
        worker = psutil.Process(int(pid_file.read_text()))
        await asyncio.sleep(1.5)  # started, retrying its NATS connection
        assert worker.is_running()
        parent.kill()
        await parent.wait()
        await _until(lambda: not worker.is_running() or worker.status() == "zombie", 10)
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        with contextlib.suppress(psutil.Error, ValueError, OSError):
            psutil.Process(int(pid_file.read_text())).kill()


def test_worker_settings_from_env(tmp_path: Path) -> None:
    s = WorkerSettings.from_env(tmp_path, {"PACH_PPS_PIPELINE": "edges", "PACH_PPS_WORKER_ID": "w"})
    assert (s.pipeline, s.worker_id, s.ack_wait) == ("edges", "w", 30.0)
    assert s.own_scratch == tmp_path / "pps-scratch" / "w"
    assert s.progress_every == 5.0
    with pytest.raises(InvalidArgument, match="PACH_PPS_PIPELINE"):
        WorkerSettings.from_env(tmp_path, {})


async def test_spawn_floor_is_milliseconds(runner: LocalRunner) -> None:
    assert 0 < await runner.spawn_floor(3) < 1.0
