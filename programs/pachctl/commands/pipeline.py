"""Pipeline commands: create-pipeline, update-pipeline, inspect-pipeline,
list-pipeline, delete-pipeline, start-pipeline, stop-pipeline,
extract-pipeline, edit-pipeline (Pachyderm 1.7's names, flags and output).

Specs are read with ``libs.pps.spec`` and checked before anything is sent,
so a file with one bad spec creates none of its pipelines."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import BinaryIO, TextIO
from urllib.parse import urlparse

from libs.api.admin import admin_pb2, admin_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from libs.api.pps import pps_pb2_grpc
from libs.errors import FailedPrecondition, InvalidArgument, NotFound, PachError, Unavailable
from libs.pps.spec import check_spec, load_specs, spec_to_json
from programs.pachctl import pretty
from programs.pachctl.address import from_env
from programs.pachctl.client import Pachd
from programs.pachctl.commands.job import (
    job_state,
    json_block,
    message_or_nil,
    present,
    resources,
    timeout_text,
)
from programs.pachctl.tabwriter import StreamingTable

_RAW = "disable pretty printing, print raw json"
_FILE = "The file containing the pipeline, it can be a url or local file. - reads from stdin."
_REPROCESS = (
    "If true, reprocess datums that were already processed by previous version of the pipeline."
)
PIPELINE_HEADER = "NAME\tINPUT\tOUTPUT\tCREATED\tSTATE\t\n"
URL_TIMEOUT_S = 30.0
# Creating, updating or deleting a pipeline touches repos, branches and jobs
# (pps asks pfs several times): more than pachctl's usual 5 s may be needed.
CHANGE_TIMEOUT_S = 120.0
CROSS = " \u2a2f "  # as 1.7's ShorthandInput joins a cross
UNION = " \u222a "  # and a union

_PIPELINE_STATES: dict[int, str] = {
    pps.PIPELINE_STARTING: "starting",
    pps.PIPELINE_RUNNING: "running",
    pps.PIPELINE_RESTARTING: "restarting",
    pps.PIPELINE_FAILURE: "failure",
    pps.PIPELINE_PAUSED: "paused",
    pps.PIPELINE_STANDBY: "standby",
}


def pipeline_state(state: int) -> str:
    return _PIPELINE_STATES.get(state, "-")


# ---- reading specs -----------------------------------------------------------------


def read_manifest(path: str, stdin: BinaryIO | None = None) -> tuple[bytes, str]:
    """The bytes of ``-f``: ``-`` is stdin, ``http(s)://`` is fetched,
    anything else is a local file. Also returns the name errors use."""
    if path == "-":
        if stdin is None and sys.stdin.isatty():
            sys.stderr.write("Reading from stdin.\n")  # as 1.7 says (it would seem to hang)
        return (stdin or sys.stdin.buffer).read(), "stdin"
    scheme = urlparse(path).scheme.lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(path, timeout=URL_TIMEOUT_S) as reply:
                return reply.read(), path
        except urllib.error.HTTPError as exc:
            raise Unavailable(f"cannot fetch {path}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unavailable(f"cannot fetch {path}: {reason}") from None
    if len(scheme) > 1 and "://" in path:
        raise InvalidArgument(
            f"cannot read {path}: unsupported URL scheme {scheme!r} (use http, https, "
            "a local file or - for stdin)"
        )
    with open(path, "rb") as f:
        return f.read(), path


def read_specs(path: str, stdin: BinaryIO | None = None) -> list[pps.CreatePipelineRequest]:
    """Every spec of ``-f``, each checked (a bad one fails them all)."""
    data, source = read_manifest(path, stdin)
    specs = load_specs(data, source)
    for spec in specs:
        check_spec(spec)
    return specs


# ---- text ----------------------------------------------------------------------------


def shorthand_input(node: pps.Input) -> str:
    """1.7's ``ShorthandInput``: ``repo:glob``, ``name:spec``, and crosses
    and unions in parentheses joined by the cross and union signs."""
    if node.HasField("atom"):
        return f"{node.atom.repo}:{node.atom.glob}"
    if node.cross:
        return "(" + CROSS.join(shorthand_input(i) for i in node.cross) + ")"
    if node.union:
        return "(" + UNION.join(shorthand_input(i) for i in node.union) + ")"
    if node.HasField("cron"):
        return f"{node.cron.name}:{node.cron.spec}"
    if node.HasField("git"):
        return f"{node.git.name}:{node.git.url}"
    return ""


def pipeline_row(info: pps.PipelineInfo, now: float | None = None) -> str:
    return (
        f"{info.pipeline.name}\t{shorthand_input(info.input)}\t"
        f"{info.pipeline.name}/{info.output_branch}\t{pretty.ago(info.created_at, now)}\t"
        f"{pipeline_state(info.state)}\t\n"
    )


def write_pipelines(
    infos: Iterable[pps.PipelineInfo], write: Callable[[str], object], now: float | None = None
) -> None:
    table = StreamingTable(write, PIPELINE_HEADER)
    for info in infos:
        table.row(pipeline_row(info, now))
    table.flush()


def pipeline_table(infos: Iterable[pps.PipelineInfo], now: float | None = None) -> str:
    parts: list[str] = []
    write_pipelines(infos, parts.append, now)
    return "".join(parts)


def job_counts(counts: dict[int, int]) -> str:
    return "".join(
        f"{job_state(state)}: {counts.get(state, 0)}\t"
        for state in range(pps.JOB_STARTING, pps.JOB_SUCCESS + 1)
    )


def detailed_pipeline(info: pps.PipelineInfo, now: float | None = None) -> str:
    """1.7's ``PrintDetailedPipelineInfo`` template."""
    s = f"Name: {info.pipeline.name}"
    if info.description:
        s += f"\nDescription: {info.description}"
    s += (
        f"\nCreated: {pretty.ago(info.created_at, now)}\n"
        f"State: {pipeline_state(info.state)}\n"
        f"Stopped: {str(info.stopped).lower()}\n"
        f"Reason: {info.reason}\n"
        f"Parallelism Spec: {message_or_nil(info, 'parallelism_spec')}\n"
    )
    s += resources(info)
    s += (
        f"Datum Timeout: {timeout_text(info, 'datum_timeout')}\n"
        f"Job Timeout: {timeout_text(info, 'job_timeout')}\n"
        "Input:\n"
    )
    if info.HasField("input"):
        s += json_block(info.input) + "\n"
    s += "\n"
    if info.githook_url:
        s += f"Githook URL: {info.githook_url} "
    s += f"\nOutput Branch: {info.output_branch}\nTransform:\n{json_block(info.transform)}\n"
    if present(info, "egress"):
        s += f"Egress: {info.egress.URL} "
    s += "\n"
    if info.recent_error:
        s += f" Recent Error: {info.recent_error} "
    return s + f"\nJob Counts:\n{job_counts(dict(info.job_counts))}\n"


def spec_from_info(info: pps.PipelineInfo) -> pps.CreatePipelineRequest:
    """1.7's ``PipelineReqFromInfo``: the create request a pipeline's info
    describes (every field the two messages share by name)."""
    req = pps.CreatePipelineRequest()
    target = req.DESCRIPTOR.fields_by_name
    for field, value in info.ListFields():
        mine = target.get(field.name)
        if mine is None or mine.type != field.type or mine.is_repeated != field.is_repeated:
            continue
        if field.message_type is not None:
            if mine.message_type is None or mine.message_type.full_name != (
                field.message_type.full_name
            ):
                continue
            if field.is_repeated:
                getattr(req, field.name).extend(value)
            else:
                getattr(req, field.name).CopyFrom(value)
        elif field.is_repeated:
            getattr(req, field.name).extend(value)
        else:
            setattr(req, field.name, value)
    return req


# ---- commands ------------------------------------------------------------------------


def _api(pachd: Pachd) -> pps_pb2_grpc.APIStub:
    return pps_pb2_grpc.APIStub(pachd.channel)


def _pipeline(name: str) -> pps.Pipeline:
    return pps.Pipeline(name=name)


def _spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", default="-", help=_FILE)
    p.add_argument(
        "-p", "--push-images", action="store_true",
        help="If true, push local docker images into the cluster registry.",
    )  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("create-pipeline", help="Create a new pipeline.")
    _spec_flags(p)
    p.set_defaults(run=create_pipeline)

    p = sub.add_parser("update-pipeline", help="Update an existing Pachyderm pipeline.")
    _spec_flags(p)
    p.add_argument("--reprocess", action="store_true", help=_REPROCESS)
    p.set_defaults(run=update_pipeline)

    p = sub.add_parser("inspect-pipeline", help="Return info about a pipeline.")
    p.add_argument("pipeline")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.set_defaults(run=inspect_pipeline)

    p = sub.add_parser("extract-pipeline", help="Return the manifest used to create a pipeline.")
    p.add_argument("pipeline")
    p.set_defaults(run=extract_pipeline)

    p = sub.add_parser(
        "edit-pipeline", help="Edit the manifest for a pipeline in your text editor."
    )
    p.add_argument("pipeline")
    p.add_argument("--reprocess", action="store_true", help=_REPROCESS)
    p.add_argument("--editor", default="", help="Editor to use for modifying the manifest.")
    p.set_defaults(run=edit_pipeline)

    p = sub.add_parser("list-pipeline", help="Return info about all pipelines.")
    p.add_argument("--raw", action="store_true", help=_RAW)
    p.add_argument(
        "-s", "--spec", action="store_true", help="Output create-pipeline compatibility specs."
    )
    p.set_defaults(run=list_pipeline)

    p = sub.add_parser("delete-pipeline", help="Delete a pipeline.")
    p.add_argument("pipeline", nargs="?")
    p.add_argument("--all", action="store_true", help="delete all pipelines")
    p.add_argument(
        "-f", "--force", action="store_true",
        help="delete the pipeline regardless of errors; use with care",
    )  # fmt: skip
    p.set_defaults(run=delete_pipeline)

    p = sub.add_parser("start-pipeline", help="Restart a stopped pipeline.")
    p.add_argument("pipeline")
    p.set_defaults(run=start_pipeline)

    p = sub.add_parser("stop-pipeline", help="Stop a running pipeline.")
    p.add_argument("pipeline")
    p.set_defaults(run=stop_pipeline)


def _refuse_push(args: argparse.Namespace) -> None:
    if args.push_images:
        raise FailedPrecondition(
            "--push-images is not supported: pipelines run their command on the cluster's "
            "machines; there is no image registry to push to"
        )


def _send(specs: list[pps.CreatePipelineRequest]) -> None:
    with Pachd(from_env(), timeout=CHANGE_TIMEOUT_S) as pachd:
        api = _api(pachd)
        for spec in specs:
            pachd.call(api.CreatePipeline, spec)


def create_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    _refuse_push(args)
    _send(read_specs(args.file))
    return 0


def update_requests(
    specs: list[pps.CreatePipelineRequest], reprocess: bool
) -> list[pps.CreatePipelineRequest]:
    for spec in specs:
        spec.update = True
        spec.reprocess = reprocess
    return specs


def update_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    _refuse_push(args)
    _send(update_requests(read_specs(args.file), args.reprocess))
    return 0


def inspect_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.InspectPipelineRequest(pipeline=_pipeline(args.pipeline))
    with Pachd(from_env()) as pachd:
        info = pachd.call(_api(pachd).InspectPipeline, req)
    out.write(pretty.raw(info) if args.raw else detailed_pipeline(info))
    return 0


def _extract(pachd: Pachd, name: str) -> pps.CreatePipelineRequest:
    admin = admin_pb2_grpc.APIStub(pachd.channel)
    req = admin_pb2.ExtractPipelineRequest(pipeline=_pipeline(name))
    op = pachd.call(admin.ExtractPipeline, req)
    if not op.op1_7.HasField("pipeline"):
        raise NotFound(f"pachd returned no spec for pipeline {name!r}", pipeline=name)
    return op.op1_7.pipeline


def extract_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        spec = _extract(pachd, args.pipeline)
    out.write(spec_to_json(spec) + "\n")
    return 0


def run_editor(editor: str, path: str) -> None:
    """Run ``editor path`` on the terminal; ``editor`` may carry arguments
    (``code -w``)."""
    command = shlex.split(editor)
    if not command:
        raise InvalidArgument("no editor: set --editor or $EDITOR")
    try:
        code = subprocess.call([*command, path])
    except FileNotFoundError:
        raise InvalidArgument(f"editor {command[0]!r} not found") from None
    if code != 0:
        raise FailedPrecondition(
            f"editor {editor!r} exited with status {code}; the pipeline was not updated"
        )


def edited_request(
    original: pps.CreatePipelineRequest, text: bytes, source: str, reprocess: bool
) -> pps.CreatePipelineRequest | None:
    """The update edit-pipeline sends, or None when nothing changed."""
    specs = load_specs(text, source)
    if len(specs) != 1:
        raise InvalidArgument(f"{source}: expected one pipeline spec, found {len(specs)}")
    [spec] = specs
    if spec == original:
        return None
    check_spec(spec)
    spec.update = True
    spec.reprocess = reprocess
    return spec


def edit_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    """Extract the spec, edit it, send it as an update. When the edit
    cannot be read or is refused, the edited file stays and the error names
    it, so the edit is not lost."""
    editor = args.editor or os.environ.get("EDITOR", "") or "vim"
    with Pachd(from_env(), timeout=CHANGE_TIMEOUT_S) as pachd:
        original = _extract(pachd, args.pipeline)
        with tempfile.NamedTemporaryFile(
            "w", prefix=f"{args.pipeline}-", suffix=".json", delete=False, encoding="utf-8"
        ) as f:
            f.write(spec_to_json(original) + "\n")
            path = f.name
        try:
            run_editor(editor, path)
        except BaseException:
            os.unlink(path)
            raise
        try:
            with open(path, "rb") as edited:
                request = edited_request(original, edited.read(), path, args.reprocess)
            if request is None:
                out.write("Pipeline unchanged, no update will be performed.\n")
            else:
                pachd.call(_api(pachd).CreatePipeline, request)
        except PachError as exc:
            exc.message = f"{exc.message} (the edited spec is kept in {path})"
            raise
        os.unlink(path)
    return 0


def list_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    with Pachd(from_env()) as pachd:
        infos = list(pachd.call(_api(pachd).ListPipeline, pps.ListPipelineRequest()).pipeline_info)
    if args.raw:
        out.write(pretty.raw_all(list(infos)))
    elif args.spec:
        out.write("".join(spec_to_json(spec_from_info(i)) + "\n" for i in infos))
    else:
        write_pipelines(infos, out.write)
    return 0


def delete_request(args: argparse.Namespace) -> pps.DeletePipelineRequest:
    if args.pipeline and args.all:
        raise InvalidArgument("cannot use the --all flag with an argument")
    if not args.pipeline and not args.all:
        raise InvalidArgument("either a pipeline name or the --all flag needs to be provided")
    req = pps.DeletePipelineRequest(all=args.all, force=args.force)
    if args.pipeline:
        req.pipeline.name = args.pipeline
    return req


def delete_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    req = delete_request(args)
    with Pachd(from_env(), timeout=CHANGE_TIMEOUT_S) as pachd:
        pachd.call(_api(pachd).DeletePipeline, req)
    return 0


def start_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.StartPipelineRequest(pipeline=_pipeline(args.pipeline))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).StartPipeline, req)
    return 0


def stop_pipeline(args: argparse.Namespace, out: TextIO) -> int:
    req = pps.StopPipelineRequest(pipeline=_pipeline(args.pipeline))
    with Pachd(from_env()) as pachd:
        pachd.call(_api(pachd).StopPipeline, req)
    return 0
