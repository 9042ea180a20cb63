"""Job, datum and log commands: inspect-job, list-job, flush-job,
delete-job, stop-job, list-datum, inspect-datum, restart-datum, get-logs
(Pachyderm 1.7's names, flags and output), plus the PPS text helpers the
pipeline commands share (states, Go durations, 1.7's JSON blocks)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from libs.api.internal import pps_work_pb2 as work
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.errors import InvalidArgument
from libs.pps.spec import message_to_dict
from programs.pachctl import pretty, progress
from programs.pachctl.address import from_env
from programs.pachctl.client import DEFAULT_TIMEOUT_S, LONG_TIMEOUT_S, Pachd, ServerError
from programs.pachctl.tabwriter import StreamingTable, format_table

_RAW = "disable pretty printing, print raw json"

RESTART_RESULT_KEY = "pach-restart-datum-bin"  # as services.gateway.grpc.pps
JOB_HEADER = "ID\tOUTPUT COMMIT\tSTARTED\tDURATION\tRESTART\tPROGRESS\tDL\tUL\tSTATE\t\n"
DATUM_HEADER = "ID\tSTATUS\tTIME\t\n"
WORKER_HEADER = "WORKER\tJOB\tDATUM\tSTARTED\tQUEUE\t\n"
FILE_HEADER = "  REPO\tCOMMIT\tPATH\t\n"
# delete-job waits until pps has recorded the deletion: allow more than 5 s.
DELETE_TIMEOUT_S = 60.0

# ---- text helpers (1.7's src/server/pps/pretty) -----------------------------------

_JOB_STATES: dict[int, str] = {
    pps.JOB_STARTING: "starting",
    pps.JOB_RUNNING: "running",
    pps.JOB_FAILURE: "failure",
    pps.JOB_SUCCESS: "success",
    pps.JOB_KILLED: "killed",
}
_DATUM_STATES: dict[int, str] = {
    pps.SKIPPED: "skipped",
    pps.FAILED: "failed",
    pps.SUCCESS: "success",
}


def job_state(state: int) -> str:
    return _JOB_STATES.get(state, "-")


def datum_state(state: int) -> str:
    return _DATUM_STATES.get(state, "-")


def _frac(value: int, unit: int) -> str:
    whole, rest = divmod(value, unit)
    if not rest:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{rest:0{digits}d}".rstrip("0")


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``0s``, ``1.5ms``, ``1m30s``, ``2h0m0s``."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_frac(u, 1_000)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_frac(u, 1_000_000)}ms"
    secs, nanos = divmod(u, 1_000_000_000)
    hours, rest = divmod(secs, 3600)
    minutes, seconds = divmod(rest, 60)
    text = _frac(seconds * 1_000_000_000 + nanos, 1_000_000_000) + "s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def _ns(duration: Duration) -> int:
    return duration.seconds * 1_000_000_000 + duration.nanos


def timeout_text(msg: Message, field: str) -> str:
    """A duration field as 1.7's templates print it (``1m30s``; ``<nil>``
    when unset)."""
    if not msg.HasField(field):
        return "<nil>"
    value = getattr(msg, field)
    assert isinstance(value, Duration)
    return go_duration(_ns(value))


def human(duration: Duration) -> str:
    """1.7's ``prettyDuration``: go-units ``HumanDuration``."""
    return pretty.human_duration(_ns(duration) / 1e9)


def _go_float(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:.7g}"


def compact(msg: Message) -> str:
    """Go's ``proto.CompactTextString`` (``constant:1 ``), as 1.7's templates
    print a message such as the parallelism spec."""
    parts: list[str] = []
    for field, value in msg.ListFields():
        values = list(value) if field.is_repeated else [value]
        for item in values:
            if isinstance(item, Message):
                parts.append(f"{field.name}:<{compact(item)}> ")
            elif isinstance(item, bool):
                parts.append(f"{field.name}:{str(item).lower()} ")
            elif isinstance(item, str):
                parts.append(f"{field.name}:{json.dumps(item)} ")
            elif isinstance(item, float):
                parts.append(f"{field.name}:{_go_float(item)} ")
            elif field.enum_type is not None:
                enum: Any = field.enum_type
                parts.append(f"{field.name}:{enum.values_by_number[item].name} ")
            else:
                parts.append(f"{field.name}:{item} ")
    return "".join(parts)


def present(msg: Message, field: str) -> bool:
    """Whether a message field is set to something: 1.7's templates test
    pointers, and an empty message sent by a server reads as unset here."""
    return msg.HasField(field) and getattr(msg, field).ByteSize() > 0


def message_or_nil(msg: Message, field: str) -> str:
    return compact(getattr(msg, field)) if msg.HasField(field) else "<nil>"


def json_block(msg: Message) -> str:
    """A message as 1.7's templates show the input and the transform
    (indented JSON, proto field names, ``<``/``>`` left as they are)."""
    return json.dumps(message_to_dict(msg), indent=2, ensure_ascii=False)


def resources(info: pps.JobInfo | pps.PipelineInfo) -> str:
    """The ResourceRequests/ResourceLimits lines of 1.7's templates."""
    text = ""
    if present(info, "resource_requests"):
        req = info.resource_requests
        text += f"ResourceRequests:\n\tCPU: {_go_float(req.cpu)}\n\tMemory: {req.memory} "
    text += "\n"
    if present(info, "resource_limits"):
        lim = info.resource_limits
        text += (
            f"ResourceLimits:\n\tCPU: {_go_float(lim.cpu)}\n\tMemory: {lim.memory}\n"
            f"\tGPU: {lim.gpu} "
        )
    return text + "\n"


def commit_text(commit: pfs.Commit) -> str:
    return f"{commit.repo.name}/{commit.id}"


# ---- jobs ------------------------------------------------------------------------


def job_row(info: pps.JobInfo, now: float | None = None) -> str:
    if info.HasField("output_commit"):
        output = commit_text(info.output_commit)
    elif info.HasField("pipeline"):
        output = f"{info.pipeline.name}/-"
    else:
        output = "-"
    duration = "-"
    if info.HasField("finished"):
        took = (info.finished.ToNanoseconds() - info.started.ToNanoseconds()) / 1e9
        duration = pretty.human_duration(took)
    progress = f"{info.data_processed} + {info.data_skipped} / {info.data_total}"
    return (
        f"{info.job.id}\t{output}\t{pretty.ago(info.started, now)}\t{duration}\t"
        f"{info.restart}\t{progress}\t{pretty.size(info.stats.download_bytes)}\t"
        f"{pretty.size(info.stats.upload_bytes)}\t{job_state(info.state)}\t\n"
    )


def write_jobs(
    infos: Iterable[pps.JobInfo], write: Callable[[str], object], now: float | None = None
) -> None:
    table = StreamingTable(write, JOB_HEADER)
    for info in infos:
        table.row(job_row(info, now))
    table.flush()


def job_table(infos: Iterable[pps.JobInfo], now: float | None = None) -> str:
    parts: list[str] = []
    write_jobs(infos, parts.append, now)
    return "".join(parts)


def worker_status(info: pps.JobInfo, now: float | None = None) -> str:
    text = WORKER_HEADER
    for status in info.worker_status:
        paths = "".join(d.path for d in status.data)
        text += (
            f"{status.worker_id}\t{status.job_id}\t{paths}\t"
            f"{pretty.ago(status.started, now)}\t{status.queue_size}\t\n"
        )
    return format_table(text)


def detailed_job(info: pps.JobInfo, now: float | None = None) -> str:
    """1.7's ``PrintDetailedJobInfo`` template."""
    s = f"ID: {info.job.id} "
    if info.HasField("pipeline"):
        s += f"\nPipeline: {info.pipeline.name} "
    s += " "
    if present(info, "parent_job"):
        s += f"\nParent: {info.parent_job.id} "
    s += f"\nStarted: {pretty.ago(info.started, now)} "
    if info.HasField("finished"):
        took = (info.finished.ToNanoseconds() - info.started.ToNanoseconds()) / 1e9
        s += f"\nDuration: {pretty.human_duration(took)} "
    stats = info.stats
    s += (
        f"\nState: {job_state(info.state)}\nReason: {info.reason}\n"
        f"Processed: {info.data_processed}\nFailed: {info.data_failed}\n"
        f"Skipped: {info.data_skipped}\nTotal: {info.data_total}\n"
        f"Data Downloaded: {pretty.size(stats.download_bytes)}\n"
        f"Data Uploaded: {pretty.size(stats.upload_bytes)}\n"
        f"Download Time: {human(stats.download_time)}\n"
        f"Process Time: {human(stats.process_time)}\n"
        f"Upload Time: {human(stats.upload_time)}\n"
        f"Datum Timeout: {timeout_text(info, 'datum_timeout')}\n"
        f"Job Timeout: {timeout_text(info, 'job_timeout')}\n"
        f"Worker Status:\n{worker_status(info, now)}Restarts: {info.restart}\n"
        f"ParallelismSpec: {message_or_nil(info, 'parallelism_spec')}\n"
    )
    s += resources(info)
    if present(info, "service"):
        svc = info.service
        s += "Service:\n\t"
        if svc.internal_port:
            s += f"InternalPort: {svc.internal_port} "
        s += "\n\t"
        if svc.external_port:
            s += f"ExternalPort: {svc.external_port} "
        s += " "
    s += "Input:\n"
    if info.HasField("input"):
        s += json_block(info.input) + "\n"
    s += f"\nTransform:\n{json_block(info.transform)} "
    if info.HasField("output_commit"):
        s += f"\nOutput Commit: {info.output_commit.id} "
    s += " "
    if present(info, "stats_commit"):
        s += f"\nStats Commit: {info.stats_commit.id} "
    s += " "
    if present(info, "egress"):
        s += f"\nEgress: {info.egress.URL} "
    return s + "\n"


# ---- datums ----------------------------------------------------------------------


def _total_ns(stats: pps.ProcessStats) -> int:
    return _ns(stats.download_time) + _ns(stats.process_time) + _ns(stats.upload_time)


def datum_row(info: pps.DatumInfo) -> str:
    took = "-"
    if info.HasField("stats"):
        took = pretty.human_duration(_total_ns(info.stats) / 1e9)
    return f"{info.datum.id}\t{datum_state(info.state)}\t{took}\n"


def write_datums(infos: Iterable[pps.DatumInfo], write: Callable[[str], object]) -> None:
    table = StreamingTable(write, DATUM_HEADER)
    for info in infos:
        table.row(datum_row(info))
    table.flush()


def datum_table(infos: Iterable[pps.DatumInfo]) -> str:
    parts: list[str] = []
    write_datums(infos, parts.append)
    return "".join(parts)


def _file_row(file: pfs.File) -> str:
    return f"  {file.commit.repo.name}\t{file.commit.id}\t{file.path}\t\n"


def detailed_datum(info: pps.DatumInfo) -> str:
    """1.7's ``PrintDetailedDatumInfo``."""
    stats = info.stats
    s = (
        f"ID\t{info.datum.id}\nJob ID\t{info.datum.job.id}\n"
        f"State\t{pps.DatumState.Name(info.state)}\n"
        f"Data Downloaded\t{pretty.size(stats.download_bytes)}\n"
        f"Data Uploaded\t{pretty.size(stats.upload_bytes)}\n"
        f"Total Time\t{go_duration(_total_ns(stats))}\n"
        f"Download Time\t{go_duration(_ns(stats.download_time))}\n"
        f"Process Time\t{go_duration(_ns(stats.process_time))}\n"
        f"Upload Time\t{go_duration(_ns(stats.upload_time))}\n"
    )
    state = FILE_HEADER + (_file_row(info.pfs_state) if info.HasField("pfs_state") else "")
    s += "PFS State:\n" + format_table(state, minwidth=10)
    inputs = FILE_HEADER + "".join(_file_row(d.file) for d in info.data)
    return s + "Inputs:\n" + format_table(inputs, minwidth=10)


# ---- argument helpers ------------------------------------------------------------


def parse_commit_arg(text: str) -> pfs.Commit:
    """``repo/commit`` (1.7) or ``repo@commit``; a bare ``repo`` leaves the
    commit empty, as 1.7's ParseCommits does."""
    repo, sep, ref = text.partition("@") if "@" in text else text.partition("/")
    if not repo:
        raise InvalidArgument(f"invalid commit {text!r}: the repo cannot be empty")
    if sep and not ref:
        raise InvalidArgument(f"invalid commit {text!r}: the commit after {sep!r} is empty")
    return pfs.Commit(repo=pfs.Repo(name=repo), id=ref)


def split_commas(values: Iterable[str]) -> list[str]:
    """Repeated flags whose values may also be comma lists; empty items go."""
    return [item for value in values for item in value.split(",") if item]


def _with_fallback(streamed: Iterator[Any], unary: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """The streamed replies, or the unary RPC's when the server does not
    implement the stream (it says so before sending anything)."""
    sent = False
    try:
        for reply in streamed:
            sent = True
            yield reply
    except ServerError as exc:
        if sent or not exc.unimplemented:
            raise
        yield from unary()


def _api(pachd: Pachd) -> pps_pb2_grpc.APIStub:
    return pps_pb2_grpc.APIStub(pachd.channel)


def _job(job_id: str) -> pps.Job:
    return pps.Job(id=job_id)


def compact_json(msg: Message) -> str:
    """1.7's get-logs --raw: one line of protobuf JSON."""
    return MessageToJson(msg, indent=None)


# ---- commands ----------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("inspect-job", help="Return info about a job.")
    p.add_argument("job")
    p.add_argument(
        "-b", "--block", action="store_true",
        help="block until the job has either succeeded or failed",
    )  # fmt: skip
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=inspect_job)

    p = sub.add_parser("list-job", help="Return info about jobs.")
    p.add_argument("-p", "--pipeline", default="", help="Limit to jobs made by pipeline.")
    p.add_argument("-o", "--output", default="", help="List jobs with a specific output commit.")
    p.add_argument(
        "-i", "--input", action="append", default=[], metavar="repo/commit",
        help="List jobs with a specific set of input commits.",
    )  # fmt: skip
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=list_job)

    p = sub.add_parser(
        "flush-job",
        help="Wait for all jobs caused by the specified commits to finish and return them.",
    )
    p.add_argument("commits", nargs="+", metavar="repo/commit")
    p.add_argument(
        "-p", "--pipeline", action="append", default=[], dest="pipelines",
        help="Wait only for jobs leading to a specific set of pipelines",
    )  # fmt: skip
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=flush_job)

    p = sub.add_parser("delete-job", help="Delete a job.")
    p.add_argument("job")
    p.set_defaults(run=delete_job)

    p = sub.add_parser("stop-job", help="Stop a job.")
    p.add_argument("job")
    p.set_defaults(run=stop_job)

    p = sub.add_parser("restart-datum", help="Restart a datum.")
    p.add_argument("job")
    p.add_argument("datums", nargs="+", metavar="datum-path1,datum-path2")
    p.set_defaults(run=restart_datum)

    p = sub.add_parser("list-datum", help="Return the datums in a job.")
    p.add_argument("job")
    p.add_argument(
        "--pageSize", "--page-size", dest="page_size", type=int, default=0,
        help="Specify the number of results sent back in a single page",
    )  # fmt: skip
    p.add_argument("--page", type=int, default=0, help="Specify the page of results to send")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=list_datum)

    p = sub.add_parser("inspect-datum", help="Display detailed info about a single datum.")
    p.add_argument("job")
    p.add_argument("datum")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=inspect_datum)

    p = sub.add_parser("get-logs", help="Return logs from a job.")
    p.add_argument(
        "-p", "--pipeline", default="",
        help="Filter the log for lines from this pipeline (accepts pipeline name)",
    )  # fmt: skip
    p.add_argument("--job", default="", help="Filter for log lines from this job (accepts job ID)")
    p.add_argument(
        "--datum", default="", help="Filter for log lines for this datum (accepts datum ID)"
    )
    p.add_argument(
        "--inputs", default="",
        help="Filter for log lines generated while processing these files "
        "(accepts PFS paths or file hashes)",
    )  # fmt: skip
    p.add_argument(
        "--master", action="store_true",
        help="Return log messages from the master process (pipeline must be set).",
    )  # fmt: skip
    p.add_argument("--raw", action="store_true", help="Return log messages verbatim from server.")
    p.add_argument("-f", "--follow", action="store_true", help="Follow logs as more are created.")
    p.add_argument("-t", "--tail", type=int, default=0, help="Lines of recent logs to display.")
    p.set_defaults(run=get_logs)


def inspect_job(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.InspectJobRequest(job=_job(args.job), block_state=args.block)
    # --block waits as long as the job runs.
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S if args.block else DEFAULT_TIMEOUT_S) as pachd:
        if args.block and progress.on_terminal():
            now = pachd.call(_api(pachd).InspectJob, pps.InspectJobRequest(job=req.job))
            state = pps.JobState.Name(now.state).removeprefix("JOB_").lower()  # type: ignore[arg-type]
            done = f"{now.data_processed} + {now.data_skipped} / {now.data_total} datums"
            progress.waiting(f"job {now.job.id} of {now.pipeline.name} ({state}, {done}) to finish")
        info = pachd.call(_api(pachd).InspectJob, req)
    out.write(pretty.raw(info) if args.raw else detailed_job(info))
    return 0


def list_job_request(args: argparse.Namespace) -> pps.ListJobRequest:
    req = pps.ListJobRequest(input_commit=[parse_commit_arg(c) for c in split_commas(args.input)])
    if args.pipeline:
        req.pipeline.name = args.pipeline
    if args.output:
        req.output_commit.CopyFrom(parse_commit_arg(args.output))
    return req


def list_job(args: argparse.Namespace, out: TextIO) -> int:
    req = list_job_request(args)
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        api = _api(pachd)
        infos = _with_fallback(
            pachd.stream(api.ListJobStream, req), lambda: pachd.call(api.ListJob, req).job_info
        )
        if args.raw:
            for info in infos:
                out.write(pretty.raw(info))
        else:
            write_jobs(infos, out.write)
    return 0


def flush_job_request(args: argparse.Namespace) -> pps.FlushJobRequest:
    return pps.FlushJobRequest(
        commits=[parse_commit_arg(c) for c in args.commits],
        to_pipelines=[pps.Pipeline(name=p) for p in split_commas(args.pipelines)],
    )


def flush_job(args: argparse.Namespace, out: TextIO) -> int:
    """The jobs the commits lead to, once all of them are finished, in one
    aligned table as 1.7 prints them (``--raw``: each as it finishes)."""
    req = flush_job_request(args)
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        infos = pachd.stream(_api(pachd).FlushJob, req)
        if args.raw:
            for info in infos:
                out.write(pretty.raw(info))
                out.flush()
        else:
            write_jobs(list(infos), out.write)
    return 0


def delete_job(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env(), timeout=DELETE_TIMEOUT_S) as pachd:
        pachd.call(_api(pachd).DeleteJob, pps.DeleteJobRequest(job=_job(args.job)))
    return 0


def stop_job(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).StopJob, pps.StopJobRequest(job=_job(args.job)))
    return 0


def restart_datum(args: argparse.Namespace, out: TextIO) -> int:
    filters = split_commas(args.datums)
    if not filters:
        raise InvalidArgument("restart-datum needs at least one datum path or id")
    req = pps.RestartDatumRequest(job=_job(args.job), data_filters=filters)
    with Pachd(from_env()) as pachd:
        try:
            _, call = _api(pachd).RestartDatum.with_call(req, timeout=pachd.timeout)
        except grpc.RpcError as err:
            raise pachd.translate(err) from None
    result = work.RestartDatumResult()
    for key, value in call.trailing_metadata() or ():
        if key == RESTART_RESULT_KEY and isinstance(value, bytes):
            result.ParseFromString(value)
    out.write(restart_text(args.job, result))
    return 0


def restart_text(job: str, result: work.RestartDatumResult) -> str:
    """What restart-datum did, one line per kind of datum restarted."""
    text = ""
    if result.running:
        text += (
            f"Restarted running datum(s) {', '.join(result.running)} of job {job}: "
            "their user code was stopped and runs again\n"
        )
    if result.failed:
        text += (
            f"Restarted failed datum(s) {', '.join(result.failed)} of job {job}: they run again\n"
        )
    return text


def list_datum_request(args: argparse.Namespace) -> pps.ListDatumRequest:
    if args.page_size < 0:
        raise InvalidArgument("pageSize must be zero or positive")
    if args.page < 0:
        raise InvalidArgument("page must be zero or positive")
    return pps.ListDatumRequest(job=_job(args.job), page_size=args.page_size, page=args.page)


def list_datum(args: argparse.Namespace, out: TextIO) -> int:
    req = list_datum_request(args)
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        api = _api(pachd)
        streamed = (r.datum_info for r in pachd.stream(api.ListDatumStream, req))
        infos = _with_fallback(streamed, lambda: pachd.call(api.ListDatum, req).datum_infos)
        if args.raw:
            for info in infos:
                out.write(pretty.raw(info))
        else:
            write_datums(infos, out.write)
    return 0


def inspect_datum(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.InspectDatumRequest(datum=pps.Datum(id=args.datum, job=_job(args.job)))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectDatum, req)
    out.write(pretty.raw(info) if args.raw else detailed_datum(info))
    return 0


def get_logs_request(args: argparse.Namespace) -> pps.GetLogsRequest:
    if args.tail < 0:
        raise InvalidArgument("--tail must be zero or positive")
    req = pps.GetLogsRequest(
        data_filters=split_commas([args.inputs]),
        master=args.master,
        follow=args.follow,
        tail=args.tail,
    )
    if args.pipeline:
        req.pipeline.name = args.pipeline
    if args.job:
        req.job.id = args.job
    if args.datum:
        req.datum.id = args.datum
        if args.job:
            req.datum.job.id = args.job
    return req


def log_line(msg: pps.LogMessage, args: argparse.Namespace) -> str | None:
    """What 1.7 prints for one log message: everything with --raw (as JSON);
    otherwise user-code lines, master lines with --master, and every line
    when neither a pipeline nor a job was named."""
    if args.raw:
        return compact_json(msg) + "\n"
    if msg.user or (msg.master and args.master) or (not args.pipeline and not args.job):
        return msg.message if msg.message.endswith("\n") else msg.message + "\n"
    return None


def get_logs(args: argparse.Namespace, out: TextIO) -> int:
    req = get_logs_request(args)
    with Pachd(from_env(), timeout=LONG_TIMEOUT_S) as pachd:
        api = _api(pachd)

        def read(r: pps.GetLogsRequest, timeout: float | None) -> int:
            # --follow runs until interrupted: no deadline.
            for msg in api.GetLogs(r, timeout=None if args.follow else timeout):
                line = log_line(msg, args)
                if line is not None:
                    out.write(line)
                    if args.follow:
                        out.flush()
            return 0

        return pachd.call(read, req)
