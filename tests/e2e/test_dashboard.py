"""The dashboard in a real browser: Debian's chromium (installed by
``make test-deps``), driven by playwright over a real cluster running the
beginner tutorial (images -> edges -> montage, with small images).

- the DAG shows the three repo/pipeline nodes and the right edges (the
  montage's cross drawn as a junction);
- a new image commit makes the edges node show a running, then a finished
  job, with no reload (the change feed);
- the job page's progress reaches 100%, with its datum timing chart;
- a preview of an edges image loads (naturalWidth > 0), and the commit page
  shows its changes and provenance.

Screenshots go to ``.artifacts/screenshots/`` (git-ignored). The login page
(auth) is not tested here yet.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_pachctl_files import ok, pachctl
from tests.integration.test_pachctl_progress import on_pty
from tests.integration.test_pps_tutorial import TUTORIAL, put_images, sample_images
from tests.support.cluster import ROOT, Cluster, running

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / ".artifacts" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from running(Path(tmp_path_factory.mktemp("dashboard")) / "data")


@pytest.fixture(scope="module")
def tutorial(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """The tutorial's repo and pipelines, with one processed commit."""
    ok(pachctl(cluster, "create-repo", "images"))
    put_images(cluster, sample_images(tmp_path_factory.mktemp("images"), 1, 2))
    ok(pachctl(cluster, "create-pipeline", "-f", str(TUTORIAL / "edges.json")))
    ok(pachctl(cluster, "create-pipeline", "-f", str(TUTORIAL / "montage.json")))
    ok(pachctl(cluster, "flush-commit", "images/master"))
    return cluster


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test-deps)")
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


def base(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.http_port}"


def watch_errors(page: Any) -> list[str]:
    """Console errors and CSP violations the page reports."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def test_the_dag_is_live_and_the_job_page_reaches_100(
    tutorial: Cluster, browser: Any, tmp_path: Path
) -> None:
    page = browser.new_page()
    errors = watch_errors(page)
    page.goto(base(tutorial) + "/")
    page.wait_for_function("() => document.querySelectorAll('#dag a.node').length === 3")
    page.wait_for_selector('#dag a.node[data-name="edges"][data-job-state="success"]')
    names = page.eval_on_selector_all("#dag a.node", "ns => ns.map(n => n.dataset.name)")
    assert sorted(names) == ["edges", "images", "montage"]
    kinds = {n: page.get_attribute(f'#dag a.node[data-name="{n}"]', "class") for n in names}
    assert "repo" in (kinds["images"] or "") and "pipeline" in (kinds["edges"] or "")
    edges = page.eval_on_selector_all(
        "#dag path.edge", "es => es.map(e => [e.dataset.from, e.dataset.to])"
    )
    assert sorted(map(tuple, edges)) == [
        ("edges", "montage:cross"),
        ("images", "edges"),
        ("images", "montage:cross"),
        ("montage:cross", "montage"),
    ]
    assert page.locator("#dag g.junction.cross").count() == 1
    # honest status: each service says what it serves
    page.wait_for_selector("#services tr")
    rows = page.inner_text("#services")
    assert "repos, branches, commits and files" in rows and "repo ACLs" in rows
    page.wait_for_function("() => document.getElementById('ent-state').textContent === 'none'")
    # keyboard: a node is reachable with Tab and opens with Enter
    page.focus('#dag a.node[data-name="edges"]')
    assert page.evaluate("document.activeElement.dataset.name") == "edges"
    page.screenshot(path=str(SHOTS / "dag.png"), full_page=True)

    first_job = page.get_attribute('#dag a.node[data-name="edges"]', "data-job")
    # Record every job state the edges node shows, with no reload.
    page.evaluate(
        """() => { window.__stay = 1; window.__seen = [];
        setInterval(() => {
          const n = document.querySelector('#dag a.node[data-name="edges"]');
          const s = n && (n.dataset.job + ':' + n.dataset.jobState);
          if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
        }, 20); }"""
    )
    more = sample_images(tmp_path, 3, 2)
    committer = threading.Thread(target=put_images, args=(tutorial, more))
    committer.start()
    page.wait_for_function(
        f"""() => {{ const n = document.querySelector('#dag a.node[data-name="edges"]');
        return n && n.dataset.job !== {json.dumps(first_job)}; }}""",
        timeout=60_000,
    )
    new_job = page.get_attribute('#dag a.node[data-name="edges"]', "data-job")
    assert new_job
    # the job page, opened while the job may still run, follows it to 100%
    job_page = browser.new_page()
    job_errors = watch_errors(job_page)
    job_page.goto(f"{base(tutorial)}/jobs/{new_job}")
    job_page.wait_for_function(
        "() => document.getElementById('job-percent').textContent === '100%'", timeout=60_000
    )
    assert job_page.inner_text("#job-counts").endswith("/ 4")  # 2 new + 2 skipped
    page.wait_for_selector(
        f'#dag a.node[data-name="edges"][data-job="{new_job}"][data-job-state="success"]',
        timeout=60_000,
    )
    committer.join(60)
    seen = [s for s in page.evaluate("window.__seen") if s.startswith(new_job + ":")]
    states = [s.split(":", 1)[1] for s in seen]
    assert states[-1] == "success", seen
    assert any(s in ("starting", "running") for s in states[:-1]), seen
    assert page.evaluate("window.__stay") == 1  # the same page: never reloaded
    assert page.get_attribute('#dag a.node[data-name="edges"]', "data-progress") == "100"
    page.screenshot(path=str(SHOTS / "dag-after-commit.png"), full_page=True)
    # the job page: timings of its datums, and its logs
    job_page.wait_for_function(
        "() => [...document.querySelectorAll('svg.timing rect.process')]"
        ".some(r => Number(r.getAttribute('width')) > 0)",
        timeout=30_000,
    )
    job_page.wait_for_function(
        "() => document.getElementById('log-lines').textContent.includes('edges of')",
        timeout=30_000,
    )
    job_page.screenshot(path=str(SHOTS / "job.png"), full_page=True)
    assert not [e for e in errors + job_errors if "Content Security Policy" in e]


def test_an_edges_image_previews(tutorial: Cluster, browser: Any) -> None:
    page = browser.new_page()
    errors = watch_errors(page)
    page.goto(f"{base(tutorial)}/repos/edges/commits/master/sample-1.png")
    page.wait_for_function(
        "() => { const i = document.querySelector('img.preview');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=30_000,
    )
    assert page.evaluate("document.querySelector('img.preview').naturalWidth") == 240
    page.screenshot(path=str(SHOTS / "preview.png"), full_page=True)
    # the commit's own page: its changes against the parent and its provenance
    page.goto(f"{base(tutorial)}/repos/edges/commits/master/")
    text = page.inner_text("main")
    assert "Provenance" in text and "Changes against the parent" in text
    assert page.locator("svg.prov a.node").count() >= 1
    page.screenshot(path=str(SHOTS / "commit.png"), full_page=True)
    assert not errors, errors


def test_text_and_json_previews(tutorial: Cluster, browser: Any) -> None:
    ok(pachctl(tutorial, "create-repo", "notes"))
    body = b'{"b": [1, 2], "a": "<script>alert(1)</script>"}'
    ok(pachctl(tutorial, "put-file", "notes", "master", "/x.json", "-f", "-", stdin=body))
    csv_body = b"name,size\nalpha,1\nbeta,2\n"
    ok(pachctl(tutorial, "put-file", "notes", "master", "/t.csv", "-f", "-", stdin=csv_body))
    page = browser.new_page()
    page.goto(f"{base(tutorial)}/repos/notes/commits/master/x.json")
    shown = page.inner_text("pre.preview")
    assert '"b": [\n    1,' in shown and "<script>" in shown  # pretty, and shown as text
    page.goto(f"{base(tutorial)}/repos/notes/commits/master/t.csv")
    assert page.locator("main table td", has_text="beta").count() == 1


# --- the change feed over plain HTTP -------------------------------------------


def request(cluster: Cluster, path: str, **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=30)
    conn.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    return conn.getresponse()


def test_the_feed_relays_changes_not_contents(cluster: Cluster) -> None:
    resp = request(cluster, "/api/feed")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    assert "default-src 'self'" in (resp.getheader("Content-Security-Policy") or "")
    ok(pachctl(cluster, "create-repo", "feedme", "-d", "a secret description"))
    got, deadline = b"", time.monotonic() + 30
    while b"event: changed" not in got:  # (a ping every 15 s keeps lines coming)
        assert time.monotonic() < deadline, f"no change announced in 30 s: {got!r}"
        got += resp.fp.readline()  # type: ignore[union-attr]
    data = resp.fp.readline().decode()  # type: ignore[union-attr]
    resp.close()
    changes = json.loads(data.removeprefix("data: "))
    assert {"kind": "pfs.repo", "id": "feedme"} in changes
    assert "secret" not in data  # a doorbell: names what changed, never what it says


def test_the_feed_refuses_other_sites_and_bad_asks(cluster: Cluster) -> None:
    resp = request(cluster, "/api/feed", Origin="http://evil.example")
    assert resp.status == 403
    resp = request(cluster, "/api/feed", Host="evil.example")
    assert resp.status == 403
    resp = request(cluster, "/api/feed/logs")
    assert resp.status == 400 and b"job" in resp.read()
    resp = request(cluster, "/api/feed/logs?job=nosuchjob")
    assert resp.status == 404
    resp = request(cluster, "/static/..%2fpages.py")
    assert resp.status == 404
    assert re.search(r"Pachyderm", request(cluster, "/").read().decode())


def test_inspect_job_block_says_what_it_waits_for(tutorial: Cluster) -> None:
    table = ok(pachctl(tutorial, "list-job", "-p", "edges")).decode().splitlines()
    job_id = table[1].split()[0]
    out, shown = on_pty(tutorial, "inspect-job", job_id, "--block")
    assert f"waiting for job {job_id} of edges (success" in shown, shown
    piped = pachctl(tutorial, "inspect-job", job_id, "--block")
    assert piped.returncode == 0 and piped.stderr == b""
    assert piped.stdout.splitlines()[0] == out.splitlines()[0]
    assert out.startswith(f"ID: {job_id}".encode())
