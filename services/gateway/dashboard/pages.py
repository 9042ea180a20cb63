"""Server-rendered dashboard pages (every value escaped):

- ``/repos/<repo>``: the repo's branches (name, head) and its newest
  commits (id, branch, started, finished, size), each linking to
- ``/repos/<repo>/commits/<commit>/<path>``: the directory listing of that
  commit at ``path``; a directory links one level down, a file to its
  download (``/pfs/<repo>/<commit>/<path>``, ``http/files.py``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import quote

from aiohttp import web
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.bus import kind_for
from services.gateway.http.files import ask_for, list_dir
from services.gateway.http.keys import BUS
from services.gateway.principal import http_principal

R = TypeVar("R", bound=Message)

# Newest commits shown on a repo page.
COMMITS_SHOWN = 100

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
td, th { padding: .3rem 1rem; border-bottom: 1px solid #ddd; text-align: left; }
code { font-size: .9em; }
"""


async def _ask(request: web.Request, name: str, req: Message, response: type[R]) -> R:
    return await request.app[BUS].request(
        "pfs", name, req, response, kind=kind_for(name), principal=http_principal(request)
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
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f'<body><p><a href="/">Pachyderm</a></p>{body}</body></html>'
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
    async for i in list_dir(ask_for(request), f):
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


def mount(app: web.Application) -> None:
    app.router.add_get("/repos/{repo}", repo_page)
    app.router.add_get("/repos/{repo}/commits/{commit}", browse_page)
    app.router.add_get("/repos/{repo}/commits/{commit}/{path:.*}", browse_page)
