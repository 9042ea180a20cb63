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

import contextlib
import csv
import html
import json
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
from libs.api.auth import auth_pb2 as auth
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.bus import Bus, kind_for
from libs.errors import InvalidArgument
from libs.objects import ObjectStore
from services.gateway.app.file_pages import diff_file, list_dir, read_file
from services.gateway.app.jobs import log_messages
from services.gateway.app.replies import TooLarge
from services.gateway.principal import auth_active, http_ask, http_principal

R = TypeVar("R", bound=Message)

# The bus the pages ask the backends over; the object store previews read.
BUS = web.AppKey("dashboard_bus", Bus)
STORE = web.AppKey("dashboard_objects", ObjectStore)

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


def _page(title: str, body: str, script: bool = False) -> web.Response:
    """A page in the common frame: the header (its ``#user`` slot shows who
    is signed in once auth is active: ``session.js``) and ``body``;
    ``script`` adds the live updates of ``/static/pages.js``."""
    js = '<script src="/static/session.js"></script>'
    js += '<script src="/static/pages.js"></script>' if script else ""
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="/static/pages.css"></head>'
        '<body><header class="top"><a class="brand" href="/">Pachyderm</a>'
        '<nav aria-label="main"><a href="/">DAG</a> <a href="/pipelines">Pipelines</a></nav>'
        '<span id="user" class="user" hidden></span></header>'
        f"<main>{body}</main>{js}</body></html>"
    )
    return web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},  # a cluster's data: never cached
    )


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
        + (await _acl_section(request, name) if auth_active() else "")
    )
    return _page(f"{name} - Pachyderm", body, script=auth_active())


SCOPES = ("none", "reader", "writer", "owner")


async def _acl_section(request: web.Request, repo: str) -> str:
    """Who may do what with ``repo`` (auth active), and a form its OWNERs
    (and admins) change it with (``pages.js``; the auth service decides)."""
    acl = await _ask(request, "GetACL", auth.GetACLRequest(repo=repo), auth.GetACLResponse, "auth")
    rows = [
        [f"<code>{_e(e.username)}</code>", _e(auth.Scope.Name(e.scope).lower())]
        for e in [*acl.entries, *acl.robot_entries]
    ]
    options = "".join(f'<option value="{s}">{s}</option>' for s in SCOPES)
    return (
        '<h2 id="acl-title">Access</h2>'
        + (_table(["subject", "scope"], rows) if rows else "<p>No ACL: admins only.</p>")
        + f'<form id="acl-form" data-repo="{_e(repo)}" aria-labelledby="acl-title">'
        '<label>subject <input id="acl-subject" required placeholder="robot:alice"></label> '
        f'<label>scope <select id="acl-scope">{options}</select></label> '
        '<button type="submit">Set</button> <span id="acl-error" role="alert"></span></form>'
    )


async def browse_page(request: web.Request) -> web.Response:
    name, ref = request.match_info["repo"], request.match_info["commit"]
    path = trees.normalize("/" + request.match_info.get("path", ""))
    f = pfs.File(commit=pfs.Commit(repo=pfs.Repo(name=name), id=ref), path=path)
    if path != "/":
        found = await _ask(request, "InspectFile", pfs.InspectFileRequest(file=f), pfs.FileInfo)
        if found.file_type != pfs.DIR:
            return await preview_page(request, f, found)
    rows = []
    async for i in list_dir(http_ask(request.app[BUS], request, "pfs"), f):
        commit_id = i.file.commit.id or ref
        base = i.file.path.rsplit("/", 1)[-1] or i.file.path
        href = _browse_href(name, commit_id, i.file.path)
        if i.file_type == pfs.DIR:
            label, download = base + "/", ""
        else:
            label = base
            download = _link(_download_href(name, commit_id, i.file.path), "download")
        rows.append(
            [
                f'<a href="{_e(href)}">{_e(label)}</a>',
                _e("dir" if i.file_type == pfs.DIR else "file"),
                _e(_size(i.size_bytes)),
                download,
            ]
        )
    up = ""
    if path != "/":
        parent = path.rsplit("/", 1)[0] or "/"
        up = f'<p><a href="{_e(_browse_href(name, ref, parent))}">..</a></p>'
    repo_href = f"/repos/{quote(name, safe='')}"
    body = (
        f'<h1><a href="{_e(repo_href)}">{_e(name)}</a> @ <code>{_e(ref)}</code></h1>'
        f"<h2>{_e(path)}</h2>{up}" + _table(["name", "type", "size", ""], rows)
    )
    if path == "/":
        body += await _commit_story(request, f.commit)
    return _page(f"{name}{path} - Pachyderm", body)


def _download_href(repo: str, commit: str, path: str) -> str:
    return f"/pfs/{quote(repo, safe='')}/{quote(commit, safe='')}{quote(path)}"


# What a preview reads of a file at most; rows of a CSV shown.
PREVIEW_BYTES = 64 * 1024
PREVIEW_ROWS = 50
# Changed files listed on a commit's page; the diff's reply cap.
DIFF_SHOWN = 200
DIFF_LIMIT = 4 * 1024 * 1024
IMAGE_TYPES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".ico"})


async def preview_page(request: web.Request, f: pfs.File, info: pfs.FileInfo) -> web.Response:
    """A file: its size, a download link and what can be shown of it: an
    image inline, a CSV's first rows as a table, JSON pretty-printed, text's
    first ``PREVIEW_BYTES``; anything else (binary) says so."""
    repo, ref, path = f.commit.repo.name, f.commit.id, f.path
    commit_id = info.file.commit.id or ref
    download = _download_href(repo, commit_id, path)
    parent = path.rsplit("/", 1)[0] or "/"
    suffix = ("." + path.rsplit(".", 1)[-1].lower()) if "." in path.rsplit("/", 1)[-1] else ""
    head = (
        f'<h1><a href="{_e("/repos/" + quote(repo, safe=""))}">{_e(repo)}</a> @ '
        f"<code>{_e(ref)}</code></h1><h2>{_e(path)}</h2>"
        f'<p><a href="{_e(_browse_href(repo, ref, parent))}">{_e(parent)}</a> · '
        f"{_e(_size(info.size_bytes))} · {_link(download, 'download')}</p>"
    )
    if suffix in IMAGE_TYPES:
        shown = f'<img class="preview" src="{_e(download)}" alt="{_e(path)}">'
        return _page(f"{repo}{path} - Pachyderm", head + shown)
    store = request.app[STORE]
    wanted = pfs.GetFileRequest(file=f, size_bytes=PREVIEW_BYTES)
    chunks = [b async for b in read_file(store, http_ask(request.app[BUS], request, "pfs"), wanted)]
    data = b"".join(chunks)[:PREVIEW_BYTES]
    whole = info.size_bytes <= PREVIEW_BYTES
    if b"\0" in data:
        shown = "<p>A binary file: no preview; download it to look inside.</p>"
    else:
        text = data.decode("utf-8", errors="replace")
        note = "" if whole else f"<p>The first {_size(PREVIEW_BYTES)}.</p>"
        shown = note + _preview_text(text, suffix, whole)
    return _page(f"{repo}{path} - Pachyderm", head + shown)


def _preview_text(text: str, suffix: str, whole: bool) -> str:
    if suffix in (".csv", ".tsv"):
        lines = text.splitlines()
        if not whole and lines:
            lines = lines[:-1]  # the last may be cut short
        rows = list(
            csv.reader(lines[: PREVIEW_ROWS + 1], delimiter="\t" if suffix == ".tsv" else ",")
        )
        if rows:
            return f"<p>The first {PREVIEW_ROWS} rows at most.</p>" + _table(
                rows[0], [[_e(c) for c in r] for r in rows[1:]]
            )
    if suffix == ".json" and whole:
        with contextlib.suppress(ValueError):  # not JSON after all: shown as it is
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return f'<pre class="preview">{_e(text)}</pre>'


async def _commit_story(request: web.Request, commit: pfs.Commit) -> str:
    """A commit's changes against its parent and its provenance (HTML)."""
    info = await _ask(
        request, "InspectCommit", pfs.InspectCommitRequest(commit=commit), pfs.CommitInfo
    )
    repo, cid = info.commit.repo.name, info.commit.id
    out = ["<h2>Changes against the parent</h2>"]
    if not info.parent_commit.id:
        out.append("<p>The first commit of the repo: everything in it is new.</p>")
    elif not info.HasField("finished"):
        out.append("<p>Still open: the changes show once it is finished.</p>")
    else:
        req = pfs.DiffFileRequest(new_file=pfs.File(commit=info.commit, path="/"))
        try:
            diff = await diff_file(http_ask(request.app[BUS], request, "pfs"), req, DIFF_LIMIT)
        except TooLarge:
            diff = None
        if diff is None:
            out.append("<p>Too many changes to show here; use <code>pachctl diff-file</code>.</p>")
        else:
            old = {i.file.path for i in diff.old_files if i.file_type != pfs.DIR}
            new = {i.file.path for i in diff.new_files if i.file_type != pfs.DIR}
            rows = [
                ["added" if p not in old else "changed", _link(_browse_href(repo, cid, p), p)]
                for p in sorted(new)
            ] + [["deleted", _e(p)] for p in sorted(old - new)]
            parent = _link(_browse_href(repo, info.parent_commit.id), info.parent_commit.id, True)
            out.append(f"<p>Against {parent}; {len(rows)} files.</p>")
            out.append(
                _table(["change", "path"], rows[:DIFF_SHOWN]) if rows else "<p>No changes.</p>"
            )
    out.append("<h2>Provenance</h2>")
    if not info.provenance:
        out.append("<p>None: this commit was made directly, not by a pipeline.</p>")
    else:
        out.append(_provenance_svg(info))
    return "".join(out)


def _provenance_svg(info: pfs.CommitInfo) -> str:
    """The commits this one came from, each an arrow into it (inline SVG)."""
    w, h, gap = 260, 40, 12
    rows = list(info.provenance)[:20]
    height = max(len(rows), 1) * (h + gap) + gap
    cy = height / 2
    parts = [
        f'<svg class="prov" xmlns="http://www.w3.org/2000/svg" role="group" '
        f'aria-label="provenance" width="{2 * w + 120}" height="{height}">'
    ]
    for n, c in enumerate(rows):
        y = gap + n * (h + gap)
        href = _browse_href(c.repo.name, c.id)
        mid = y + h / 2
        parts.append(
            f'<path class="edge" d="M{w},{mid} C{w + 60},{mid} {w + 60},{cy} {w + 120},{cy}"/>'
            f'<a href="{_e(href)}" class="node">'
            f'<rect x="0" y="{y}" width="{w}" height="{h}" rx="6"/>'
            f'<text x="10" y="{y + 25}">{_e(c.repo.name)}/{_e(c.id[:12])}</text></a>'
        )
    me = info.commit
    parts.append(
        f'<g class="node self">'
        f'<rect x="{w + 120}" y="{cy - h / 2}" width="{w}" height="{h}" rx="6"/>'
        f'<text x="{w + 130}" y="{cy + 5}">{_e(me.repo.name)}/{_e(me.id[:12])}</text></g></svg>'
    )
    return "".join(parts)


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
    datum_id = request.query.get("datum", "")
    info = await _ask(request, "InspectJob", pps.InspectJobRequest(job=job), pps.JobInfo, "pps")
    datums = await _ask(
        request,
        "ListDatum",
        pps.ListDatumRequest(job=job, page=page, page_size=DATUMS_SHOWN),
        pps.ListDatumResponse,
        "pps",
    )
    base = _job_href(job_id)

    def logs_link(d: pps.DatumInfo) -> str:
        label = "logs" if d.state != pps.FAILED else "failed: logs"
        return _link(f"{base}?datum={quote(d.datum.id, safe='')}#logs", label)

    datum_rows = [
        [
            f"<code>{_e(d.datum.id)}</code>",
            datum_state(d.state),
            _e(", ".join(f"{f.file.commit.repo.name}{f.file.path}" for f in d.data) or "-"),
            _e(_seconds(d.stats.download_time, d.stats.process_time, d.stats.upload_time)),
            logs_link(d),
        ]
        for d in datums.datum_infos
    ]
    failed = [d for d in datums.datum_infos if d.state == pps.FAILED]
    pager = []
    if page > 0:
        pager.append(_link(f"{base}?page={page - 1}", "previous"))
    if page + 1 < datums.total_pages:
        pager.append(_link(f"{base}?page={page + 1}", "next"))
    logs = []
    wanted = pps.GetLogsRequest(job=job, tail=LOG_LINES_SHOWN)
    if datum_id:
        wanted.datum.CopyFrom(pps.Datum(id=datum_id, job=job))
    async for m in log_messages(http_ask(request.app[BUS], request, "pps"), wanted):
        when = _time(m.ts, m.HasField("ts"))
        logs.append(f"{when} {m.worker_id or '-'} {m.datum_id or '-'} {m.message.rstrip()}")
        if len(logs) >= LOG_LINES_SHOWN:
            break
    pipeline = info.pipeline.name
    summary = [
        ["pipeline", _link(_pipeline_href(pipeline), pipeline)],
        [
            "state",
            f'<span id="job-state">{job_state(info.state)}</span>'
            + (f" ({_e(info.reason)})" if info.reason else ""),
        ],
        ["progress", job_progress(info)],
        ["started", _e(_time(info.started, info.HasField("started")))],
        ["finished", _e(_time(info.finished, info.HasField("finished")))],
        ["restarts", _e(info.restart)],
        ["output commit", _commit_link(info.output_commit)],
    ]
    failed_html = ""
    if failed:
        failed_html = (
            "<h2>Failed datums</h2><ul>"
            + "".join(
                f"<li><code>{_e(d.datum.id)}</code> "
                f"({_e(', '.join(f.file.path for f in d.data) or '-')}): {logs_link(d)}</li>"
                for d in failed
            )
            + "</ul>"
        )
    if datum_id:
        logs_head = (
            f'<h2 id="logs">Logs of datum <code>{_e(datum_id)}</code></h2>'
            f"<p>{_link(base + '#logs', 'all logs of the job')}</p>"
        )
    else:
        logs_head = (
            f'<h2 id="logs">Logs</h2><p>The last {LOG_LINES_SHOWN} lines, then new ones.</p>'
        )
    body = (
        f'<h1 id="job" data-job="{_e(job_id)}" data-datum="{_e(datum_id)}">'
        f"Job <code>{_e(job_id)}</code></h1>"
        + '<div id="job-summary">'
        + _table(["", ""], summary)
        + "</div>"
        + '<div id="datum-views">'
        + failed_html
        + "<h2>Datum timing</h2>"
        + timing_chart(datums.datum_infos)
        + f"<h2>Datums</h2><p>Page {page + 1} of {max(datums.total_pages, 1)}. "
        + " ".join(pager)
        + "</p>"
        + _table(["id", "state", "data", "time", ""], datum_rows)
        + "</div>"
        + logs_head
        + f'<pre id="log-lines" aria-live="polite">{_e(chr(10).join(logs)) or "(no logs)"}</pre>'
    )
    return _page(f"job {job_id} - Pachyderm", body, script=True)


def job_progress(info: pps.JobInfo) -> str:
    """The job page's live progress: a bar, the percentage and the counts
    (``processed + skipped / total``; ``pages.js`` keeps them current)."""
    done = info.data_processed + info.data_skipped
    total = info.data_total
    percent = (
        100
        if info.state == pps.JOB_SUCCESS and not total
        else (int(100 * done / total) if total else 0)
    )
    text = f"{info.data_processed} + {info.data_skipped} / {total}"
    if info.data_failed:
        text += f" ({info.data_failed} failed)"
    return (
        f'<progress id="job-progress" value="{done}" max="{max(total, 1)}" '
        f'aria-label="job progress"></progress> '
        f'<strong id="job-percent">{percent}%</strong> <span id="job-counts">{_e(text)}</span>'
    )


# One bar per datum: width per second is scaled to the slowest datum shown.
_CHART_W, _BAR_H, _LABEL_W = 560, 16, 180


def timing_chart(datums: Iterable[pps.DatumInfo]) -> str:
    """Each datum's download, process and upload time (from its stats) as a
    stacked bar (inline SVG); the numbers are in each bar's title."""
    rows = []
    for d in datums:
        parts = [
            t.ToNanoseconds() / 1e9
            for t in (d.stats.download_time, d.stats.process_time, d.stats.upload_time)
        ]
        label = ", ".join(f.file.path for f in d.data) or d.datum.id[:12]
        rows.append((label, parts))
    if not rows or not any(sum(p) for _, p in rows):
        return "<p>No timings yet (they come with each processed datum).</p>"
    longest = max(sum(p) for _, p in rows) or 1.0
    height = len(rows) * (_BAR_H + 6) + 30
    out = [
        f'<svg class="timing" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="time per datum: download, process, upload" '
        f'width="{_LABEL_W + _CHART_W + 80}" height="{height}">'
    ]
    for n, (label, parts) in enumerate(rows):
        y = n * (_BAR_H + 6)
        short = label if len(label) <= 24 else "…" + label[-23:]
        out.append(f'<text x="0" y="{y + 12}">{_e(short)}</text>')
        x = float(_LABEL_W)
        for kind, secs in zip(("download", "process", "upload"), parts, strict=True):
            w = _CHART_W * secs / longest
            out.append(
                f'<rect class="{kind}" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR_H}">'
                f"<title>{_e(label)}: {kind} {secs:.3g}s</title></rect>"
            )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 12}">{sum(parts):.3g}s</text>')
    y = len(rows) * (_BAR_H + 6) + 8
    for i, kind in enumerate(("download", "process", "upload")):
        out.append(
            f'<rect class="{kind}" x="{_LABEL_W + i * 110}" y="{y}" width="12" height="12"/>'
            f'<text x="{_LABEL_W + i * 110 + 16}" y="{y + 11}">{kind}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def mount(app: web.Application, bus: Bus, store: ObjectStore) -> None:
    app[BUS] = bus
    app[STORE] = store
    app.router.add_get("/pipelines", pipelines_page)
    app.router.add_get("/pipelines/{pipeline}", pipeline_page)
    app.router.add_get("/jobs/{job}", job_page)
    app.router.add_get("/repos/{repo}", repo_page)
    app.router.add_get("/repos/{repo}/commits/{commit}", browse_page)
    app.router.add_get("/repos/{repo}/commits/{commit}/{path:.*}", browse_page)
