"""pachctl's pipeline, job, datum and log commands: argument parsing, the
requests they build, 1.7's tables and templates rendered from hand-built
messages, spec files from a path, stdin or a URL, and the gRPC plumbing
against a stand-in pps.API / admin.API served in this process."""

from __future__ import annotations

import argparse
import http.server
import io
import json
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.admin import admin_pb2, admin_pb2_grpc
from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.errors import InvalidArgument, Unavailable
from libs.pps.spec import load_specs, spec_to_json
from programs.cluster.natsserver import free_port
from programs.pachctl.cli import build_parser, run
from programs.pachctl.commands import job as jobcmd
from programs.pachctl.commands import pipeline as pipecmd

NOW = 1_700_000_000.0
SPEC = {
    "pipeline": {"name": "edges"},
    "transform": {"cmd": ["python3", "/edges.py"], "image": "opencv"},
    "input": {"atom": {"repo": "images", "glob": "/*"}},
}


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def dur(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def a_job(**extra: Any) -> pps.JobInfo:
    info = pps.JobInfo(
        job=pps.Job(id="a" * 32),
        pipeline=pps.Pipeline(name="edges"),
        output_commit=pfs.Commit(repo=pfs.Repo(name="edges"), id="c" * 32),
        started=ts(NOW - 125),
        finished=ts(NOW - 5),
        restart=1,
        data_processed=7,
        data_skipped=2,
        data_total=10,
        state=pps.JOB_SUCCESS,
        stats=pps.ProcessStats(download_bytes=2048, upload_bytes=1536),
    )
    for key, value in extra.items():
        field = getattr(info, key)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        elif isinstance(value, list):
            field.extend(value)
        else:
            setattr(info, key, value)
    return info


# --- small helpers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (90 * 10**9, "1m30s"),
        (3600 * 10**9, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2 * 10**9, "-2s"),
    ],
)
def test_go_duration_strings(ns: int, text: str) -> None:
    assert jobcmd.go_duration(ns) == text


def test_compact_text_like_go() -> None:
    assert jobcmd.compact(pps.ParallelismSpec(constant=1)) == "constant:1 "
    assert jobcmd.compact(pps.ParallelismSpec(coefficient=0.5)) == "coefficient:0.5 "
    info = pps.PipelineInfo()
    assert jobcmd.message_or_nil(info, "parallelism_spec") == "<nil>"


@pytest.mark.parametrize(
    ("text", "repo", "commit"),
    [("images/master", "images", "master"), ("images@abc", "images", "abc"),
     ("images", "images", ""), ("images/master^2", "images", "master^2")],
)  # fmt: skip
def test_commit_arguments(text: str, repo: str, commit: str) -> None:
    got = jobcmd.parse_commit_arg(text)
    assert (got.repo.name, got.id) == (repo, commit)


@pytest.mark.parametrize("text", ["/abc", "@abc", "images@", "images/"])
def test_bad_commit_arguments(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid commit"):
        jobcmd.parse_commit_arg(text)


# --- requests built from arguments -----------------------------------------------------


def test_list_job_flags() -> None:
    req = jobcmd.list_job_request(
        parse("list-job", "-p", "edges", "-o", "edges/c1", "-i", "a/1,b@2", "--input", "c/3")
    )
    assert req.pipeline.name == "edges"
    assert (req.output_commit.repo.name, req.output_commit.id) == ("edges", "c1")
    assert [(c.repo.name, c.id) for c in req.input_commit] == [("a", "1"), ("b", "2"), ("c", "3")]
    bare = jobcmd.list_job_request(parse("list-job"))
    assert not bare.HasField("pipeline") and not bare.HasField("output_commit")


def test_flush_job_flags() -> None:
    req = jobcmd.flush_job_request(parse("flush-job", "a/1", "b/2", "-p", "x", "-p", "y"))
    assert [c.repo.name for c in req.commits] == ["a", "b"]
    assert [p.name for p in req.to_pipelines] == ["x", "y"]


def test_list_datum_paging() -> None:
    req = jobcmd.list_datum_request(parse("list-datum", "j1", "--pageSize", "10", "--page", "2"))
    assert (req.job.id, req.page_size, req.page) == ("j1", 10, 2)
    with pytest.raises(InvalidArgument, match="pageSize must be zero or positive"):
        jobcmd.list_datum_request(parse("list-datum", "j1", "--pageSize", "-1"))
    with pytest.raises(InvalidArgument, match="page must be zero or positive"):
        jobcmd.list_datum_request(parse("list-datum", "j1", "--page", "-1"))


def test_get_logs_flags() -> None:
    req = jobcmd.get_logs_request(
        parse("get-logs", "-p", "edges", "--job", "j", "--datum", "d", "--inputs", "/a,,ff00",
              "--master", "-f", "-t", "5")
    )  # fmt: skip
    assert req.pipeline.name == "edges" and req.job.id == "j"
    assert (req.datum.id, req.datum.job.id) == ("d", "j")
    assert list(req.data_filters) == ["/a", "ff00"]
    assert req.master and req.follow and req.tail == 5
    bare = jobcmd.get_logs_request(parse("get-logs"))
    assert not bare.HasField("pipeline") and not bare.HasField("job") and not bare.data_filters


def test_log_lines_follow_1_7s_filter() -> None:
    user = pps.LogMessage(message="hello", user=True, pipeline_name="edges")
    worker = pps.LogMessage(message="worker says", pipeline_name="edges")
    master = pps.LogMessage(message="master says\n", master=True)
    by_pipeline = parse("get-logs", "-p", "edges")
    assert jobcmd.log_line(user, by_pipeline) == "hello\n"
    assert jobcmd.log_line(worker, by_pipeline) is None
    assert jobcmd.log_line(master, by_pipeline) is None
    assert jobcmd.log_line(master, parse("get-logs", "-p", "edges", "--master")) == "master says\n"
    assert jobcmd.log_line(worker, parse("get-logs")) == "worker says\n"
    raw = jobcmd.log_line(user, parse("get-logs", "--raw"))
    assert raw is not None and raw.count("\n") == 1
    assert json.loads(raw) == {"pipelineName": "edges", "message": "hello", "user": True}


def test_delete_pipeline_arguments() -> None:
    req = pipecmd.delete_request(parse("delete-pipeline", "edges", "-f"))
    assert (req.pipeline.name, req.force, req.all) == ("edges", True, False)
    req = pipecmd.delete_request(parse("delete-pipeline", "--all"))
    assert req.all and not req.HasField("pipeline")
    with pytest.raises(InvalidArgument, match="cannot use the --all flag with an argument"):
        pipecmd.delete_request(parse("delete-pipeline", "edges", "--all"))
    with pytest.raises(InvalidArgument, match="either a pipeline name or the --all flag"):
        pipecmd.delete_request(parse("delete-pipeline"))


def test_usage_errors_are_one_line() -> None:
    for argv in (["inspect-job"], ["list-datum"], ["restart-datum", "j"], ["delete-pipeline"]):
        code, out, err = cli(*argv)
        assert code == 1 and out == "" and err.count("\n") == 1, (argv, err)


# --- tables ------------------------------------------------------------------------------


def test_job_table() -> None:
    running = a_job(state=pps.JOB_RUNNING)
    running.ClearField("finished")
    lines = jobcmd.job_table([a_job(), running], now=NOW).split("\n")
    assert lines[0].split() == ["ID", "OUTPUT", "COMMIT", "STARTED", "DURATION", "RESTART",
                                "PROGRESS", "DL", "UL", "STATE"]  # fmt: skip
    row = lines[1]
    assert row.startswith("a" * 32 + " edges/" + "c" * 32 + " 2 minutes ago ")
    assert row.split()[-11:] == [
        "2",
        "minutes",
        "1",
        "7",
        "+",
        "2",
        "/",
        "10",
        "2KiB",
        "1.5KiB",
        "success",
    ]
    assert lines[2].split()[-10:] == [
        "-",
        "1",
        "7",
        "+",
        "2",
        "/",
        "10",
        "2KiB",
        "1.5KiB",
        "running",
    ]
    # columns line up (Go's tabwriter, padding 1)
    assert lines[0].index("OUTPUT COMMIT") == 33 and lines[1].index("edges/") == 33


def test_job_without_output_commit() -> None:
    info = a_job()
    info.ClearField("output_commit")
    assert "\tedges/-\t" in jobcmd.job_row(info, NOW)
    info.ClearField("pipeline")
    assert "\t-\t" in jobcmd.job_row(info, NOW)


def test_pipeline_table_and_shorthand_inputs() -> None:
    atom = pps.Input(atom=pps.AtomInput(repo="images", glob="/*"))
    cron = pps.Input(cron=pps.CronInput(name="tick", spec="@every 10s"))
    both = pps.Input(cross=[atom, pps.Input(union=[atom, cron])])
    cross, union = pipecmd.CROSS, pipecmd.UNION
    assert pipecmd.shorthand_input(both) == f"(images:/*{cross}(images:/*{union}tick:@every 10s))"
    assert cross == " \u2a2f " and union == " \u222a "
    info = pps.PipelineInfo(
        pipeline=pps.Pipeline(name="edges"),
        input=atom,
        output_branch="master",
        created_at=ts(NOW - 3),
        state=pps.PIPELINE_RUNNING,
    )
    lines = pipecmd.pipeline_table([info], now=NOW).split("\n")
    assert lines[0].split() == ["NAME", "INPUT", "OUTPUT", "CREATED", "STATE"]
    assert lines[1].split("  ")[0].split() == ["edges", "images:/*", "edges/master", "3",
                                                "seconds", "ago", "running"]  # fmt: skip


def test_datum_table() -> None:
    done = pps.DatumInfo(
        datum=pps.Datum(id="d1", job=pps.Job(id="j")),
        state=pps.SUCCESS,
        stats=pps.ProcessStats(download_time=dur(1), process_time=dur(60), upload_time=dur(2)),
    )
    skipped = pps.DatumInfo(datum=pps.Datum(id="d2"), state=pps.SKIPPED)
    lines = jobcmd.datum_table([done, skipped]).split("\n")
    assert [line.split() for line in lines[:3]] == [
        ["ID", "STATUS", "TIME"],
        ["d1", "success", "About", "a", "minute"],
        ["d2", "skipped", "-"],
    ]


def test_long_listings_repeat_the_header() -> None:
    text = jobcmd.job_table([a_job() for _ in range(120)], now=NOW)
    assert text.count("OUTPUT COMMIT") == 3  # every 50 lines, as 1.7's streaming writer


# --- templates -----------------------------------------------------------------------------


def test_inspect_job_template() -> None:
    info = a_job(
        parent_job=pps.Job(id="p" * 32),
        reason="all good",
        data_failed=1,
        transform=pps.Transform(cmd=["sh"], stdin=["echo <hi>"]),
        input=pps.Input(atom=pps.AtomInput(name="images", repo="images", glob="/*")),
        datum_timeout=dur(90),
        parallelism_spec=pps.ParallelismSpec(constant=2),
        egress=pps.Egress(URL="s3://b/p"),
        worker_status=[pps.WorkerStatus(worker_id="w1", job_id="j", queue_size=3)],
    )
    text = jobcmd.detailed_job(info, now=NOW)
    assert text.startswith(f"ID: {'a' * 32} \nPipeline: edges  \nParent: {'p' * 32} \n")
    for line in (
        "Started: 2 minutes ago ",
        "Duration: 2 minutes ",
        "State: success",
        "Reason: all good",
        "Processed: 7",
        "Failed: 1",
        "Skipped: 2",
        "Total: 10",
        "Data Downloaded: 2KiB",
        "Data Uploaded: 1.5KiB",
        "Download Time: Less than a second",
        "Datum Timeout: 1m30s",
        "Job Timeout: <nil>",
        "Restarts: 1",
        "ParallelismSpec: constant:2 ",
        f"Output Commit: {'c' * 32}   ",  # the template's spaces after {{end}}
        "Egress: s3://b/p ",
    ):
        assert line in text.split("\n"), line
    assert "WORKER" in text and "w1" in text
    assert '"stdin": [\n    "echo <hi>"\n  ]' in text  # not HTML-escaped
    assert 'Input:\n{\n  "atom": {\n    "name": "images",' in text


def test_inspect_pipeline_template() -> None:
    info = pps.PipelineInfo(
        pipeline=pps.Pipeline(name="edges"),
        description="finds edges",
        created_at=ts(NOW - 60),
        state=pps.PIPELINE_PAUSED,
        stopped=True,
        transform=pps.Transform(cmd=["sh"]),
        input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        output_branch="master",
        job_counts={pps.JOB_SUCCESS: 4, pps.JOB_FAILURE: 1},
        resource_limits=pps.ResourceSpec(cpu=0.5, memory="1G", gpu=1),
        recent_error="boom",
    )
    text = pipecmd.detailed_pipeline(info, now=NOW)
    lines = text.split("\n")
    assert lines[:7] == [
        "Name: edges",
        "Description: finds edges",
        "Created: About a minute ago",
        "State: paused",
        "Stopped: true",
        "Reason: ",
        "Parallelism Spec: <nil>",
    ]
    assert "ResourceLimits:\n\tCPU: 0.5\n\tMemory: 1G\n\tGPU: 1 " in text
    assert "Datum Timeout: <nil>" in lines
    assert "Output Branch: master" in lines
    assert " Recent Error: boom " in text
    assert text.endswith("Job Counts:\nstarting: 0\trunning: 0\tfailure: 1\tsuccess: 4\t\n")


def test_inspect_datum_template() -> None:
    file = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name="images"), id="c1"), path="/a.png")
    info = pps.DatumInfo(
        datum=pps.Datum(id="d1", job=pps.Job(id="j1")),
        state=pps.FAILED,
        stats=pps.ProcessStats(download_bytes=10, process_time=dur(1.5)),
        data=[pfs.FileInfo(file=file)],
    )
    text = jobcmd.detailed_datum(info)
    assert text.startswith("ID\td1\nJob ID\tj1\nState\tFAILED\nData Downloaded\t10B\n")
    assert "Total Time\t1.5s\nDownload Time\t0s\nProcess Time\t1.5s\n" in text
    # Go's tabwriter(minwidth 10, padding 3)
    assert "PFS State:\n  REPO    COMMIT    PATH      \nInputs:\n" in text
    assert text.endswith(
        "Inputs:\n  REPO     COMMIT    PATH      \n  images   c1        /a.png    \n"
    )


# --- specs: files, stdin, URLs, editing --------------------------------------------------------


def test_read_specs_from_a_file_stdin_and_several_in_one(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    other = dict(SPEC, pipeline={"name": "montage"})
    path.write_text(json.dumps(SPEC) + "\n" + json.dumps(other))
    assert [s.pipeline.name for s in pipecmd.read_specs(str(path))] == ["edges", "montage"]
    got = pipecmd.read_specs("-", io.BytesIO(json.dumps(SPEC).encode()))
    assert got[0].pipeline.name == "edges"


def test_a_bad_spec_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"pipeline": {"name": "x"}, "transform": {"cmd": ["a"]}, "inpt": {}}')
    with pytest.raises(InvalidArgument, match=f"^{path}: unknown field 'inpt'$"):
        pipecmd.read_specs(str(path))
    path.write_text(json.dumps(SPEC) + json.dumps(dict(SPEC, transform={"cmd": []})))
    with pytest.raises(InvalidArgument, match=r"transform\.cmd is empty"):
        pipecmd.read_specs(str(path))


@pytest.fixture
def http_spec() -> Iterator[str]:
    body = json.dumps(SPEC).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/p.json":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_read_specs_from_a_url(http_spec: str) -> None:
    assert pipecmd.read_specs(f"{http_spec}/p.json")[0].pipeline.name == "edges"
    with pytest.raises(Unavailable, match="HTTP 404"):
        pipecmd.read_specs(f"{http_spec}/missing.json")
    with pytest.raises(Unavailable, match=r"cannot fetch http://127\.0\.0\.1:"):
        pipecmd.read_specs(f"http://127.0.0.1:{free_port()}/p.json")
    with pytest.raises(InvalidArgument, match="unsupported URL scheme 'ftp'"):
        pipecmd.read_specs("ftp://host/p.json")


def test_edited_request() -> None:
    [original] = load_specs(json.dumps(SPEC))
    same = spec_to_json(original).encode()
    assert pipecmd.edited_request(original, same, "f", reprocess=False) is None
    changed = json.dumps(dict(SPEC, description="new")).encode()
    req = pipecmd.edited_request(original, changed, "f", reprocess=True)
    assert req is not None and req.update and req.reprocess and req.description == "new"
    with pytest.raises(InvalidArgument, match="expected one pipeline spec, found 2"):
        pipecmd.edited_request(original, changed + changed, "f", reprocess=False)


def test_run_editor(tmp_path: Path) -> None:
    target = tmp_path / "spec.json"
    target.write_text("{}")
    script = tmp_path / "ed.py"
    script.write_text("import sys; open(sys.argv[-1], 'w').write('edited')")
    pipecmd.run_editor(f"{sys.executable} {script}", str(target))
    assert target.read_text() == "edited"
    with pytest.raises(InvalidArgument, match="not found"):
        pipecmd.run_editor("no-such-editor-here", str(target))
    with pytest.raises(Exception, match="exited with status 3"):
        pipecmd.run_editor(f"{sys.executable} -c 'raise SystemExit(3)'", str(target))


def test_spec_from_info_keeps_the_shared_fields() -> None:
    info = pps.PipelineInfo(
        pipeline=pps.Pipeline(name="edges"),
        transform=pps.Transform(cmd=["sh"]),
        input=pps.Input(atom=pps.AtomInput(repo="images", glob="/*")),
        output_branch="master",
        datum_tries=3,
        salt="s",
        state=pps.PIPELINE_RUNNING,
        created_at=ts(NOW),
        job_counts={1: 2},
    )
    req = pipecmd.spec_from_info(info)
    assert req.pipeline.name == "edges" and req.output_branch == "master"
    assert req.datum_tries == 3 and req.salt == "s"
    assert req.input.atom.repo == "images" and list(req.transform.cmd) == ["sh"]


def test_update_requests_set_the_flags() -> None:
    [spec] = load_specs(json.dumps(SPEC))
    [req] = pipecmd.update_requests([spec], reprocess=True)
    assert req.update and req.reprocess


# --- against a stand-in pachd ---------------------------------------------------------------


class FakePps(pps_pb2_grpc.APIServicer):
    def __init__(self) -> None:
        self.created: list[pps.CreatePipelineRequest] = []
        self.calls: list[tuple[str, Any]] = []
        self.stream_unimplemented = False

    def CreatePipeline(self, request: Any, context: Any) -> empty_pb2.Empty:
        if request.pipeline.name == "exists":
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "pipeline exists already exists")
        self.created.append(request)
        return empty_pb2.Empty()

    def ListJobStream(self, request: Any, context: Any) -> Iterator[pps.JobInfo]:
        self.calls.append(("ListJobStream", request))
        if self.stream_unimplemented:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "no stream")
        yield a_job()

    def ListJob(self, request: Any, context: Any) -> pps.JobInfos:
        self.calls.append(("ListJob", request))
        return pps.JobInfos(job_info=[a_job(), a_job()])

    def InspectJob(self, request: Any, context: Any) -> pps.JobInfo:
        self.calls.append(("InspectJob", request))
        if request.job.id == "nope":
            context.abort(grpc.StatusCode.NOT_FOUND, "job nope not found")
        return a_job()

    def FlushJob(self, request: Any, context: Any) -> Iterator[pps.JobInfo]:
        self.calls.append(("FlushJob", request))
        yield a_job()
        yield a_job(state=pps.JOB_FAILURE)

    def ListDatumStream(self, request: Any, context: Any) -> Iterator[Any]:
        self.calls.append(("ListDatumStream", request))
        for i in range(3):
            info = pps.DatumInfo(datum=pps.Datum(id=f"d{i}"), state=pps.SUCCESS)
            yield pps.ListDatumStreamResponse(datum_info=info)

    def RestartDatum(self, request: Any, context: Any) -> empty_pb2.Empty:
        self.calls.append(("RestartDatum", request))
        return empty_pb2.Empty()

    def ListPipeline(self, request: Any, context: Any) -> pps.PipelineInfos:
        info = pps.PipelineInfo(
            pipeline=pps.Pipeline(name="edges"),
            transform=pps.Transform(cmd=["sh"]),
            input=pps.Input(atom=pps.AtomInput(name="images", repo="images", glob="/*")),
            output_branch="master",
        )
        return pps.PipelineInfos(pipeline_info=[info])

    def DeletePipeline(self, request: Any, context: Any) -> empty_pb2.Empty:
        self.calls.append(("DeletePipeline", request))
        return empty_pb2.Empty()

    def StopPipeline(self, request: Any, context: Any) -> empty_pb2.Empty:
        self.calls.append(("StopPipeline", request))
        return empty_pb2.Empty()

    def GetLogs(self, request: Any, context: Any) -> Iterator[pps.LogMessage]:
        self.calls.append(("GetLogs", request))
        yield pps.LogMessage(message="from user", user=True)
        yield pps.LogMessage(message="from worker")


class FakeAdmin(admin_pb2_grpc.APIServicer):
    def ExtractPipeline(self, request: Any, context: Any) -> admin_pb2.Op:
        [spec] = load_specs(json.dumps(dict(SPEC, pipeline={"name": request.pipeline.name})))
        return admin_pb2.Op(op1_7=admin_pb2.Op1_7(pipeline=spec))


@pytest.fixture
def pachd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePps]:
    fake = FakePps()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pps_pb2_grpc.add_APIServicer_to_server(fake, server)
    admin_pb2_grpc.add_APIServicer_to_server(FakeAdmin(), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("PACHD_ADDRESS", f"127.0.0.1:{port}")
    try:
        yield fake
    finally:
        server.stop(None)


def test_create_pipeline_sends_every_spec(pachd: FakePps, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("pipeline: {name: a}\ntransform: {cmd: [sh]}\ninput: {atom: {repo: r, "
                    "glob: /}}\n---\npipeline: {name: b}\ntransform: {cmd: [sh]}\n"
                    "input: {atom: {repo: r, glob: /}}\n")  # fmt: skip
    assert cli("create-pipeline", "-f", str(path)) == (0, "", "")
    assert [r.pipeline.name for r in pachd.created] == ["a", "b"]
    assert not pachd.created[0].update
    # sent as written: the server fills in the defaults
    assert pachd.created[0].input.atom.name == ""


def test_update_pipeline_sets_update_and_reprocess(pachd: FakePps, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(SPEC))
    assert cli("update-pipeline", "-f", str(path), "--reprocess")[0] == 0
    [req] = pachd.created
    assert req.update and req.reprocess


def test_a_bad_spec_sends_nothing(pachd: FakePps, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(SPEC) + json.dumps(dict(SPEC, input={"atom": {"repo": "x"}})))
    code, out, err = cli("create-pipeline", "-f", str(path))
    assert code == 1 and out == ""
    assert err == "pachctl: pipeline 'edges': input.atom.glob is missing: an atom input " \
        "needs a glob pattern (e.g. '/*')\n"  # fmt: skip
    assert pachd.created == []


def test_server_errors_are_one_line(pachd: FakePps, tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(dict(SPEC, pipeline={"name": "exists"})))
    code, _, err = cli("create-pipeline", "-f", str(path))
    assert (code, err) == (1, "pachctl: pipeline exists already exists (ALREADY_EXISTS)\n")
    code, _, err = cli("inspect-job", "nope")
    assert (code, err) == (1, "pachctl: job nope not found (NOT_FOUND)\n")


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    code, _, err = cli("create-pipeline", "-f", str(tmp_path / "none.json"))
    assert code == 1 and err.count("\n") == 1 and "none.json" in err


def test_push_images_is_refused(tmp_path: Path) -> None:
    code, _, err = cli("create-pipeline", "-f", str(tmp_path / "p.json"), "--push-images")
    assert code == 1 and "--push-images is not supported" in err


def test_list_job_streams_and_falls_back(pachd: FakePps) -> None:
    code, out, _ = cli("list-job", "-p", "edges")
    assert code == 0 and out.count("edges/" + "c" * 32) == 1
    assert pachd.calls[0][0] == "ListJobStream" and pachd.calls[0][1].pipeline.name == "edges"
    pachd.stream_unimplemented = True
    code, out, _ = cli("list-job")
    assert code == 0 and out.count("edges/" + "c" * 32) == 2
    assert [c[0] for c in pachd.calls[1:]] == ["ListJobStream", "ListJob"]


def test_list_job_raw(pachd: FakePps) -> None:
    code, out, _ = cli("list-job", "--raw")
    assert code == 0 and json.loads(out)["job"]["id"] == "a" * 32


def test_inspect_job_block(pachd: FakePps) -> None:
    code, out, _ = cli("inspect-job", "j1", "-b")
    assert code == 0 and out.startswith(f"ID: {'a' * 32} ")
    assert pachd.calls[-1][1].job.id == "j1" and pachd.calls[-1][1].block_state


def test_flush_job_prints_the_finished_jobs(pachd: FakePps) -> None:
    code, out, _ = cli("flush-job", "images/master", "-p", "edges")
    lines = out.rstrip("\n").split("\n")
    assert code == 0 and lines[0].startswith("ID") and len(lines) == 3
    assert lines[1].rstrip().endswith("success") and lines[2].rstrip().endswith("failure")
    assert lines[0].index("OUTPUT COMMIT") == lines[1].index("edges/")  # one aligned table
    req = pachd.calls[-1][1]
    assert req.commits[0].repo.name == "images" and req.to_pipelines[0].name == "edges"


def test_list_datum_and_restart_datum(pachd: FakePps) -> None:
    code, out, _ = cli("list-datum", "j1")
    assert code == 0 and [line.split()[0] for line in out.strip().split("\n")] == [
        "ID", "d0", "d1", "d2"]  # fmt: skip
    assert cli("restart-datum", "j1", "/a,/b", "ff00")[0] == 0
    name, req = pachd.calls[-1]
    assert name == "RestartDatum" and list(req.data_filters) == ["/a", "/b", "ff00"]
    said = jobcmd.restart_text("j1", work.RestartDatumResult(running=["d1"], failed=["d2", "d3"]))
    assert said == (
        "Restarted running datum(s) d1 of job j1: their user code was stopped and runs again\n"
        "Restarted failed datum(s) d2, d3 of job j1: they run again\n"
    )


def test_pipeline_commands(pachd: FakePps) -> None:
    code, out, _ = cli("list-pipeline")
    assert code == 0 and out.split("\n")[1].split()[:3] == ["edges", "images:/*", "edges/master"]
    code, out, _ = cli("list-pipeline", "--spec")
    assert code == 0 and load_specs(out)[0].input.atom.repo == "images"
    assert cli("stop-pipeline", "edges")[0] == 0
    assert cli("delete-pipeline", "--all", "--force")[0] == 0
    assert [c[0] for c in pachd.calls[-2:]] == ["StopPipeline", "DeletePipeline"]
    assert pachd.calls[-1][1].all and pachd.calls[-1][1].force


def test_extract_pipeline_prints_the_spec(pachd: FakePps) -> None:
    code, out, _ = cli("extract-pipeline", "edges")
    assert code == 0 and out.endswith("}\n")
    assert json.loads(out) == {
        "pipeline": {"name": "edges"},
        "transform": {"image": "opencv", "cmd": ["python3", "/edges.py"]},
        "input": {"atom": {"repo": "images", "glob": "/*"}},
    }


def test_edit_pipeline(pachd: FakePps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keep = tmp_path / "keep.py"
    keep.write_text("pass")
    code, out, _ = cli("edit-pipeline", "edges", "--editor", f"{sys.executable} {keep}")
    assert (code, out) == (0, "Pipeline unchanged, no update will be performed.\n")
    assert pachd.created == []
    change = tmp_path / "change.py"
    change.write_text(
        "import json, sys\np = sys.argv[-1]\nd = json.load(open(p))\n"
        "d['description'] = 'edited'\njson.dump(d, open(p, 'w'))\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {change}")
    assert cli("edit-pipeline", "edges", "--reprocess")[0] == 0
    [req] = pachd.created
    assert req.description == "edited" and req.update and req.reprocess


def test_get_logs(pachd: FakePps) -> None:
    code, out, _ = cli("get-logs")
    assert (code, out) == (0, "from user\nfrom worker\n")
    code, out, _ = cli("get-logs", "-p", "edges", "--inputs", "/a.png")
    assert (code, out) == (0, "from user\n")
    req = pachd.calls[-1][1]
    assert req.pipeline.name == "edges" and list(req.data_filters) == ["/a.png"]


def test_empty_messages_from_a_server_read_as_unset() -> None:
    info = a_job(service=pps.Service(), egress=pps.Egress(), resource_limits=pps.ResourceSpec())
    text = jobcmd.detailed_job(info, now=NOW)
    assert "Service:" not in text and "Egress:" not in text and "ResourceLimits:" not in text
    with_port = jobcmd.detailed_job(a_job(service=pps.Service(internal_port=80)), now=NOW)
    assert "Service:\n\tInternalPort: 80 \n\t Input:" in with_port


def test_edit_pipeline_keeps_a_refused_edit(pachd: FakePps, tmp_path: Path) -> None:
    breaker = tmp_path / "break.py"
    breaker.write_text("import sys; open(sys.argv[-1], 'w').write('{\"pipeline\": 1}')")
    code, _, err = cli("edit-pipeline", "edges", "--editor", f"{sys.executable} {breaker}")
    assert code == 1 and err.count("\n") == 1
    assert "field 'pipeline' must be an object" in err
    kept = err.rsplit("kept in ", 1)[1].rstrip(")\n")
    assert Path(kept).read_text() == '{"pipeline": 1}'
    Path(kept).unlink()
    assert pachd.created == []
