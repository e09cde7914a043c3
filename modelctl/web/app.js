// modelctl dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
// It renders GET /api/events (Server-Sent Events, read with fetch so that the token travels in the
// Authorization header, never in a URL) and acts through the API (POST /api/switch, /api/stop).
"use strict";

const TOKEN_KEY = "modelctl-token";
const RETRY_MS = 2000;
const SWAPS_SHOWN = 10;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  profiles: [],
  invalid: [],
  status: null,
  proxy: null,
  swaps: [],
  op: null, // the operation under way: {op, operation, target, phase, detail, elapsed, at, phases: []}
  busy: false,
  logProfile: null,
  stream: null,
};
// Measurements for people and tests: a click, and when its operation's first event arrived.
window.modelctl = { clicks: [], events: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function gib(value) {
  return value === null || value === undefined ? "-" : `${Number(value).toFixed(2)} GiB`;
}

function seconds(value) {
  return `${Number(value || 0).toFixed(1)}s`;
}

function newOpId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- the API ---------------------------------------------------------------------------------

class Unauthorized extends Error {}

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(method, path) {
  const response = await fetch(path, { method, headers: headers(), cache: "no-store" });
  if (response.status === 401) throw new Unauthorized("the API token was refused");
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (!response.ok) {
    const error = (body && body.error) || { message: `HTTP ${response.status}` };
    const failure = new Error(error.message);
    failure.hint = error.hint;
    throw failure;
  }
  return body;
}

function showBanner(text) {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = !text;
}

function failed(error) {
  if (error instanceof Unauthorized) {
    askToken(state.token ? "The token was refused: give it again." : "");
    return;
  }
  showBanner(error.hint ? `${error.message}\n-> ${error.hint}` : error.message);
}

// --- the token -------------------------------------------------------------------------------

function askToken(message) {
  stopStream();
  $("main").hidden = true;
  $("login").hidden = false;
  $("forget-token").hidden = true;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  begin();
});

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  askToken("");
});

// --- the event stream ------------------------------------------------------------------------

function setConn(text, kind) {
  const conn = $("conn");
  conn.textContent = text;
  conn.className = `pill ${kind || ""}`;
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

async function follow() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  try {
    const response = await fetch("/api/events", { headers: headers(), signal: controller.signal, cache: "no-store" });
    if (response.status === 401) throw new Unauthorized("the API token was refused");
    if (!response.ok || !response.body) throw new Error(`events: HTTP ${response.status}`);
    setConn("live", "live");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(frame);
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof Unauthorized) {
      askToken(state.token ? "The token was refused: give it again." : "");
      return;
    }
  }
  if (controller.signal.aborted) return;
  setConn("reconnecting", "down");
  setTimeout(() => {
    if (state.stream === controller) follow();
  }, RETRY_MS);
}

function dispatch(frame) {
  let kind = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("event:")) kind = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  let payload;
  try {
    payload = JSON.parse(data.join("\n"));
  } catch (e) {
    return;
  }
  window.modelctl.events += 1;
  const handler = handlers[kind];
  if (handler) handler(payload);
}

const handlers = {
  state(data) {
    state.status = data;
    state.proxy = data.proxy || null;
    state.swaps = data.swaps || [];
    if (data.switch && (!state.op || state.op.op !== data.switch.op)) {
      const since = Date.parse(data.switch.since);
      state.op = {
        op: data.switch.op,
        operation: data.switch.operation,
        target: data.switch.target,
        phase: data.switch.phase,
        detail: data.switch.detail,
        elapsed: Number.isNaN(since) ? 0 : (Date.now() - since) / 1000,
        at: performance.now(),
        phases: [data.switch.phase],
        line: "",
        result: null,
      };
    } else if (!data.switch && state.op && !state.op.result) {
      state.op = null; // ended while this page was away
    }
    render();
  },
  switch(data) {
    noteFirstEvent(data.op);
    if (!state.op || state.op.op !== data.op) {
      state.op = { op: data.op, operation: data.operation, target: data.target, phases: [], line: "", result: null };
    }
    const op = state.op;
    Object.assign(op, { phase: data.phase, detail: data.detail, elapsed: data.elapsed, at: performance.now() });
    if (op.phases[op.phases.length - 1] !== data.phase) op.phases.push(data.phase);
    renderProgress();
    renderButtons();
  },
  log(data) {
    noteFirstEvent(data.op);
    if (state.op && state.op.op === data.op) {
      state.op.line = data.line;
      renderProgress();
    }
  },
  swap(data) {
    noteFirstEvent(data.op);
    state.swaps = [data, ...state.swaps.filter((s) => s.op !== data.op)].slice(0, 20);
    if (state.op && state.op.op === data.op) {
      state.op.result = data;
      state.op.elapsed = data.elapsed;
      state.op.at = null;
    }
    render();
    loadProfiles().catch(failed);
    setTimeout(() => {
      if (state.op && state.op.op === data.op && state.op.result) {
        state.op = null;
        renderProgress();
        renderButtons();
      }
    }, data.ok ? 4000 : 15000);
  },
  proxy(data) {
    state.proxy = data;
    renderProxy();
  },
};

function noteFirstEvent(op) {
  const click = window.modelctl.clicks.find((c) => c.op === op);
  if (click && click.firstEventAt === undefined) click.firstEventAt = performance.now();
}

// --- actions ---------------------------------------------------------------------------------

async function act(kind, target) {
  const op = newOpId();
  window.modelctl.clicks.push({ op, kind, target, clickAt: performance.now() });
  state.busy = true;
  showBanner("");
  renderButtons();
  const path = kind === "stop" ? `/api/stop?op=${op}` : `/api/switch/${encodeURIComponent(target)}?op=${op}`;
  try {
    await api("POST", path);
  } catch (error) {
    failed(error);
  } finally {
    state.busy = false;
    renderButtons();
  }
}

$("stop").addEventListener("click", () => act("stop", null));

async function showLog(name) {
  state.logProfile = name;
  $("log-panel").hidden = false;
  $("log-title").textContent = `Log: ${name}`;
  $("log-text").textContent = "reading...";
  try {
    const data = await api("GET", `/api/logs/${encodeURIComponent(name)}?tail=200`);
    $("log-title").textContent = data.container ? `Log: ${data.container} (${data.state})` : `Log: ${name}`;
    $("log-text").textContent = data.container ? data.log || "(empty)" : "no container for this profile (never started, or removed)";
    const pre = $("log-text");
    pre.scrollTop = pre.scrollHeight;
  } catch (error) {
    if (error instanceof Unauthorized) return failed(error);
    $("log-text").textContent = error.message;
  }
}

$("log-close").addEventListener("click", () => {
  state.logProfile = null;
  $("log-panel").hidden = true;
});
$("log-refresh").addEventListener("click", () => state.logProfile && showLog(state.logProfile));

// --- rendering -------------------------------------------------------------------------------

function render() {
  renderActive();
  renderProfiles();
  renderProgress();
  renderGpu();
  renderProxy();
  renderSwaps();
  renderButtons();
}

function renderActive() {
  const status = state.status;
  const active = status && status.active;
  $("active-name").textContent = active ? active.profile : "none";
  $("active-state").textContent = active
    ? `${active.ready ? "ready" : "not answering"} - ${active.container}`
    : status && status.error
      ? status.error.message
      : "no model runs";
  $("active-state").className = active ? (active.ready ? "ok" : "warn") : "muted";
  $("active-url").textContent = active ? active.url : "";
  if (status && status.last_error && !active) {
    $("active-state").textContent += ` (last error: ${status.last_error.message})`;
  }
}

function profileCard(plan) {
  const status = state.status;
  const active = status && status.active && status.active.profile === plan.profile;
  const measured = status && status.measured && status.measured[plan.profile];
  const fields = [
    ["model", plan.model],
    ["tier", plan.tier ? `${plan.tier} GiB GPU` : "-"],
    ["vram", gib(plan.vram_gib)],
    ["utilization", Number(plan.gpu_memory_utilization).toFixed(2)],
    ["fits", plan.fits ? "yes" : "no"],
    ["measured", measured ? `${gib(measured.measured_gib)}${measured.exceeds ? " (more than vram_gib)" : ""}` : "-"],
    ["url", plan.url],
  ];
  const dl = el("dl");
  for (const [key, value] of fields) {
    dl.append(el("dt", {}, key), el("dd", { class: key === "fits" && !plan.fits ? "error" : "" }, value));
  }
  return el(
    "div",
    { class: `profile${active ? " active" : ""}`, "data-profile": plan.profile },
    el(
      "div",
      { class: "name" },
      plan.profile,
      active ? el("span", { class: status.active.ready ? "ok" : "warn" }, status.active.ready ? " - active" : " - starting") : null,
    ),
    dl,
    el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "switch", "data-profile": plan.profile, onclick: () => act("switch", plan.profile) }, "Switch"),
      el("button", { type: "button", class: "ghost", onclick: () => showLog(plan.profile) }, "Log"),
    ),
  );
}

function renderProfiles() {
  const box = $("profiles");
  // Drawn again only when something shown changed: a button under the pointer stays the same node.
  const status = state.status || {};
  const key = JSON.stringify([state.profiles, state.invalid, status.active, status.measured]);
  if (key === box.dataset.key) return;
  box.dataset.key = key;
  box.replaceChildren(
    ...state.profiles.map(profileCard),
    ...state.invalid.map((bad) =>
      el(
        "div",
        { class: "profile invalid", "data-invalid": bad.file },
        el("div", { class: "name" }, bad.file, el("span", { class: "error" }, " - invalid")),
        el("div", { class: "error mono" }, bad.error),
        bad.hint ? el("div", { class: "muted" }, bad.hint) : null,
      ),
    ),
  );
  if (!state.profiles.length && !state.invalid.length) box.append(el("p", { class: "muted" }, "no profiles"));
}

function renderButtons() {
  const running = Boolean(state.op && !state.op.result);
  const active = state.status && state.status.active;
  for (const button of document.querySelectorAll("button.switch")) {
    const name = button.getAttribute("data-profile");
    const plan = state.profiles.find((p) => p.profile === name);
    button.disabled = state.busy || running || !plan || !plan.fits || Boolean(active && active.profile === name && active.ready);
  }
  const up = state.status && (state.status.containers || []).some((c) => c.state === "running");
  $("stop").disabled = state.busy || running || !up;
}

function renderProgress() {
  const op = state.op;
  $("progress").hidden = !op;
  if (!op) return;
  const what = op.operation === "stop" ? "Stop" : op.operation === "reconcile" ? "Reconcile" : `Switch to ${op.target}`;
  $("progress-title").textContent = what;
  $("progress-phase").textContent = op.result ? (op.result.ok ? "done" : `failed in ${op.result.phase}`) : op.phase || "-";
  $("progress-phase").className = `phase ${op.result ? (op.result.ok ? "ok" : "error") : ""}`;
  $("progress-phases").replaceChildren(
    ...op.phases.map((phase, i) => el("li", { class: !op.result && i === op.phases.length - 1 ? "now" : "" }, phase)),
  );
  $("progress-detail").textContent = op.detail || "";
  $("progress-log").textContent = op.line || "";
  const result = $("progress-result");
  result.replaceChildren();
  if (op.result && op.result.ok) {
    result.append(el("div", { class: "ok" }, phaseTimes(op.result.phases)));
  } else if (op.result) {
    const error = op.result.error || {};
    result.append(el("div", { class: "error" }, error.message || "failed"));
    if (error.hint) result.append(el("div", { class: "warn" }, `-> ${error.hint}`));
    if (error.log_tail) result.append(el("pre", { class: "log" }, error.log_tail));
  }
  tick();
}

function tick() {
  const op = state.op;
  if (!op) return;
  const elapsed = op.at === null || op.at === undefined ? op.elapsed : op.elapsed + (performance.now() - op.at) / 1000;
  $("progress-elapsed").textContent = seconds(elapsed);
}
setInterval(tick, 200);

function phaseTimes(phases) {
  return Object.entries(phases || {})
    .map(([name, s]) => `${name} ${Number(s).toFixed(2)}s`)
    .join(", ");
}

function renderGpu() {
  const box = $("gpu");
  const gpu = state.status && state.status.gpu;
  if (!gpu) {
    box.replaceChildren(el("p", { class: "muted" }, "no reading"));
    return;
  }
  const parts = [];
  if (gpu.mode !== "nvml") {
    parts.push(el("p", { class: "warn" }, `no GPU reading (${gpu.reason || "none"}): planning for ${gib(gpu.total_gib)}`));
    if (gpu.estimated_used_gib !== null && gpu.estimated_used_gib !== undefined) {
      const used = gpu.estimated_used_gib;
      parts.push(el("div", {}, `used (estimated from vram_gib): ${gib(used)} of ${gib(gpu.total_gib)}`), bar(used / gpu.total_gib));
    }
  }
  for (const device of gpu.devices || []) {
    parts.push(
      el("div", {}, `GPU ${device.index}: ${device.name}`),
      el("div", { class: "muted" }, `${gib(device.used_gib)} used, ${gib(device.free_gib)} free of ${gib(device.total_gib)}`),
      bar(device.used_gib / device.total_gib),
    );
  }
  if (gpu.processes === null && gpu.mode === "nvml") {
    parts.push(el("p", { class: "muted" }, "NVML cannot list the processes here: memory is reported, its holders are not"));
  } else if (gpu.processes && gpu.processes.length) {
    parts.push(
      el(
        "ul",
        { class: "plain" },
        ...gpu.processes.map((p) =>
          el("li", {}, `${p.used_gib === null ? "?" : gib(p.used_gib)} - ${p.container || "host"} (pid ${p.pid} ${p.name})`),
        ),
      ),
    );
  } else if (gpu.mode === "nvml") {
    parts.push(el("p", { class: "muted" }, "no process holds GPU memory"));
  }
  box.replaceChildren(...parts);
}

function bar(fraction) {
  const inner = el("span");
  inner.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  return el("div", { class: "bar" }, inner);
}

function renderProxy() {
  const box = $("proxy");
  const proxy = state.proxy;
  if (!proxy) {
    box.replaceChildren(el("p", { class: "muted" }, "-"));
    return;
  }
  const rows = Object.entries(proxy.models || {});
  box.replaceChildren(
    el("div", {}, `${proxy.queued} waiting`, proxy.loading ? ` - loading ${proxy.loading}` : "", proxy.draining ? " - draining" : ""),
    el("div", { class: "muted" }, `routes to: ${proxy.active || "nothing yet"}`),
    rows.length
      ? el("ul", { class: "plain" }, ...rows.map(([name, m]) => el("li", {}, `${name}: ${m.queued} queued, ${m.in_flight} in flight`)))
      : el("p", { class: "muted" }, "no request in flight"),
  );
}

function renderSwaps() {
  const body = $("swaps").querySelector("tbody");
  const rows = state.swaps.slice(0, SWAPS_SHOWN).map((s) => {
    const what = `${s.operation}${s.target ? ` ${s.target}` : ""}${s.origin && s.origin !== "api" ? ` (${s.origin})` : ""}`;
    const outcome = s.ok
      ? s.result && s.result.outcome
        ? s.result.outcome
        : "done"
      : `failed in ${s.phase}: ${(s.error && s.error.message) || ""}`;
    const when = s.at ? new Date(s.at).toLocaleTimeString() : "";
    return el(
      "tr",
      {},
      el("td", {}, when),
      el("td", {}, what),
      el("td", { class: s.ok ? "ok" : "error" }, outcome),
      el("td", {}, seconds(s.elapsed)),
      el("td", { class: "mono" }, phaseTimes(s.phases)),
    );
  });
  body.replaceChildren(...rows);
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "none yet")));
}

// --- start -----------------------------------------------------------------------------------

async function loadProfiles() {
  const [profiles, invalid] = await Promise.all([api("GET", "/api/profiles"), api("GET", "/api/profiles/invalid")]);
  state.profiles = profiles;
  state.invalid = invalid;
  renderProfiles();
  renderButtons();
}

async function begin() {
  $("login").hidden = true;
  try {
    await loadProfiles();
  } catch (error) {
    if (error instanceof Unauthorized) {
      askToken(state.token ? "The token was refused: give it again." : "");
      return;
    }
    showBanner(error.message);
  }
  $("main").hidden = false;
  $("forget-token").hidden = !state.token;
  render();
  follow();
}

// /health needs no token and says whether the API does: ask for it before any request is refused.
fetch("/health", { cache: "no-store" })
  .then((r) => r.json())
  .then((h) => {
    $("version").textContent = `modelctl ${h.version}`;
    if (h.token_required && !state.token) askToken("");
    else begin();
  })
  .catch(() => begin());
