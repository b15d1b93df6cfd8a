// Dora web console: plain JavaScript, no build step. It calls the same
// /v1/ API as qdoractl, authenticated by the HttpOnly session cookie; every
// write carries the session's CSRF token. Text from the server is always
// inserted with textContent, never as HTML.
"use strict";

const state = { session: null, timers: [], aborts: [] };

// ---- helpers -------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.classList.add("show");
  setTimeout(() => t.classList.remove("show"), 3500);
}

class APIError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(method, path, body, opts = {}) {
  const headers = {};
  let payload;
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = state.session ? state.session.csrf : "";
  if (body !== undefined && !(body instanceof Blob) && !(body instanceof File)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  } else if (body !== undefined) {
    headers["Content-Type"] = opts.type || body.type || "application/octet-stream";
    payload = body;
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin", signal: opts.signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new APIError(0, "cannot reach the admin API: " + e.message);
  }
  if (resp.status === 401 && !opts.noRedirect) { showLogin(); throw new APIError(401, "signed out"); }
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new APIError(resp.status, msg);
  }
  if (opts.raw) return resp;
  const ct = resp.headers.get("Content-Type") || "";
  return ct.includes("json") ? resp.json() : resp.text();
}

function seg(s) { return encodeURIComponent(s); }
function keyPath(k) { return k.split("/").map(encodeURIComponent).join("/"); }
function fmtTime(t) { if (!t || t.startsWith("0001")) return "-"; return new Date(t).toLocaleString(); }
function fmtSize(n) { if (n < 1024) return n + " B"; if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB"; return (n / (1 << 20)).toFixed(1) + " MiB"; }
function modeName(m) { return ["public", "protected", "private"][m] || String(m); }

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map(h => el("th", { scope: "col", text: h })))),
    el("tbody", {}, rows.map(r => el("tr", {}, r.map(c => el("td", {}, c))))));
}

function errorBox() { return el("p", { class: "error", role: "alert" }); }

function guard(box, fn) {
  return async (ev) => {
    if (ev && ev.preventDefault) ev.preventDefault();
    box.textContent = "";
    try { await fn(ev); } catch (e) { if (e.status !== 401) box.textContent = e.message; }
  };
}

// stream reads a followed text response into pre until it ends or abort.
async function stream(path, pre, ctl) {
  const resp = await api("GET", path, undefined, { raw: true, signal: ctl.signal });
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pre.append(dec.decode(value, { stream: true }));
    pre.scrollTop = pre.scrollHeight;
  }
}

function every(ms, fn) { fn(); state.timers.push(setInterval(fn, ms)); }
function follow() { const c = new AbortController(); state.aborts.push(c); return c; }

function clearView() {
  state.timers.forEach(clearInterval);
  state.aborts.forEach(c => c.abort());
  state.timers = [];
  state.aborts = [];
  const v = document.getElementById("view");
  v.replaceChildren();
  return v;
}

// ---- session -------------------------------------------------------------

function showLogin() {
  state.session = null;
  clearView();
  document.getElementById("view").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("login").hidden = false;
  document.getElementById("ak").focus();
}

function signedIn(info) {
  state.session = info;
  document.getElementById("login").hidden = true;
  document.getElementById("view").hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = (info.account.name || info.account.id) + (info.account.root ? " (root)" : "");
  if (!location.hash || location.hash === "#") location.hash = "#/buckets";
  route();
}

async function boot() {
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const box = document.getElementById("login-error");
    box.textContent = "";
    const form = new URLSearchParams(new FormData(ev.target));
    let resp, info;
    try {
      resp = await fetch("/console/login", { method: "POST", body: form, credentials: "same-origin" });
    } catch (e) {
      box.textContent = "cannot reach the console's server: " + e.message;
      return;
    }
    if (!resp.ok) {
      let msg = resp.statusText;
      try { msg = (await resp.json()).error || msg; } catch (e) { /* keep */ }
      box.textContent = msg;
      return;
    }
    try { info = await resp.json(); } catch (e) {
      box.textContent = "sign-in failed: the server's answer is not the console's: " + e.message;
      return;
    }
    document.getElementById("sk").value = "";
    signedIn(info);
  });
  document.getElementById("logout").addEventListener("click", async () => {
    // The cookie is cleared whatever the answer; a failure means the
    // session may still be alive elsewhere (a copied cookie, another
    // browser): say so on the sign-in screen.
    let warn = "";
    try {
      const resp = await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
      if (!resp.ok) {
        let msg = resp.statusText;
        try { msg = (await resp.json()).error || msg; } catch (e) { /* keep */ }
        warn = msg;
      }
    } catch (e) {
      warn = "cannot reach the console's server: " + e.message;
    }
    showLogin();
    if (warn) {
      document.getElementById("login-error").textContent =
        "signed out in this browser, but the server could not end the session everywhere (" + warn + "): sign in and out again";
    }
  });
  window.addEventListener("hashchange", route);
  const resp = await fetch("/console/session", { credentials: "same-origin" });
  if (resp.ok) signedIn(await resp.json()); else showLogin();
}

function route() {
  if (!state.session) return;
  let parts;
  try {
    parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  } catch (e) {
    // Not valid percent-encoding (a link cut short): say so, not a
    // page of a name that the address does not hold.
    for (const a of document.querySelectorAll("#nav a")) a.classList.remove("active");
    const v = clearView();
    v.append(el("h1", { text: "Not a console address" }),
      el("p", { class: "error", role: "alert", text: "The address " + location.hash + " is not valid: " + e.message }),
      el("p", {}, el("a", { href: "#/buckets" }, "Go to the buckets")));
    return;
  }
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === "#/" + parts[0] || (parts[0] === "bucket" && a.getAttribute("href") === "#/buckets") || (parts[0] === "ufop" && a.getAttribute("href") === "#/ufops"));
  }
  const v = clearView();
  const pages = { buckets: bucketsPage, bucket: bucketPage, ufops: ufopsPage, ufop: ufopPage, pfop: pfopPage, charts: chartsPage };
  (pages[parts[0]] || bucketsPage)(v, ...parts.slice(1));
  document.getElementById("main").focus({ preventScroll: true });
}

// ---- buckets and objects -------------------------------------------------

async function bucketsPage(v) {
  const box = errorBox();
  const list = el("div");
  const name = el("input", { id: "bucket-name", required: true, pattern: "[a-z0-9][a-z0-9-]{2,62}", "aria-label": "bucket name" });
  const priv = el("input", { type: "checkbox", id: "bucket-private" });
  v.append(el("h1", { text: "Buckets" }),
    el("form", { class: "inline", onsubmit: guard(box, async () => {
      await api("POST", "/v1/buckets", { name: name.value, private: priv.checked });
      toast("bucket " + name.value + " created");
      name.value = "";
      await load();
    }) }, el("label", {}, "Name", name), el("label", {}, "Private", priv), el("button", { type: "submit", id: "bucket-create" }, "Create bucket")),
    box, list);
  async function load() {
    const bs = await api("GET", "/v1/buckets");
    list.replaceChildren(table(["Bucket", "Private", "Domains", "Created"], bs.map(b => [
      el("a", { href: "#/bucket/" + seg(b.name), text: b.name }), b.private ? "yes" : "no", (b.domains || []).join(", ") || "-", fmtTime(b.created)])));
  }
  await guard(box, load)();
}

// routerBase is the bucket's address on the routers: its host under the
// domain suffix, with the scheme and port of the configured router URL
// (an https console must link to an https router: a browser blocks http
// frames in an https page).
function routerBase(bucket) {
  const s = state.session;
  let scheme = "http:", port = "";
  try { if (s.routerURL) { const u = new URL(s.routerURL); scheme = u.protocol; port = u.port; } } catch (e) { /* none */ }
  return scheme + "//" + bucket + "." + (s.domainSuffix || "localhost") + (port ? ":" + port : "") + "/";
}

async function bucketPage(v, bucket) {
  const box = errorBox();
  const list = el("div");
  const file = el("input", { type: "file", id: "upload-file", "aria-label": "file to upload" });
  const keyIn = el("input", { id: "upload-key", placeholder: "key (default: file name)", "aria-label": "object key" });
  const prog = el("progress", { id: "upload-progress", max: 100, value: 0 });
  const preview = el("div", { class: "preview", id: "preview" });
  const fopKey = el("input", { id: "fop-key", "aria-label": "object key", placeholder: "key" });
  const fop = el("input", { id: "fop", "aria-label": "processing", placeholder: "e.g. qhash/md5 or grepd/text", size: 30 });
  const urlOut = el("code", { id: "fop-url" });
  const openLink = el("a", { id: "fop-open", target: "_blank", rel: "noopener", hidden: true }, "Open in a new tab");
  const fopStatus = el("span", { id: "fop-status", class: "muted", role: "status", "data-state": "idle" });
  const frame = el("iframe", { class: "result", id: "fop-result", title: "processing result", sandbox: "" });
  v.append(el("h1", { text: "Bucket " + bucket }),
    el("p", { class: "muted" }, "Served at ", el("code", { text: routerBase(bucket) + "<key>" })),
    el("form", { class: "inline", onsubmit: guard(box, () => upload()) },
      el("label", {}, "File", file), el("label", {}, "Key", keyIn), el("button", { type: "submit", id: "upload" }, "Upload"), prog),
    box, list,
    el("h2", { text: "Try a processing URL" }),
    el("form", { class: "inline", onsubmit: (ev) => { ev.preventDefault(); runFop(); } },
      el("label", {}, "Key", fopKey), el("label", {}, "Fops", fop), el("button", { type: "submit", id: "fop-run" }, "Run")),
    el("p", { class: "row" }, urlOut, openLink, fopStatus), frame,
    el("h2", { text: "Preview" }), preview);

  function upload() {
    return new Promise((resolve, reject) => {
      const f = file.files[0];
      if (!f) { reject(new Error("choose a file first")); return; }
      const key = keyIn.value || f.name;
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", "/v1/objects/" + seg(bucket) + "/" + keyPath(key));
      xhr.setRequestHeader("X-CSRF-Token", state.session.csrf);
      xhr.setRequestHeader("Content-Type", f.type || "application/octet-stream");
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) prog.value = Math.round(100 * e.loaded / e.total); };
      xhr.onload = async () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          prog.value = 100;
          toast("uploaded " + key);
          fopKey.value = key;
          await load();
          resolve();
        } else {
          let msg = xhr.statusText;
          try { msg = JSON.parse(xhr.responseText).error; } catch (e) { /* keep */ }
          reject(new Error(msg));
        }
      };
      xhr.onerror = () => reject(new Error("upload failed"));
      xhr.send(f);
    });
  }
  // runFop loads the processing URL in the sandboxed iframe (the router
  // is another origin: the page cannot read the answer, only see it load).
  // The status line says when it is still waiting — the router holds a
  // call while an instance starts — and Run loads the URL again.
  let fopRun = 0, fopSlow = null;
  function setFopStatus(st, text) { fopStatus.dataset.state = st; fopStatus.textContent = text; }
  frame.addEventListener("load", () => {
    if (!frame.dataset.run) return; // the empty frame of a new page
    clearTimeout(fopSlow);
    setFopStatus("loaded", "answered (run " + frame.dataset.run + ")");
  });
  function runFop() {
    if (!fopKey.value) { setFopStatus("error", "type an object key first"); return; }
    const url = routerBase(bucket) + keyPath(fopKey.value) + (fop.value ? "?" + fop.value : "");
    urlOut.textContent = url;
    openLink.href = url;
    openLink.hidden = false;
    fopRun++;
    frame.dataset.run = String(fopRun);
    setFopStatus("loading", "waiting for the router…");
    clearTimeout(fopSlow);
    fopSlow = setTimeout(() => setFopStatus("loading", "still waiting: the router holds a call until an instance is ready; Run again to retry"), 15000);
    frame.src = url;
  }
  async function show(o) {
    const src = "/v1/objects/" + seg(bucket) + "/" + keyPath(o.key);
    if ((o.mimeType || "").startsWith("image/")) {
      preview.replaceChildren(el("img", { src, alt: o.key }));
    } else {
      const text = await api("GET", src);
      preview.replaceChildren(el("pre", { class: "log", text: typeof text === "string" ? text.slice(0, 20000) : JSON.stringify(text, null, 2) }));
    }
  }
  async function load() {
    const r = await api("GET", "/v1/list/" + seg(bucket));
    list.replaceChildren(table(["Key", "Size", "Type", "Modified", ""], (r.items || []).map(o => [
      o.key, fmtSize(o.fsize), o.mimeType, fmtTime(o.putTime),
      el("span", { class: "row" },
        el("button", { type: "button", class: "secondary", onclick: guard(box, () => show(o)) }, "Preview"),
        el("a", { href: "/v1/objects/" + seg(bucket) + "/" + keyPath(o.key), download: o.key.split("/").pop() }, "Download"),
        el("button", { type: "button", class: "secondary", onclick: () => { fopKey.value = o.key; fop.focus(); } }, "Process"),
        el("button", { type: "button", class: "danger", onclick: guard(box, async () => {
          if (!confirm("Delete " + o.key + "?")) return;
          await api("DELETE", "/v1/objects/" + seg(bucket) + "/" + keyPath(o.key));
          toast("deleted " + o.key);
          await load();
        }) }, "Delete"))])));
  }
  await guard(box, load)();
}

// ---- ufops -----------------------------------------------------------------

async function ufopsPage(v) {
  const box = errorBox();
  const list = el("div");
  const name = el("input", { id: "ufop-name", required: true, "aria-label": "ufop name", pattern: "[a-z0-9_-]{5,20}" });
  const mode = el("select", { id: "ufop-mode", "aria-label": "mode" }, el("option", { value: "private" }, "private"), el("option", { value: "protected" }, "protected"),
    state.session.account.root ? el("option", { value: "public" }, "public") : null);
  const desc = el("input", { id: "ufop-desc", "aria-label": "description" });
  v.append(el("h1", { text: "Ufops" }),
    el("form", { class: "inline", onsubmit: guard(box, async () => {
      await api("POST", "/v1/ufops", { name: name.value, mode: mode.value, desc: desc.value });
      toast("ufop " + name.value + " registered");
      name.value = ""; desc.value = "";
      await load();
    }) }, el("label", {}, "Name", name), el("label", {}, "Mode", mode), el("label", {}, "Description", desc), el("button", { type: "submit", id: "ufop-register" }, "Register")),
    box, list);
  async function load() {
    const us = await api("GET", "/v1/ufops");
    list.replaceChildren(table(["Ufop", "Mode", "Active version", "Instances", "Owner", "Description"], us.map(u => [
      el("a", { href: "#/ufop/" + seg(u.name), text: u.name }), modeName(u.mode), u.activeVersion || "-", String(u.instanceNum), u.owner, u.desc || ""])));
  }
  await guard(box, load)();
}

async function ufopPage(v, name) {
  const base = "/v1/ufops/" + seg(name);
  const box = errorBox();
  const info = el("p", { id: "ufop-info" });
  const builds = el("div");
  const pkg = el("input", { type: "file", id: "build-file", accept: ".tar.gz,.tgz,application/gzip", "aria-label": "program package (tar.gz)" });
  const buildLog = el("pre", { class: "log", id: "build-log", "aria-live": "polite" });
  const releases = el("div");
  const verSel = el("select", { id: "deploy-version", "aria-label": "version" });
  const region = el("select", { id: "deploy-region", "aria-label": "region" });
  const expect = el("input", { id: "deploy-expect", type: "number", min: 0, value: 1, "aria-label": "instances" });
  const max = el("input", { id: "deploy-max", type: "number", min: 0, value: 0, "aria-label": "maximum instances" });
  const deps = el("div", { id: "deployments" });
  const instLog = el("pre", { class: "log", id: "instance-log" });
  const logStream = el("select", { id: "log-stream", "aria-label": "output stream" }, el("option", { value: "stdout" }, "stdout"), el("option", { value: "stderr" }, "stderr"));
  const charts = el("div", { class: "grid", id: "ufop-charts" });
  v.append(el("h1", { text: "Ufop " + name }), info, box,
    el("h2", { text: "Builds" }),
    el("form", { class: "inline", onsubmit: guard(box, () => build()) },
      el("label", {}, "Program package (.tar.gz with ufop.yaml)", pkg), el("button", { type: "submit", id: "build" }, "Build")),
    builds, buildLog,
    el("h2", { text: "Releases" }), releases,
    el("h2", { text: "Deploy" }),
    el("form", { class: "inline", onsubmit: guard(box, async () => {
      await api("POST", base + "/deployments", { version: verSel.value, region: region.value, expect: Number(expect.value), max: Number(max.value) || 0, activate: true });
      toast("deploying " + verSel.value);
      await loadReleases();
    }) }, el("label", {}, "Version", verSel), el("label", {}, "Region", region), el("label", {}, "Instances", expect), el("label", {}, "Max", max),
      el("button", { type: "submit", id: "deploy" }, "Deploy")),
    el("h2", { text: "Deployments" }), deps,
    el("h2", { text: "Instance log" }), el("label", {}, "Stream", logStream), instLog,
    el("h2", { text: "Last hour" }), charts);

  async function loadInfo() {
    const u = await api("GET", base);
    info.textContent = "Mode " + modeName(u.mode) + " · active version " + (u.activeVersion || "none") +
      (u.previousVersion ? " (switching from " + u.previousVersion + ")" : "") + " · " + u.instanceNum + " instance(s) wanted · owner " + u.owner;
  }
  let buildsActive = false;
  async function loadBuilds() {
    const bs = await api("GET", base + "/builds");
    buildsActive = bs.some(b => b.status !== "SUCCESS" && b.status !== "FAILED");
    builds.replaceChildren(table(["Build", "Image", "Status", "Created", "Finished", "Error", ""], bs.map(b => [
      String(b.number), b.image, el("span", { class: "state-" + (b.status === "SUCCESS" ? "RUNNING" : b.status), text: b.status }), fmtTime(b.created), fmtTime(b.finished), b.error || "",
      el("span", { class: "row" },
        el("button", { type: "button", class: "secondary", onclick: guard(box, () => showLog(b.number)) }, "Log"),
        b.status === "SUCCESS" ? el("button", { type: "button", id: "use-build-" + b.number, onclick: guard(box, async () => {
          await api("POST", base + "/version", { build: b.number });
          toast("release v" + b.number + " is active");
          await Promise.all([loadInfo(), loadReleases()]);
        }) }, "Use as active version") : null)])));
  }
  async function showLog(n) {
    buildLog.textContent = "";
    const ctl = follow();
    await stream(base + "/builds/" + n + "/log?follow=1", buildLog, ctl);
  }
  async function build() {
    const f = pkg.files[0];
    if (!f) throw new Error("choose a .tar.gz program package");
    const b = await api("POST", base + "/builds", f, { type: "application/gzip" });
    toast("build #" + b.number + " started");
    await loadBuilds();
    await showLog(b.number);
    await loadBuilds();
  }
  async function loadReleases() {
    const r = await api("GET", base + "/releases");
    releases.replaceChildren(table(["Version", "Image", "Flavor", "Protocol", "Created"], (r.releases || []).map(x => [x.version, x.image, x.flavor, x.protocol || "dora", fmtTime(x.created)])));
    const cur = verSel.value;
    verSel.replaceChildren(...(r.releases || []).map(x => el("option", { value: x.version }, x.version)));
    if (cur) verSel.value = cur;
    await loadDeployments(r.deployments || []);
  }
  async function loadDeployments(list) {
    const live = list.filter(d => d.status !== "STOPPED" && d.status !== "REPLACED");
    const blocks = [];
    for (const d of live) {
      const [di, evs] = await Promise.all([api("GET", base + "/deployments/" + seg(d.id)), api("GET", base + "/deployments/" + seg(d.id) + "/events")]);
      blocks.push(el("h3", { text: "Region " + d.region + " · " + d.version + " · " + d.status + " · desired " + d.desired + " (floor " + d.expect + ", ceiling " + d.max + ")" }));
      blocks.push(table(["#", "State", "Healthy", "Address", "Restarts", "Started", "Message", ""], (di.instances || []).map(i => [
        String(i.index), el("span", { class: "state-" + i.state, "data-state": i.state, "data-healthy": String(!!i.healthy), text: i.state }), i.healthy ? "yes" : "no", i.addr || "-", String(i.restarts), fmtTime(i.started), i.message || "",
        el("button", { type: "button", class: "secondary", id: "follow-" + d.region + "-" + i.index, onclick: () => tailInstance(d.region, i.index) }, "Follow log")])));
      if (evs.length) blocks.push(table(["Time", "From", "To", "Reason"], evs.slice(-10).map(e => [fmtTime(e.time), String(e.from), String(e.to), e.reason])));
    }
    deps.replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted", text: "No live deployment." })]));
  }
  let logCtl = null;
  function tailInstance(reg, index) {
    if (logCtl) logCtl.abort();
    instLog.textContent = "";
    logCtl = follow();
    const ctl = logCtl;
    box.textContent = "";
    stream(base + "/instances/" + index + "/logs?follow=1&tail=100&type=" + logStream.value + "&region=" + seg(reg), instLog, ctl).catch((e) => {
      // Stopped on purpose (another follow, another page) or signed out:
      // nothing to say.
      if (ctl.signal.aborted || e.name === "AbortError" || e.status === 401) return;
      box.textContent = "instance log of #" + index + " in " + reg + ": " + e.message;
    });
  }
  async function loadRegions() {
    let rs;
    try { rs = await api("GET", "/v1/regions"); } catch (e) {
      if (e.status === 401) throw e;
      throw new Error("cannot load the regions: " + e.message);
    }
    region.replaceChildren(...rs.map(r => el("option", { value: r.name }, r.name)));
  }
  await guard(box, async () => { await Promise.all([loadRegions(), loadInfo(), loadBuilds(), loadReleases()]); })();
  // Every 2 s: deployments and instance states, the ufop's summary, and
  // the builds while one is still going (a build log stream that broke
  // off must not leave its status stale).
  state.timers.push(setInterval(() => {
    loadReleases().catch(() => {});
    loadInfo().catch(() => {});
    if (buildsActive) loadBuilds().catch(() => {});
  }, 2000));
  drawCharts(charts, name);
}

// ---- pfop ------------------------------------------------------------------

function pfopPage(v, given) {
  const box = errorBox();
  const bucket = el("input", { id: "pfop-bucket", required: true, "aria-label": "bucket" });
  const key = el("input", { id: "pfop-key", required: true, "aria-label": "object key" });
  const fops = el("input", { id: "pfop-fops", required: true, size: 40, "aria-label": "fops", placeholder: "e.g. grepd/dora|saveas/<entry>;qhash/md5" });
  const pipeline = el("input", { id: "pfop-pipeline", "aria-label": "pipeline", placeholder: "default" });
  const force = el("input", { type: "checkbox", id: "pfop-force" });
  const id = el("input", { id: "pfop-id", "aria-label": "persistent id", size: 40 });
  const out = el("div", { id: "pfop-job", "aria-live": "polite" });
  v.append(el("h1", { text: "Pfop jobs" }),
    el("h2", { text: "Submit a job" }),
    el("form", { class: "inline", onsubmit: guard(box, async () => {
      forget();
      const r = await api("POST", "/v1/pfop", { bucket: bucket.value, key: key.value, fops: fops.value, pipeline: pipeline.value, force: force.checked });
      toast("job " + r.persistentId + " submitted");
      id.value = r.persistentId;
      watch(r.persistentId);
    }) }, el("label", {}, "Bucket", bucket), el("label", {}, "Key", key), el("label", {}, "Fops", fops),
      el("label", {}, "Pipeline", pipeline), el("label", {}, "Force", force), el("button", { type: "submit", id: "pfop-submit" }, "Submit")),
    el("h2", { text: "Follow a job" }),
    el("p", { class: "muted", id: "pfop-follow-help" }, "Jobs submitted with ", el("code", { text: "qdoractl pfop" }), " or a Qiniu SDK too: look one up by its persistentId."),
    el("form", { class: "inline", onsubmit: guard(box, async () => { watch(id.value); }) },
      el("label", {}, "persistentId", id), el("button", { type: "submit", id: "pfop-lookup" }, "Follow")), box, out);

  // forget stops following the job shown and clears it, so that an error
  // (a failed submit or lookup) is not shown above another job's table;
  // a poll answered after its job was forgotten is dropped (current).
  let timer = null, current = null;
  function forget() {
    if (timer) { clearInterval(timer); state.timers = state.timers.filter(t => t !== timer); timer = null; }
    current = null;
    out.replaceChildren();
  }
  // watch shows the job and polls it every second until it ends (codes
  // 0 success, 3 failed, 4 callback failed are final).
  function watch(jobID) {
    forget();
    const mine = current = {};
    const show = async () => {
      let st;
      try { st = await api("GET", "/status/get/prefop?id=" + encodeURIComponent(jobID)); } catch (e) {
        if (current !== mine) return;
        if (e.status !== 401) box.textContent = e.message;
        forget();
        return;
      }
      if (current !== mine) return;
      box.textContent = "";
      out.replaceChildren(el("p", {}, "Job ", el("code", { id: "pfop-job-id", text: st.id }), ": ",
        el("span", { id: "pfop-job-status", class: "state-" + (st.code === 0 ? "RUNNING" : st.code === 3 || st.code === 4 ? "FAILED" : "PENDING"), "data-code": String(st.code), text: st.desc + " (code " + st.code + ")" }),
        " · " + st.inputBucket + "/" + st.inputKey + " · pipeline " + st.pipeline + " · created " + st.creationDate),
        table(["Command", "Code", "Description", "Error", "Saved key"], (st.items || []).map(i => [i.cmd, String(i.code), i.desc, i.error || "", i.key || ""])));
      if (st.code === 0 || st.code === 3 || st.code === 4) { clearInterval(timer); }
    };
    timer = setInterval(show, 1000);
    state.timers.push(timer);
    show();
  }
  if (given) { id.value = given; watch(given); }
}

// ---- charts ----------------------------------------------------------------

function sparkline(points, field) {
  const w = 300, h = 90, pad = 4;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("role", "img");
  const vals = points.map(p => p[field] || 0);
  const maxV = Math.max(1e-9, ...vals);
  const t0 = points.length ? new Date(points[0].t).getTime() : 0;
  const t1 = points.length ? new Date(points[points.length - 1].t).getTime() : 1;
  const span = Math.max(1, t1 - t0);
  const d = points.map((p, i) => {
    const x = pad + (w - 2 * pad) * (new Date(p.t).getTime() - t0) / span;
    const y = h - pad - (h - 2 * pad) * (vals[i] / maxV);
    return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
  }).join(" ");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", d || "M0 " + (h - pad));
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "#1f5fd6");
  path.setAttribute("stroke-width", "2");
  svg.append(path);
  return svg;
}

const chartDefs = [["rps", "Requests/s", 2], ["latencyMs", "Step latency (ms)", 1], ["eps", "Errors/s", 2], ["ready", "Ready instances", 0]];

function drawCharts(box, ufop) {
  every(Math.max(1000, (state.session.statsEverySeconds || 10) * 1000), async () => {
    let r;
    try { r = await api("GET", "/v1/stats" + (ufop ? "?ufop=" + seg(ufop) : "")); } catch (e) { return; }
    const names = Object.keys(r.ufops).sort();
    if (!names.length) { box.replaceChildren(el("p", { class: "muted", text: "No figures yet: charts fill as ufops are called." })); return; }
    const cards = [];
    for (const n of names) {
      const ps = r.ufops[n];
      const last = ps[ps.length - 1] || {};
      for (const [field, title, digits] of chartDefs) {
        const svg = sparkline(ps, field);
        svg.setAttribute("aria-label", n + " " + title);
        cards.push(el("div", { class: "chart", "data-ufop": n, "data-field": field },
          el("h3", { text: n + " · " + title }), svg,
          el("div", { class: "now", "data-now": field, text: "now " + (last[field] || 0).toFixed(digits) + " · max " + Math.max(0, ...ps.map(p => p[field] || 0)).toFixed(digits) + " · " + ps.length + " samples" })));
      }
    }
    box.replaceChildren(...cards);
  });
}

function chartsPage(v) {
  const box = el("div", { class: "grid", id: "charts" });
  v.append(el("h1", { text: "Last hour per ufop" }), box);
  drawCharts(box, "");
}

boot();
