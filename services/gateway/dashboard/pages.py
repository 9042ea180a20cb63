"""Server-rendered dashboard pages (every value escaped):

- ``/repos/<repo>``: the repo's branches (name, head) and its newest
  commits (id, branch, started, finished, size), each linking to
- ``/repos/<repo>/commits/<commit>/<path>``: the directory listing of that
  commit at ``path``; a directory links one level down, a file to its
  download (``/pfs/<repo>/<commit>/<path>``, served by the HTTP front);
- ``/pipelines``: every pipeline (name, input, output, created, state);
- ``/pipelines/<pipeline>``: its spec in short (transform, input, output,
  parallelism, job counts) and its jobs (progress, state), each linking to
- ``/jobs/<job>``: the job's summary, a page of its datums (``?page=``)
  and the last lines of its logs.

The pages ask the backends over the bus ``mount`` puts on the app, with the
caller's ``authn-token``; listings and logs come from
``services.gateway.app`` (``file_pages``, ``jobs``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus, kind_for
from libs.errors import InvalidArgument
from services.gateway.app.file_pages import list_dir
from services.gateway.app.jobs import log_messages
from services.gateway.principal import http_ask, http_principal

R = TypeVar("R", bound=Message)

# The bus the pages ask the backends over.
BUS = web.AppKey("dashboard_bus", Bus)

# Newest commits shown on a repo page.
COMMITS_SHOWN = 100
# Jobs shown on a pipeline page, datums per job page, log lines on a job page.
JOBS_SHOWN = 100
DATUMS_SHOWN = 100
LOG_LINES_SHOWN = 200


async def _ask(
    request: web.Request, name: str, req: Message, response: type[R], service: str = "pfs"
) -> R:
    return await request.app[BUS].request(
        service, name, req, response, kind=kind_for(name), principal=http_principal(request)
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _size(n: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.4g}{units[unit]}"


def _time(ts: Timestamp, present: bool = True) -> str:
    if not present:
        return "-"
    return datetime.fromtimestamp(ts.ToNanoseconds() / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table; ``rows`` hold already escaped HTML."""
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{trs}</tbody></table>"


def _page(title: str, body: str) -> web.Response:
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="/static/pages.css"></head>'
        f'<body><p><a href="/">Pachyderm</a> · <a href="/pipelines">Pipelines</a></p>'
        f"{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def _browse_href(repo: str, commit: str, path: str = "/") -> str:
    return f"/repos/{quote(repo, safe='')}/commits/{quote(commit, safe='')}{quote(path)}"


async def repo_page(request: web.Request) -> web.Response:
    name = request.match_info["repo"]
    repo = pfs.Repo(name=name)
    info = await _ask(request, "InspectRepo", pfs.InspectRepoRequest(repo=repo), pfs.RepoInfo)
    branches = await _ask(request, "ListBranch", pfs.ListBranchRequest(repo=repo), pfs.BranchInfos)
    listed = pfs.ListCommitRequest(repo=repo, number=COMMITS_SHOWN)
    commits = await _ask(request, "ListCommit", listed, pfs.CommitInfos)
    on_branch: dict[str, list[str]] = {}
    for b in branches.branch_info:
        if b.head.id:
            on_branch.setdefault(b.head.id, []).append(b.name)

    def link(commit_id: str) -> str:
        return f'<a href="{_e(_browse_href(name, commit_id))}"><code>{_e(commit_id)}</code></a>'

    branch_rows = [
        [
            _e(b.name),
            link(b.head.id) if b.head.id else "-",
            _e(", ".join(f"{p.repo.name}/{p.name}" for p in b.direct_provenance) or "-"),
        ]
        for b in branches.branch_info
    ]
    commit_rows = [
        [
            link(c.commit.id),
            _e(", ".join(on_branch.get(c.commit.id, [])) or "-"),
            _e(_time(c.started)),
            _e(_time(c.finished, c.HasField("finished"))),
            _e(_size(c.size_bytes) if c.HasField("finished") else "-"),
        ]
        for c in commits.commit_info
    ]
    body = (
        f"<h1>Repo {_e(name)}</h1>"
        f"<p>{_e(info.description)}</p>"
        f"<p>Created {_e(_time(info.created))}, size {_e(_size(info.size_bytes))}</p>"
        "<h2>Branches</h2>"
        + _table(["branch", "head", "provenance"], branch_rows)
        + f"<h2>Commits</h2><p>The newest {COMMITS_SHOWN} at most.</p>"
        + _table(["id", "branch head of", "started", "finished", "size"], commit_rows)
    )
    return _page(f"{name} - Pachyderm", body)


async def browse_page(request: web.Request) -> web.Response:
    name, ref = request.match_info["repo"], request.match_info["commit"]
    path = trees.normalize("/" + request.match_info.get("path", ""))
    f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=name), id=ref), path=path)
    rows = []
    async for i in list_dir(http_ask(request.app[BUS], request, "pfs"), f):
        commit_id = i.file.commit.id or ref
        base = i.file.path.rsplit("/", 1)[-1] or i.file.path
        if i.file_type == pfs.DIR:
            href, label = _browse_href(name, commit_id, i.file.path), base + "/"
        else:
            href = f"/pfs/{quote(name, safe='')}/{quote(commit_id, safe='')}{quote(i.file.path)}"
            label = base
        rows.append(
            [
                f'<a href="{_e(href)}">{_e(label)}</a>',
                _e("dir" if i.file_type == pfs.DIR else "file"),
                _e(_size(i.size_bytes)),
            ]
        )
    up = ""
    if path != "/":
        parent = path.rsplit("/", 1)[0] or "/"
        up = f'<p><a href="{_e(_browse_href(name, ref, parent))}">..</a></p>'
    repo_href = f"/repos/{quote(name, safe='')}"
    body = (
        f'<h1><a href="{_e(repo_href)}">{_e(name)}</a> @ <code>{_e(ref)}</code></h1>'
        f"<h2>{_e(path)}</h2>{up}" + _table(["name", "type", "size"], rows)
    )
    return _page(f"{name}{path} - Pachyderm", body)


# --- pipelines and jobs ----------------------------------------------------


def shorthand_input(i: pps.Input) -> str:
    """An input in short, as ``pachctl list-pipeline`` shows it."""
    if i.HasField("atom"):
        return f"{i.atom.repo}:{i.atom.glob}"
    if i.cross:
        return "(" + " \N{VECTOR OR CROSS PRODUCT} ".join(shorthand_input(c) for c in i.cross) + ")"
    if i.union:
        return "(" + " \N{UNION} ".join(shorthand_input(u) for u in i.union) + ")"
    if i.HasField("cron"):
        return f"{i.cron.name}:{i.cron.spec}"
    if i.HasField("git"):
        return f"{i.git.name}:{i.git.url}"
    return ""


def _state(name: str, prefix: str) -> str:
    """``JOB_SUCCESS`` -> a ``success`` span (HTML)."""
    word = name.removeprefix(prefix).lower()
    return f'<span class="{_e(word)}">{_e(word)}</span>'


def job_state(state: int) -> str:
    return _state(pps.JobState.Name(state), "JOB_")  # type: ignore[arg-type]


def pipeline_state(state: int) -> str:
    return _state(pps.PipelineState.Name(state), "PIPELINE_")  # type: ignore[arg-type]


def datum_state(state: int) -> str:
    return _state(pps.DatumState.Name(state), "")  # type: ignore[arg-type]


def progress(info: pps.JobInfo) -> str:
    """``processed + skipped / total`` with a bar (HTML)."""
    done = info.data_processed + info.data_skipped
    text = f"{info.data_processed} + {info.data_skipped} / {info.data_total}"
    if info.data_failed:
        text += f" ({info.data_failed} failed)"
    bar = f'<progress value="{done}" max="{max(info.data_total, 1)}"></progress> '
    return bar + _e(text)


def _seconds(*durations: Duration) -> str:
    total = sum(d.ToNanoseconds() for d in durations) / 1e9
    return f"{total:.3g}s" if total else "-"


def _json(message: Message) -> str:
    return f"<pre>{_e(json_format.MessageToJson(message, indent=2))}</pre>"


def _pipeline_href(name: str) -> str:
    return f"/pipelines/{quote(name, safe='')}"


def _job_href(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def _link(href: str, text: str, code: bool = False) -> str:
    label = f"<code>{_e(text)}</code>" if code else _e(text)
    return f'<a href="{_e(href)}">{label}</a>'


def _commit_link(commit: pfs.Commit) -> str:
    if not commit.id:
        return "-"
    href = _browse_href(commit.repo.name, commit.id)
    return _link(href, f"{commit.repo.name}/{commit.id}", code=True)


def _duration(info: pps.JobInfo) -> str:
    if not info.HasField("started") or not info.HasField("finished"):
        return "-"
    seconds = (info.finished.ToNanoseconds() - info.started.ToNanoseconds()) / 1e9
    return f"{seconds:.3g}s"


async def pipelines_page(request: web.Request) -> web.Response:
    infos = await _ask(request, "ListPipeline", pps.ListPipelineRequest(), pps.PipelineInfos, "pps")
    rows = [
        [
            _link(_pipeline_href(i.pipeline.name), i.pipeline.name),
            _e(shorthand_input(i.input) or "-"),
            _link(
                f"/repos/{quote(i.pipeline.name, safe='')}", f"{i.pipeline.name}/{i.output_branch}"
            ),
            _e(_time(i.created_at, i.HasField("created_at"))),
            pipeline_state(i.state),
        ]
        for i in infos.pipeline_info
    ]
    body = "<h1>Pipelines</h1>" + _table(["name", "input", "output", "created", "state"], rows)
    return _page("Pipelines - Pachyderm", body)


async def pipeline_page(request: web.Request) -> web.Response:
    name = request.match_info["pipeline"]
    pipeline = pps.Pipeline(name=name)
    info = await _ask(
        request,
        "InspectPipeline",
        pps.InspectPipelineRequest(pipeline=pipeline),
        pps.PipelineInfo,
        "pps",
    )
    listed = await _ask(
        request, "ListJob", pps.ListJobRequest(pipeline=pipeline), pps.JobInfos, "pps"
    )
    counts = ", ".join(
        f"{pps.JobState.Name(state).removeprefix('JOB_').lower()}: {n}"  # type: ignore[arg-type]
        for state, n in sorted(info.job_counts.items())
    )
    parallelism = (
        f"{info.parallelism_spec.constant} workers"
        if info.parallelism_spec.constant
        else f"{info.parallelism_spec.coefficient:g} x cores"
        if info.parallelism_spec.coefficient
        else "1 worker"
    )
    summary = [
        ["state", pipeline_state(info.state) + (f" ({_e(info.reason)})" if info.reason else "")],
        ["version", _e(info.version)],
        ["created", _e(_time(info.created_at, info.HasField("created_at")))],
        ["input", _e(shorthand_input(info.input) or "-")],
        ["output", _link(f"/repos/{quote(name, safe='')}", f"{name}/{info.output_branch}")],
        ["command", f"<code>{_e(' '.join(info.transform.cmd))}</code>"],
        ["image", _e(info.transform.image or "-")],
        ["parallelism", _e(parallelism)],
        ["jobs", _e(counts or "none yet")],
    ]
    if info.recent_error:
        summary.append(["recent error", _e(info.recent_error)])
    jobs = list(listed.job_info)[:JOBS_SHOWN]
    job_rows = [
        [
            _link(_job_href(j.job.id), j.job.id, code=True),
            _commit_link(j.output_commit),
            _e(_time(j.started, j.HasField("started"))),
            _e(_duration(j)),
            _e(j.restart),
            progress(j),
            job_state(j.state) + (f" {_e(j.reason)}" if j.reason else ""),
        ]
        for j in jobs
    ]
    body = (
        f"<h1>Pipeline {_e(name)}</h1><p>{_e(info.description)}</p>"
        + _table(["", ""], summary)
        + "<h2>Input</h2>"
        + _json(info.input)
        + "<h2>Transform</h2>"
        + _json(info.transform)
        + f"<h2>Jobs</h2><p>The newest {JOBS_SHOWN} at most.</p>"
        + _table(
            ["id", "output commit", "started", "duration", "restart", "progress", "state"],
            job_rows,
        )
    )
    return _page(f"{name} - Pachyderm", body)


def _page_number(request: web.Request) -> int:
    raw = request.query.get("page", "0")
    if not raw.isdigit():
        raise InvalidArgument(f"page must be a number from 0, got {raw!r}", page=raw)
    return int(raw)


async def job_page(request: web.Request) -> web.Response:
    job_id = request.match_info["job"]
    job = pps.Job(id=job_id)
    page = _page_number(request)
    info = await _ask(request, "InspectJob", pps.InspectJobRequest(job=job), pps.JobInfo, "pps")
    datums = await _ask(
        request,
        "ListDatum",
        pps.ListDatumRequest(job=job, page=page, page_size=DATUMS_SHOWN),
        pps.ListDatumResponse,
        "pps",
    )
    datum_rows = [
        [
            f"<code>{_e(d.datum.id)}</code>",
            datum_state(d.state),
            _e(", ".join(f"{f.file.commit.repo.name}{f.file.path}" for f in d.data) or "-"),
            _e(_seconds(d.stats.download_time, d.stats.process_time, d.stats.upload_time)),
        ]
        for d in datums.datum_infos
    ]
    pager = []
    base = _job_href(job_id)
    if page > 0:
        pager.append(_link(f"{base}?page={page - 1}", "previous"))
    if page + 1 < datums.total_pages:
        pager.append(_link(f"{base}?page={page + 1}", "next"))
    logs = []
    wanted = pps.GetLogsRequest(job=job, tail=LOG_LINES_SHOWN)
    async for m in log_messages(http_ask(request.app[BUS], request, "pps"), wanted):
        when = _time(m.ts, m.HasField("ts"))
        logs.append(f"{when} {m.worker_id or '-'} {m.datum_id or '-'} {m.message.rstrip()}")
        if len(logs) >= LOG_LINES_SHOWN:
            break
    pipeline = info.pipeline.name
    summary = [
        ["pipeline", _link(_pipeline_href(pipeline), pipeline)],
        ["state", job_state(info.state) + (f" ({_e(info.reason)})" if info.reason else "")],
        ["progress", progress(info)],
        ["started", _e(_time(info.started, info.HasField("started")))],
        ["finished", _e(_time(info.finished, info.HasField("finished")))],
        ["restarts", _e(info.restart)],
        ["output commit", _commit_link(info.output_commit)],
    ]
    body = (
        f"<h1>Job <code>{_e(job_id)}</code></h1>"
        + _table(["", ""], summary)
        + f"<h2>Datums</h2><p>Page {page + 1} of {max(datums.total_pages, 1)}. "
        + " ".join(pager)
        + "</p>"
        + _table(["id", "state", "data", "time"], datum_rows)
        + f"<h2>Logs</h2><p>The last {LOG_LINES_SHOWN} lines at most.</p>"
        + f"<pre>{_e(chr(10).join(logs)) or '(no logs)'}</pre>"
    )
    return _page(f"job {job_id} - Pachyderm", body)


def mount(app: web.Application, bus: Bus) -> None:
    app[BUS] = bus
    app.router.add_get("/pipelines", pipelines_page)
    app.router.add_get("/pipelines/{pipeline}", pipeline_page)
    app.router.add_get("/jobs/{job}", job_page)
    app.router.add_get("/repos/{repo}", repo_page)
    app.router.add_get("/repos/{repo}/commits/{commit}", browse_page)
    app.router.add_get("/repos/{repo}/commits/{commit}/{path:.*}", browse_page)
