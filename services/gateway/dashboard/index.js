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
async function refreshRepos() {
  const body = document.getElementById("repos");
  try {
    const list = await api("ListRepo");
    body.replaceChildren();
    for (const info of list.repoInfo || []) {
      const row = body.insertRow();
      const link = document.createElement("a");
      link.href = "/repos/" + encodeURIComponent(info.repo.name);
      link.textContent = info.repo.name;
      row.insertCell().appendChild(link);
      row.insertCell().textContent = new Date(info.created).toLocaleString();
      row.insertCell().textContent = size(info.sizeBytes);
      row.insertCell().textContent = info.description || "";
    }
  } catch (e) { /* pfs not reachable yet: the health table says so */ }
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
async function refreshPipelines() {
  const body = document.getElementById("pipelines");
  try {
    const list = await api("ListPipeline", {}, "pps");
    body.replaceChildren();
    for (const info of list.pipelineInfo || []) {
      const row = body.insertRow();
      const link = document.createElement("a");
      link.href = "/pipelines/" + encodeURIComponent(info.pipeline.name);
      link.textContent = info.pipeline.name;
      row.insertCell().appendChild(link);
      row.insertCell().textContent = shorthand(info.input) || "-";
      row.insertCell().textContent = info.pipeline.name + "/" + (info.outputBranch || "master");
      const state = (info.state || "PIPELINE_STARTING").replace("PIPELINE_", "").toLowerCase();
      const cell = row.insertCell();
      cell.textContent = state;
      cell.className = state === "running" ? "ok" : (state === "failure" ? "down" : "");
    }
  } catch (e) { /* pps not reachable yet: the health table says so */ }
}
async function refreshCluster() {
  try {
    const info = await (await fetch("/api/admin/InspectCluster")).json();
    if (info.id) document.getElementById("cluster-id").textContent = info.id;
  } catch (e) { /* NATS not reachable yet: the health table says so */ }
}
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
  refreshRepos();
});
async function refresh() {
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
      st.className = s.status === "ok" ? "ok" : "down";
      row.insertCell().textContent = s.detail;
    }
  } catch (e) { document.getElementById("overall").textContent = "gateway unreachable"; }
}
refresh();
refreshRepos();
refreshPipelines();
refreshCluster();
setInterval(() => { refresh(); refreshRepos(); refreshPipelines(); }, 2000);
