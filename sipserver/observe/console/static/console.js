// The operator's console: polls /console/api/state and draws it. Everything shown goes in through
// textContent (never innerHTML), so a login or an address a peer chose cannot become markup.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
let state = null;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function time(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const d = new Date(seconds * 1000);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function ago(seconds) {
  if (!state || seconds === null || seconds === undefined) return "";
  const s = Math.max(0, Math.round(state.taken - seconds));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = document.createElement("td");
      td.appendChild(cell);
      tr.appendChild(td);
    } else {
      tr.appendChild(el("td", cell));
    }
  }
  return tr;
}

function fill(id, rows) {
  const body = document.getElementById(id);
  body.replaceChildren(...rows);
}

function matches(filter, ...values) {
  if (!filter) return true;
  return values.some((v) => String(v || "").toLowerCase().includes(filter));
}

function outcomeCell(outcome) {
  return el("span", outcome || "–", outcome === "ok" ? "ok" : outcome ? "bad" : "");
}

function drawTerminals(filter) {
  const rows = state.terminals
    .filter((t) => matches(filter, t.login, t.peer))
    .map((t) => {
      const tr = row([
        t.login || el("span", "(not logged in)", "never"), t.institution || "–", t.listener, t.peer,
        time(t.since) + " (" + ago(t.since) + ")",
        t.last_request ? t.last_request + " · " + ago(t.last_at) : "–",
        outcomeCell(t.outcome), t.messages ? t.latency_ms.toFixed(1) + " ms" : "–", t.messages, t.refusals,
      ]);
      tr.dataset.login = t.login;
      tr.dataset.peer = t.peer;
      return tr;
    });
  fill("terminal-rows", rows);
  document.getElementById("terminal-count").textContent = "(" + state.terminals.length + ")";
  document.getElementById("terminal-empty").classList.toggle("hidden", rows.length > 0);
}

function drawAccounts(filter) {
  const rows = state.accounts
    .filter((a) => matches(filter, a.login, ...a.allow_from, ...(a.not_allowed || []).map((n) => n.peer)))
    .map((a) => {
      const expires = el("span", a.expires || "never");
      if (a.expiry_warning) {
        expires.className = "warn";
        expires.textContent = a.expires + (a.days_left < 0 ? " (expired)" : " (in " + a.days_left + " days)");
      }
      const seen = a.last_seen
        ? el("span", time(a.last_seen.at) + " from " + a.last_seen.peer + " on " + a.last_seen.listener)
        : el("span", "never seen since start", "never");
      const refusals = document.createElement("div");
      const reasons = Object.entries(a.refusals);
      if (!reasons.length) refusals.appendChild(el("span", "none", "never"));
      for (const [reason, count] of reasons) refusals.appendChild(el("div", reason + ": " + count));
      for (const n of a.not_allowed) {
        const fix = el("div", null, "fix");
        fix.appendChild(el("div", "address_not_allowed: " + n.peer + " on " + n.listener + ", " + n.count +
          (n.count === 1 ? " time" : " times") + " since " + time(n.since) + ". Add it to this account:"));
        fix.appendChild(el("code", n.fix, "fix-line"));
        refusals.appendChild(fix);
      }
      const tr = row([a.login + (a.enabled ? "" : " (disabled)"), a.institution,
        a.allow_from.length ? a.allow_from.join(", ") : "any address", expires, seen, refusals]);
      tr.dataset.login = a.login;
      return tr;
    });
  fill("account-rows", rows);
}

function drawRefusals(filter) {
  const rows = state.refusals
    .filter((r) => matches(filter, r.login, r.peer))
    .map((r) => row([time(r.at), r.peer, r.login || "–", r.listener, el("span", r.reason, "bad")]));
  fill("refusal-rows", rows);
  document.getElementById("refusal-count").textContent = "(last " + state.refusals.length + ")";
  document.getElementById("refusal-empty").classList.toggle("hidden", rows.length > 0);
}

function rect(svg, x, y, height, colour) {
  const bar = document.createElementNS(SVG, "rect");
  bar.setAttribute("x", x.toFixed(1));
  bar.setAttribute("y", y.toFixed(1));
  bar.setAttribute("width", "3");
  bar.setAttribute("height", Math.max(height, 1.5).toFixed(1));
  bar.setAttribute("fill", colour);
  svg.appendChild(bar);
}

// One column per minute of the last 24 hours (the view box is 1440 wide). ``stacked``: the series
// are bars on top of each other (counts); otherwise each value is a mark at its height (latency).
function chart(id, activity, series, stacked) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const end = Math.floor(state.taken / 60) * 60;
  const start = end - 1439 * 60;
  let top = 1;
  for (const a of activity) {
    const values = series.map((s) => s.value(a) || 0);
    top = Math.max(top, stacked ? values.reduce((x, y) => x + y, 0) : Math.max(...values));
  }
  const scale = 150 / top;
  for (const a of activity) {
    if (a.minute < start) continue;
    const x = Math.min((a.minute - start) / 60, 1437);
    let base = 158;
    for (const s of series) {
      const v = s.value(a);
      if (v === null || v === undefined || v === 0) continue;
      if (stacked) {
        rect(svg, x, base - v * scale, v * scale, s.colour);
        base -= v * scale;
      } else {
        rect(svg, x, 158 - v * scale - 1, 2, s.colour);
      }
    }
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "14");
  label.setAttribute("font-size", "12");
  label.textContent = "max " + (Math.round(top * 10) / 10) + " · 24 h ago … now";
  svg.appendChild(label);
}

function drawActivity() {
  const activity = state.activity;
  const sum = (a, outcome) => Object.entries(a.messages)
    .filter(([k]) => (outcome === null ? !/\|(ok|refused)$/.test(k) : k.endsWith("|" + outcome)))
    .reduce((n, [, v]) => n + v, 0);
  chart("chart-messages", activity, [
    { colour: "#17803d", value: (a) => sum(a, "ok") },
    { colour: "#b42318", value: (a) => sum(a, "refused") },
    { colour: "#a15c00", value: (a) => sum(a, null) },
  ], true);
  chart("chart-latency", activity, [
    { colour: "#1e5bb8", value: (a) => a.p50 },
    { colour: "#a15c00", value: (a) => a.p95 },
    { colour: "#b42318", value: (a) => a.p99 },
  ], false);
  const totals = new Map();
  const hourAgo = state.taken - 3600;
  for (const a of activity) {
    for (const [key, count] of Object.entries(a.messages)) {
      const t = totals.get(key) || { hour: 0, day: 0 };
      t.day += count;
      if (a.minute >= hourAgo - 60) t.hour += count;
      totals.set(key, t);
    }
  }
  const rows = [...totals.entries()].sort().map(([key, t]) => {
    const [message, outcome] = key.split("|");
    return row([message, outcomeCell(outcome), t.hour, t.day]);
  });
  fill("activity-rows", rows);
}

function drawBackends() {
  fill("backend-rows", Object.entries(state.backends).map(([name, b]) =>
    row([name, el("span", b.up ? "up" : "down", b.up ? "ok" : "bad"),
      b.probe_ms === null || b.probe_ms === undefined ? "–" : b.probe_ms.toFixed(1) + " ms", b.errors, b.timeouts,
      upstreamText(b.upstream)])));
}

function upstreamText(u) {
  if (!u) return "–";
  const latency = u.latency_ms === null || u.latency_ms === undefined ? "" : ", " + u.latency_ms.toFixed(1) + " ms mean";
  const state = u.logged_in + "/" + u.pool_size + " logged in, queue " + u.queue + ", " + u.requests + " requests, " +
    u.errors + " errors" + latency;
  return u.problem ? state + " (" + u.problem + ")" : state;
}

function draw() {
  if (!state) return;
  const filter = document.getElementById("filter").value.trim().toLowerCase();
  drawTerminals(filter);
  drawAccounts(filter);
  drawRefusals(filter);
  drawActivity();
  drawBackends();
  document.getElementById("updated").textContent = "updated " + time(state.taken);
  document.getElementById("workers").textContent = state.workers.length + " process(es)";
  document.getElementById("test-listener").textContent = state.test_listener || "none (no raw listener)";
}

async function poll() {
  try {
    const response = await fetch("/console/api/state", { credentials: "same-origin", cache: "no-store" });
    if (response.ok) {
      state = await response.json();
      draw();
    } else {
      document.getElementById("updated").textContent = "update failed: HTTP " + response.status;
    }
  } catch (error) {
    document.getElementById("updated").textContent = "server not answering";
  }
  setTimeout(poll, POLL_MS);
}

async function runTest(event) {
  event.preventDefault();
  const button = document.getElementById("test-run");
  const password = document.getElementById("test-password");
  const line = document.getElementById("test-line");
  const frames = document.getElementById("test-frames");
  button.disabled = true;
  line.textContent = "running…";
  line.className = "line";
  frames.replaceChildren();
  const body = JSON.stringify({
    login: document.getElementById("test-login").value,
    password: password.value,
    patron: document.getElementById("test-patron").value,
  });
  password.value = "";  // typed for this test only
  try {
    const token = document.querySelector('meta[name="csrf-token"]').content;
    const response = await fetch("/console/api/test", {
      method: "POST", credentials: "same-origin", cache: "no-store", body,
      headers: { "content-type": "application/json", "x-csrf-token": token },
    });
    const outcome = await response.json();
    if (!response.ok) {
      line.textContent = outcome.error || "HTTP " + response.status;
      line.className = "line bad";
      return;
    }
    line.textContent = outcome.line;
    line.className = "line " + (outcome.ok ? "ok" : "bad");
    for (const frame of outcome.frames) {
      const item = el("li", null, frame.direction);
      item.appendChild(el("div", (frame.direction === "sent" ? "sent " : "received ") + frame.bytes));
      item.appendChild(el("pre", frame.decoded.join("\n")));
      frames.appendChild(item);
    }
  } catch (error) {
    line.textContent = "the test did not answer";
    line.className = "line bad";
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("filter").addEventListener("input", draw);
  document.getElementById("test-form").addEventListener("submit", runTest);
  poll();
});
