"use strict";
// The overview page: the DAG (repos -> pipelines, live from /api/feed), the
// services' health, repos and pipelines. Every call is same-origin; state
// changes are POSTs with Content-Type application/json (the gateway's guard).
async function api(method, body, service) {
  const r = await fetch("/api/" + (service || "pfs") + "/" + method, {method: "POST",
    body: JSON.stringify(body || {}),
    headers: {"Content-Type": "application/json"}});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error ? data.error.message : r.statusText);
  return data;
}
function size(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let u = 0; n = Number(n || 0);
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return Number(n.toPrecision(4)) + units[u];
}
function word(state, prefix) {
  return (state || "").replace(prefix, "").toLowerCase();
}
const state = {repos: [], pipelines: [], jobs: {}};  // jobs: pipeline -> latest JobInfo

// --- tables -----------------------------------------------------------------
function link(href, text) {
  const a = document.createElement("a");
  a.href = href; a.textContent = text;
  return a;
}
function shorthand(input) {
  if (!input) return "";
  if (input.atom) return input.atom.repo + ":" + input.atom.glob;
  if (input.cross) return "(" + input.cross.map(shorthand).join(" ⨯ ") + ")";
  if (input.union) return "(" + input.union.map(shorthand).join(" ∪ ") + ")";
  if (input.cron) return input.cron.name + ":" + input.cron.spec;
  if (input.git) return input.git.name + ":" + input.git.url;
  return "";
}
function renderRepos() {
  const body = document.getElementById("repos");
  body.replaceChildren();
  for (const info of state.repos) {
    const row = body.insertRow();
    row.insertCell().appendChild(link("/repos/" + encodeURIComponent(info.repo.name), info.repo.name));
    row.insertCell().textContent = new Date(info.created).toLocaleString();
    row.insertCell().textContent = size(info.sizeBytes);
    row.insertCell().textContent = info.description || "";
  }
}
function renderPipelines() {
  const body = document.getElementById("pipelines");
  body.replaceChildren();
  for (const info of state.pipelines) {
    const name = info.pipeline.name;
    const row = body.insertRow();
    row.insertCell().appendChild(link("/pipelines/" + encodeURIComponent(name), name));
    row.insertCell().textContent = shorthand(info.input) || "-";
    row.insertCell().appendChild(link("/repos/" + encodeURIComponent(name),
      name + "/" + (info.outputBranch || "master")));
    const st = word(info.state || "PIPELINE_STARTING", "PIPELINE_");
    const cell = row.insertCell();
    cell.textContent = st;
    cell.className = st === "running" ? "ok" : (st === "failure" ? "down" : "");
  }
}

// --- the DAG ----------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
const W = 190, H = 66, COL = 290, ROW = 92, PAD = 24;
function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
function inputRepo(input) {
  if (input.atom) return input.atom.repo;
  if (input.cron) return input.cron.repo || input.cron.name;
  if (input.git) return input.git.name;
  return null;
}
// The graph: nodes (repos that no pipeline writes, pipelines with their
// output repo, cross/union junctions) and edges between them.
function graph() {
  const nodes = new Map(), edges = [];
  const outputs = new Set(state.pipelines.map((p) => p.pipeline.name));
  for (const r of state.repos) {
    if (!outputs.has(r.repo.name)) nodes.set(r.repo.name, {kind: "repo", name: r.repo.name, info: r});
  }
  for (const p of state.pipelines) {
    nodes.set(p.pipeline.name, {kind: "pipeline", name: p.pipeline.name, info: p});
  }
  function walk(input, into, id) {
    const repo = inputRepo(input);
    if (repo) {
      if (!nodes.has(repo)) nodes.set(repo, {kind: "repo", name: repo, info: null});
      edges.push({from: repo, to: into});
      return;
    }
    const parts = input.cross || input.union || [];
    const kind = input.cross ? "cross" : "union";
    nodes.set(id, {kind: "junction", name: id, op: kind, of: into});
    edges.push({from: id, to: into});
    parts.forEach((part, i) => walk(part, id, id + "." + i));
  }
  for (const p of state.pipelines) {
    if (p.input) walk(p.input, p.pipeline.name, p.pipeline.name + ":" + (p.input.cross ? "cross" : "union"));
  }
  // depth: repos 0, a pipeline one past its deepest input, a junction half a column before it
  const depth = new Map();
  function d(name, seen) {
    if (depth.has(name)) return depth.get(name);
    const n = nodes.get(name);
    if (!n || n.kind === "repo" || seen.has(name)) { depth.set(name, 0); return 0; }
    seen.add(name);
    const ins = edges.filter((e) => e.to === name).map((e) => d(e.from, seen));
    const deepest = ins.length ? Math.max(...ins) : 0;
    const v = n.kind === "junction" ? deepest : deepest + 1;
    depth.set(name, v);
    return v;
  }
  for (const name of nodes.keys()) d(name, new Set());
  for (const [name, n] of nodes) n.depth = n.kind === "junction" ? depth.get(n.of) : depth.get(name);
  return {nodes, edges};
}
function layout(g) {
  const cols = new Map();
  for (const n of g.nodes.values()) {
    if (n.kind === "junction") continue;
    if (!cols.has(n.depth)) cols.set(n.depth, []);
    cols.get(n.depth).push(n);
  }
  let rows = 1;
  for (const [c, list] of cols) {
    list.sort((a, b) => a.name.localeCompare(b.name));
    list.forEach((n, i) => { n.x = PAD + c * COL; n.y = PAD + i * ROW; });
    rows = Math.max(rows, list.length);
  }
  const junctions = [...g.nodes.values()].filter((n) => n.kind === "junction");
  // innermost junctions last: each sits left of what it feeds
  for (const j of junctions.sort((a, b) => a.name.length - b.name.length)) {
    const into = g.nodes.get(g.edges.find((e) => e.from === j.name).to);
    j.x = (into.x - 50); j.y = into.y + H / 2;
    if (into.kind === "junction") { j.x = into.x - 40; }
  }
  const width = PAD * 2 + Math.max(...[...cols.keys(), 0]) * COL + W;
  const bottom = PAD + (rows - 1) * ROW + H;
  return {width: Math.max(width, 400), height: bottom + PAD + 24, lane: bottom + 18};
}
function anchor(n, side) {
  if (n.kind === "junction") return [n.x + (side === "out" ? 14 : -14), n.y];
  return [side === "out" ? n.x + W : n.x, n.y + H / 2];
}
function jobText(job) {
  if (!job) return "no job yet";
  const done = Number(job.dataProcessed || 0) + Number(job.dataSkipped || 0);
  const total = Number(job.dataTotal || 0);
  return "job " + word(job.state || "JOB_STARTING", "JOB_") + " " + done + "/" + total;
}
function drawNode(svg, n) {
  const href = n.kind === "repo" ? "/repos/" + encodeURIComponent(n.name)
    : "/pipelines/" + encodeURIComponent(n.name);
  const a = el("a", {href, class: "node " + n.kind, "data-name": n.name}, svg);
  el("rect", {class: "box", x: n.x, y: n.y, width: W, height: H}, a);
  const name = el("text", {class: "name", x: n.x + 10, y: n.y + 20}, a);
  name.textContent = n.name.length > 22 ? n.name.slice(0, 21) + "…" : n.name;
  const sub = el("text", {class: "sub", x: n.x + 10, y: n.y + 38}, a);
  let label;
  if (n.kind === "repo") {
    label = "repo · " + (n.info ? size(n.info.sizeBytes) : "?");
    sub.textContent = label;
  } else {
    const st = word(n.info.state || "PIPELINE_STARTING", "PIPELINE_");
    a.classList.add(st);
    const job = state.jobs[n.name];
    const js = job ? word(job.state || "JOB_STARTING", "JOB_") : "none";
    a.classList.add("job-" + js);
    a.setAttribute("data-state", st);
    a.setAttribute("data-job-state", js);
    if (job) a.setAttribute("data-job", job.job.id);
    sub.textContent = st + " · " + jobText(job);
    label = "pipeline " + n.name + ", " + st + ", " + jobText(job);
    el("rect", {class: "bar-bg", x: n.x + 10, y: n.y + 48, width: W - 20, height: 8}, a);
    if (job) {
      const total = Number(job.dataTotal || 0);
      const done = Number(job.dataProcessed || 0) + Number(job.dataSkipped || 0);
      const frac = total ? Math.min(done / total, 1) : (js === "success" ? 1 : 0);
      a.setAttribute("data-progress", String(Math.round(frac * 100)));
      el("rect", {class: "bar" + (Number(job.dataFailed || 0) ? " failed" : ""),
        x: n.x + 10, y: n.y + 48, width: (W - 20) * frac, height: 8}, a);
    }
  }
  a.setAttribute("aria-label", n.kind === "repo" ? "repo " + n.name + ", " + label : label);
  const title = el("title", {}, a);
  title.textContent = n.name;
}
function renderDag() {
  const svg = document.getElementById("dag");
  const focused = document.activeElement && document.activeElement.getAttribute &&
    document.activeElement.getAttribute("data-name");
  const g = graph();
  document.getElementById("dag-empty").hidden = g.nodes.size > 0;
  const box = layout(g);
  svg.replaceChildren();
  svg.setAttribute("width", box.width); svg.setAttribute("height", box.height);
  svg.setAttribute("viewBox", "0 0 " + box.width + " " + box.height);
  const defs = el("defs", {}, svg);
  const marker = el("marker", {id: "arrowhead", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto"}, defs);
  el("path", {class: "arrow", d: "M0,0 L10,5 L0,10 z"}, marker);
  for (const e of g.edges) {
    const a = g.nodes.get(e.from), b = g.nodes.get(e.to);
    if (!a || !b) continue;
    const [x1, y1] = anchor(a, "out"), [x2, y2] = anchor(b, "in");
    const mid = (x1 + x2) / 2;
    // an edge that skips a column runs in the lane below every node
    const d = x2 - x1 > COL ? `M${x1},${y1} C${x1 + 40},${y1} ${x1 + 20},${box.lane} ${x1 + 60},${box.lane}` +
      ` L${x2 - 60},${box.lane} C${x2 - 20},${box.lane} ${x2 - 40},${y2} ${x2},${y2}`
      : `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
    el("path", {class: "edge", "data-from": e.from, "data-to": e.to, "marker-end": "url(#arrowhead)", d}, svg);
  }
  for (const n of g.nodes.values()) {
    if (n.kind === "junction") {
      const j = el("g", {class: "junction " + n.op, "data-name": n.name}, svg);
      el("circle", {cx: n.x, cy: n.y, r: 14}, j);
      const t = el("text", {x: n.x, y: n.y}, j);
      t.textContent = n.op === "cross" ? "⨯" : "∪";
      el("title", {}, j).textContent = n.op + " of the inputs of " + n.of;
    } else {
      drawNode(svg, n);
    }
  }
  if (focused) {
    const again = svg.querySelector(`[data-name="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}
function render() { renderDag(); renderRepos(); renderPipelines(); }

// --- loading and the live feed -------------------------------------------------
async function loadRepos() {
  try { state.repos = (await api("ListRepo")).repoInfo || []; } catch (e) { /* health says why */ }
}
async function loadJob(pipeline) {
  try {
    const list = await api("ListJob", {pipeline: {name: pipeline}}, "pps");
    const jobs = list.jobInfo || [];
    if (jobs.length) state.jobs[pipeline] = jobs[0]; else delete state.jobs[pipeline];
  } catch (e) { /* pps not reachable */ }
}
async function loadPipelines() {
  try {
    state.pipelines = (await api("ListPipeline", {}, "pps")).pipelineInfo || [];
  } catch (e) { return; }
  await Promise.all(state.pipelines.map((p) => loadJob(p.pipeline.name)));
}
function newer(a, b) {  // is JobInfo a at least as new as b?
  if (!b) return true;
  if (a.job.id === b.job.id) return true;
  return String(a.started || "") >= String(b.started || "");
}
async function jobChanged(id) {
  try {
    const info = await api("InspectJob", {job: {id}}, "pps");
    const name = info.pipeline && info.pipeline.name;
    if (name && newer(info, state.jobs[name])) state.jobs[name] = info;
  } catch (e) { /* gone, or not ours to see */ }
}
let pending = null;
async function onChanged(changes) {
  const kinds = new Set(changes.map((c) => c.kind));
  const work = [];
  if (kinds.has("pfs.repo") || kinds.has("pfs.commit")) work.push(loadRepos());
  if (kinds.has("pps.pipeline")) work.push(loadPipelines());
  else for (const c of changes) if (c.kind === "pps.job") work.push(jobChanged(c.id));
  await Promise.all(work);
  render();
}
function listen() {
  const live = document.getElementById("live");
  const feed = new EventSource("/api/feed");
  feed.onopen = () => { live.textContent = "● live"; live.className = "live on"; };
  feed.onerror = () => { live.textContent = "○ reconnecting"; live.className = "live"; };
  feed.addEventListener("changed", (ev) => {
    const changes = JSON.parse(ev.data);
    pending = (pending || Promise.resolve()).then(() => onChanged(changes));
  });
}

// --- health -----------------------------------------------------------------
// What each service really serves today (a service that serves nothing says so).
const SERVES = {
  pfs: "repos, branches, commits and files",
  pps: "pipelines, jobs, datums and logs",
  admin: "the cluster id, extract and restore",
  auth: "users, tokens, admins and repo ACLs (once activated)",
  enterprise: "activation codes and their expiry",
};
async function refreshHealth() {
  try {
    const v = await (await fetch("/version")).json();
    document.getElementById("version").textContent = v.pretty;
  } catch (e) { document.getElementById("version").textContent = "(unknown)"; }
  try {
    const h = await (await fetch("/health")).json();
    const overall = document.getElementById("overall");
    overall.textContent = h.status;
    overall.className = h.status === "ok" ? "ok" : "down";
    document.getElementById("nats").textContent = h.nats;
    const body = document.getElementById("services");
    body.replaceChildren();
    for (const [name, s] of Object.entries(h.services)) {
      const row = body.insertRow();
      row.insertCell().textContent = name;
      const st = row.insertCell();
      st.textContent = s.status;
      st.className = s.status === "down" ? "down" : (SERVES[name] || "").startsWith("nothing") ? "idle" : "ok";
      row.insertCell().textContent = SERVES[name] || "(unknown service)";
      row.insertCell().textContent = s.detail;
    }
  } catch (e) { document.getElementById("overall").textContent = "gateway unreachable"; }
}
async function refreshCluster() {
  try {
    const info = await (await fetch("/api/admin/InspectCluster")).json();
    if (info.id) document.getElementById("cluster-id").textContent = info.id;
  } catch (e) { /* NATS not reachable yet: the health table says so */ }
}
// --- enterprise -------------------------------------------------------------
async function refreshEnterprise() {
  const out = document.getElementById("ent-state");
  try {
    const st = await api("GetState", {}, "enterprise");
    const expires = st.info && st.info.expires ? " until " + new Date(st.info.expires).toLocaleString() : "";
    out.textContent = (st.state || "NONE").toLowerCase() + expires;
  } catch (e) { out.textContent = e.message; }
}
document.getElementById("ent-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("ent-result");
  out.textContent = "";
  try {
    await api("Activate", {activationCode: document.getElementById("ent-code").value.trim()},
      "enterprise");
    document.getElementById("ent-code").value = "";
    out.textContent = "activated";
  } catch (e) { out.textContent = e.message; }
  refreshEnterprise();
});
document.getElementById("gc").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = document.getElementById("gc-result");
  out.textContent = "collecting…";
  try {
    const r = await api("GarbageCollect", {}, "pps");
    const n = (c) => (c && c.objects ? Number(c.objects) : 0) + " objects, " + size(c && c.bytes);
    out.textContent = "deleted " + n(r.deleted) + "; kept " + n(r.kept);
  } catch (e) { out.textContent = e.message; }
});
document.getElementById("create-repo").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("repo-error");
  error.textContent = "";
  try {
    await api("CreateRepo", {repo: {name: document.getElementById("repo-name").value},
      description: document.getElementById("repo-description").value});
    document.getElementById("repo-name").value = "";
    document.getElementById("repo-description").value = "";
  } catch (e) { error.textContent = e.message; }
  await loadRepos(); render();
});
async function start() {
  listen();
  refreshHealth();
  refreshCluster();
  refreshEnterprise();
  await Promise.all([loadRepos(), loadPipelines()]);
  render();
  document.body.setAttribute("data-loaded", "1");
  setInterval(refreshHealth, 5000);
  // a slow safety net in case a change slipped past a reconnect
  setInterval(async () => { await Promise.all([loadRepos(), loadPipelines()]); render(); }, 60000);
}
start();
