"use strict";
// Who is signed in, on every dashboard page: the header's #user slot says
// who (and offers to sign out) once auth is active; on /login the forms
// send a token or a one-time password to /api/session/login, which keeps
// it in an HttpOnly cookie (this script never sees it again).
(function () {
  function nextPath() {
    const next = new URLSearchParams(location.search).get("next") || "/";
    // only a path of this site (never //other.site or /\other.site)
    return /^\/(?![\/\\])[^\\]*$/.test(next) ? next : "/";
  }
  async function post(path, body) {
    const r = await fetch(path, {method: "POST", body: JSON.stringify(body || {}),
      headers: {"Content-Type": "application/json"}, credentials: "same-origin"});
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error ? data.error.message : r.statusText);
    return data;
  }
  function showUser(session) {
    const slot = document.getElementById("user");
    if (!slot || !session.auth_active) return;
    slot.replaceChildren();
    if (session.subject) {
      const who = document.createElement("span");
      who.id = "whoami";
      who.textContent = session.subject + " ";
      const out = document.createElement("button");
      out.type = "button"; out.textContent = "Sign out"; out.id = "sign-out";
      out.addEventListener("click", async () => {
        await post("/api/session/logout");
        location.assign("/login");
      });
      slot.append(who, out);
    } else {
      const a = document.createElement("a");
      a.href = "/login"; a.textContent = "Sign in";
      slot.append(a);
    }
    slot.hidden = false;
  }
  function wireLogin() {
    const error = document.getElementById("login-error");
    async function signIn(body) {
      error.textContent = "";
      try {
        await post("/api/session/login", body);
        location.assign(nextPath());
      } catch (e) {
        error.textContent = e.message;
      }
    }
    document.getElementById("login-token").addEventListener("submit", (ev) => {
      ev.preventDefault();
      signIn({token: document.getElementById("token").value.trim()});
    });
    document.getElementById("login-otp").addEventListener("submit", (ev) => {
      ev.preventDefault();
      signIn({one_time_password: document.getElementById("otp").value.trim()});
    });
    document.getElementById("login-oidc").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.textContent = "";
      try {
        const started = await post("/api/session/oidc", {next: nextPath()});
        location.assign(started.url);  // the provider's page; it comes back signed in
      } catch (e) {
        error.textContent = e.message;
      }
    });
  }
  async function start() {
    if (document.getElementById("login-token")) wireLogin();
    try {
      const r = await fetch("/api/session", {credentials: "same-origin"});
      const session = await r.json();
      const oidc = document.getElementById("login-oidc");
      if (oidc && session.oidc) oidc.hidden = false;
      showUser(session);
    } catch (e) { /* the header just stays empty */ }
  }
  start();
})();
