"use strict";
// Live parts of the server-rendered pages. On a job page: the progress and
// state follow the change feed (/api/feed), the log lines follow
// /api/feed/logs. On a repo page (auth active): its ACL form.
async function api(method, body, service) {
  const r = await fetch("/api/" + (service || "pfs") + "/" + method, {method: "POST",
    body: JSON.stringify(body || {}),
    headers: {"Content-Type": "application/json"}});
  const data = await r.json();
  if (!r.ok) throw new Error(data.error ? data.error.message : r.statusText);
  return data;
}
function followJob(head) {
  const id = head.getAttribute("data-job");
  const datum = head.getAttribute("data-datum");
  let done = null;  // unknown until the first update
  async function update() {
    let info;
    try { info = await api("InspectJob", {job: {id}}, "pps"); } catch (e) { return; }
    const p = Number(info.dataProcessed || 0), s = Number(info.dataSkipped || 0);
    const t = Number(info.dataTotal || 0), f = Number(info.dataFailed || 0);
    const st = (info.state || "JOB_STARTING").replace("JOB_", "").toLowerCase();
    const bar = document.getElementById("job-progress");
    bar.max = Math.max(t, 1); bar.value = p + s;
    const pct = st === "success" && !t ? 100 : (t ? Math.floor(100 * (p + s) / t) : 0);
    document.getElementById("job-percent").textContent = pct + "%";
    document.getElementById("job-counts").textContent =
      p + " + " + s + " / " + t + (f ? " (" + f + " failed)" : "");
    const state = document.getElementById("job-state");
    state.replaceChildren();
    const span = document.createElement("span");
    span.className = st; span.textContent = st;
    state.appendChild(span);
    const was = done;
    done = ["success", "failure", "killed"].includes(st);
    if (done && was === false) refreshDatums();
  }
  // Once the job is over, its summary, datums, timings and failures are final:
  // take them from the page as the server renders it now.
  async function refreshDatums() {
    try {
      const r = await fetch(location.href, {headers: {Accept: "text/html"}});
      const fresh = new DOMParser().parseFromString(await r.text(), "text/html");
      for (const id of ["job-summary", "datum-views"]) {
        const part = fresh.getElementById(id);
        if (part) document.getElementById(id).replaceWith(document.adoptNode(part));
      }
    } catch (e) { /* the page as loaded stays */ }
  }
  const feed = new EventSource("/api/feed");
  feed.addEventListener("changed", (ev) => {
    if (JSON.parse(ev.data).some((c) => c.kind === "pps.job" && c.id === id)) update();
  });
  update();
  const pre = document.getElementById("log-lines");
  const logs = new EventSource("/api/feed/logs?job=" + encodeURIComponent(id) +
    (datum ? "&datum=" + encodeURIComponent(datum) : ""));
  let fresh = true;
  logs.addEventListener("log", (ev) => {
    const m = JSON.parse(ev.data);
    if (fresh) { pre.textContent = ""; fresh = false; }
    const when = m.ts ? m.ts.replace("T", " ").replace(/\.\d+Z$/, " UTC") : "-";
    pre.textContent += when + " " + (m.worker || "-") + " " + (m.datum || "-") + " " + m.message + "\n";
  });
  // a reconnect replays the tail: start the text over
  logs.onerror = () => { fresh = true; if (done) logs.close(); };
}
const job = document.getElementById("job");
if (job) followJob(job);
// On a repo page with auth active: set a subject's scope (OWNERs and
// admins may; the auth service refuses anyone else, and the reason shows).
const aclForm = document.getElementById("acl-form");
if (aclForm) {
  aclForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = document.getElementById("acl-error");
    error.textContent = "";
    try {
      await api("SetScope", {repo: aclForm.dataset.repo,
        username: document.getElementById("acl-subject").value.trim(),
        scope: document.getElementById("acl-scope").value.toUpperCase()}, "auth");
      location.reload();
    } catch (e) {
      error.textContent = e.message;
    }
  });
}
