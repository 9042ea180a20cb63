"""run_datum with real bubblewrap sandboxes and a real local object store."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from libs.api.events import pps_pb2 as pachevents
from libs.api.internal import pps_work_pb2 as pachinternal
from libs.api.pps import pps_pb2
from libs.filedata import FileWriter, read_refs
from libs.objects import LocalObjectStore
from libs.trees import DataRef, Op, Put, SetFooter, SetHeader, build, effective_refs, get, walk
from services.pps.runners.local import LocalRunner
from services.pps.worker.datum import run_datum

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="needs bubblewrap")


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", durable=False)


@pytest.fixture(scope="module")
def runner() -> LocalRunner:
    return LocalRunner()


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
        **flags,
    )
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
    assert [f.path for f in result.data] == ["/dir/a.txt"]


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
    spec = _spec("sh", "-c", "ls /pfs/out | wc -l > /pfs/out/n; exit 3", datum_tries=2)
    logs = Logs()
    failed = await _run(store, runner, tmp_path, task, spec, logs)
    assert failed.state == pps_pb2.FAILED
    assert failed.tries == 2 and failed.output_tree == ""
    assert "exited with code 3" in failed.reason and "in:/a" in failed.reason
    assert sum("try 2 of 2" in m.message for m in logs.messages if not m.user) == 1

    spec = _spec("sh", "-c", "ls /pfs/out | wc -l > /pfs/out/n; exit 3", accept_return_code=[3])
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
