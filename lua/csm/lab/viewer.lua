--- The HTML viewer of a lab run: one self-contained page (inline script
-- and style, no network) with a lane per node (its states, attempts and
-- crashes), the message diagram under it (an arrow from each send to its
-- delivery, coloured by kind, drops marked), faults shaded, zoom and pan
-- over virtual time, filters by node and kind, a click on a message to see
-- its body and what happened before it, and a jump to a violation with
-- the votes of both quorums. `csm experiment --html FILE`, `csm replay
-- --html FILE`, or `harness.run{html = path}`.
--
-- A recorder takes the events the trace takes (and each message's body);
-- the page holds them as columns of numbers and string tables, drawn on a
-- canvas, so a run of 300,000 messages stays usable.
-- @module csm.lab.viewer

-- (the page's script and style are long lines of their own)
-- luacheck: ignore 631

local csm = require "csm"
local trace = require "csm.lab.trace"

local viewer = {}

local Recorder = {}
Recorder.__index = Recorder

-- A table of strings: index (0-based) of s, added when new.
local function interner()
  local list, index = {}, {}
  return list, function(s)
    if s == nil then return -1 end
    s = tostring(s)
    local i = index[s]
    if i == nil then
      list[#list + 1] = s
      i = #list - 1
      index[s] = i
    end
    return i
  end
end

--- A recorder on world (its clock stamps each event) for a run of the
-- named nodes.
function viewer.recorder(world, names, header)
  local self = setmetatable({ world = world, header = header, msgs = {}, by_id = {}, transitions = {},
                              notes = {}, events = {}, finals = {} }, Recorder)
  self.node_list, self.node = interner()
  for _, name in ipairs(names) do self.node(name) end
  self.kind_list, self.kind = interner()
  self.state_list, self.state = interner()
  self.why_list, self.why = interner()
  self.body_list, self.body = interner()
  return self
end

-- Plain data of a message body: csm values as identity, rank and payload.
local function plain(x, depth)
  if csm.is_value(x) then
    return { identity = x:identity(), rank = x:rank(), payload = plain(x.payload, depth + 1) }
  end
  if type(x) ~= "table" or depth > 8 then return x end
  local out = {}
  for k, v in pairs(x) do out[k] = plain(v, depth + 1) end
  return out
end

local function r3(t) return math.floor(t * 1e6 + 0.5) / 1e6 end

--- A message event (as csm.lab.trace's Trace:message), with the message.
function Recorder:message(what, id, from, to, kind, rank, attempt, why, msg)
  local now = r3(self.world:now())
  local m = self.by_id[id]
  if what == "send" then
    local ok, body = pcall(trace.json, plain(msg, 0))
    m = { id = id, from = self.node(from), to = self.node(to), kind = self.kind(kind or "?"), rank = rank or -1,
          attempt = attempt or -1, sent = now, body = self.body(ok and body or "(not plain data)") }
    self.by_id[id] = m
    self.msgs[#self.msgs + 1] = m
  elseif m then
    if what == "deliver" then
      if m.delivered == nil then m.delivered = now else m.again = (m.again or 0) + 1 end
    elseif what == "drop" then
      m.dropped, m.why = now, self.why(why or "?")
    elseif what == "in_flight" then
      m.in_flight = true
    end
  end
end

--- A finalization.
function Recorder:finalize(node, rank, identity)
  self.finals[#self.finals + 1] = { r3(self.world:now()), self.node(node), rank, identity }
end

--- A protocol's note.
function Recorder:note(node, kind, fields)
  self.notes[#self.notes + 1] = { r3(self.world:now()), self.node(node), kind, fields or {} }
end

--- A fault, or an adversary's action.
function Recorder:event(kind, fields)
  self.events[#self.events + 1] = { r3(self.world:now()), kind, fields or {} }
end

--- A transition of a node's machine.
function Recorder:transition(node, _, _, to, rank)
  self.transitions[#self.transitions + 1] = { r3(self.world:now()), self.node(node), self.state(to), rank or -1 }
end

function Recorder:close() return true end

-- The page's data, as one JSON text.
local function data_of(rec, report)
  local cols = { id = {}, from = {}, to = {}, kind = {}, rank = {}, attempt = {}, sent = {}, fate = {}, at = {},
                 why = {}, body = {}, again = {} }
  for i, m in ipairs(rec.msgs) do
    cols.id[i], cols.from[i], cols.to[i], cols.kind[i] = m.id, m.from, m.to, m.kind
    cols.rank[i], cols.attempt[i], cols.sent[i], cols.body[i] = m.rank, m.attempt, m.sent, m.body
    -- fate: 0 delivered, 1 dropped, 2 in flight at the end
    if m.delivered then
      cols.fate[i], cols.at[i], cols.why[i] = 0, m.delivered, -1
    elseif m.dropped then
      cols.fate[i], cols.at[i], cols.why[i] = 1, m.dropped, m.why
    else
      cols.fate[i], cols.at[i], cols.why[i] = 2, report and report.virtual or m.sent, -1
    end
    cols.again[i] = m.again or 0
  end
  local violations = {}
  for _, v in ipairs(report and report.violations or {}) do
    violations[#violations + 1] = { rank = v.rank, nodes = v.nodes, identities = v.identities }
  end
  local findings = {}
  for _, f in ipairs(report and report.findings or {}) do findings[#findings + 1] = f.text end
  return trace.json {
    header = rec.header or {}, nodes = rec.node_list, kinds = rec.kind_list, states = rec.state_list,
    whys = rec.why_list, bodies = rec.body_list, msgs = cols, transitions = rec.transitions,
    notes = rec.notes, events = rec.events, finals = rec.finals, violations = violations,
    findings = findings, verdict = report and report.verdict or "?", virtual = report and report.virtual or 0,
  }
end

local PAGE = [==[<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>csm run: %TITLE%</title>
<style>
body{margin:0;font:13px system-ui,sans-serif;color:#222;display:flex;flex-direction:column;height:100vh}
header{padding:6px 10px;background:#f3f3f3;border-bottom:1px solid #ccc}
header b{font-weight:600}
#bar{display:flex;flex-wrap:wrap;gap:10px;align-items:center;padding:4px 10px;border-bottom:1px solid #ddd}
#bar fieldset{border:1px solid #ddd;padding:2px 6px;margin:0}
#bar label{margin-right:6px;white-space:nowrap}
#main{flex:1;display:flex;min-height:0}
#wrap{flex:1;position:relative;min-width:0}
canvas{position:absolute;left:0;top:0;cursor:crosshair}
#side{width:340px;overflow:auto;border-left:1px solid #ccc;padding:8px;font-size:12px}
#side pre{white-space:pre-wrap;word-break:break-all;background:#f7f7f7;padding:6px}
.bad{color:#b00;font-weight:600}.ok{color:#070;font-weight:600}
button{font-size:12px}
</style></head><body>
<header id="head"></header>
<div id="bar">
 <button id="zin">zoom in</button><button id="zout">zoom out</button><button id="reset">whole run</button>
 <button id="jump">jump to the violation</button>
 <span id="where"></span>
 <fieldset id="nodef"><legend>nodes</legend></fieldset>
 <fieldset id="kindf"><legend>kinds</legend></fieldset>
 <fieldset id="statef"><legend>states</legend></fieldset>
</div>
<div id="main"><div id="wrap"><canvas id="c"></canvas></div>
<div id="side"><div id="info">Click a message (an arrow) to see its body and what happened before it.
Drag to pan, wheel to zoom.</div></div></div>
<script id="data" type="application/json">%DATA%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
// an empty Lua table is written as {}: lists are lists here
const list = v => Array.isArray(v) ? v : [];
for (const k of ["nodes", "kinds", "states", "whys", "bodies", "transitions", "notes", "events", "finals",
  "violations", "findings"]) D[k] = list(D[k]);
for (const k of Object.keys(D.msgs)) D.msgs[k] = list(D.msgs[k]);
const M = D.msgs, N = (M.id || []).length, names = D.nodes;
const canvas = document.getElementById("c"), ctx = canvas.getContext("2d");
const LANE = 16, ROW = 26, LEFT = 70, TOP = 22, BUDGET = 60000; // arrows drawn at once, at most
const palette = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22",
  "#17becf","#393b79","#637939","#8c6d31","#843c39","#7b4173"];
const stateColour = s => palette[(s * 7 + 3) % palette.length];
const kindColour = k => palette[k % palette.length];
let t0 = 0, t1 = Math.max(D.virtual, 1e-3), shownNodes = names.map(() => true), shownKinds = D.kinds.map(() => true);
let selected = -1, past = null, quorum = null, drawn = 0, drawnDelivered = 0;
// per node: its transitions, in time order
const lanes = names.map(() => []);
for (const [t, node, state, rank] of D.transitions) lanes[node].push([t, state, rank]);
// sends sorted by time (they are, as recorded); deliveries per receiver, for the causal past
const byTo = names.map(() => []);
for (let i = 0; i < N; i++) if (M.fate[i] === 0) byTo[M.to[i]].push(i);
for (const l of byTo) l.sort((a, b) => M.at[a] - M.at[b]);
function rowsTop() { return TOP + names.length * LANE + 14; }
function rowY(node) { return rowsTop() + node * ROW + ROW / 2; }
function x(t) { return LEFT + (t - t0) / (t1 - t0) * (canvas.width - LEFT - 10); }
function tOf(px) { return t0 + (px - LEFT) / (canvas.width - LEFT - 10) * (t1 - t0); }
function resize() {
  const w = document.getElementById("wrap");
  canvas.width = w.clientWidth; canvas.height = Math.max(w.clientHeight, rowsTop() + names.length * ROW + 20);
  draw();
}
function lowerBound(t) { let lo = 0, hi = N; while (lo < hi) { const m = (lo + hi) >> 1; if (M.sent[m] < t) lo = m + 1; else hi = m; } return lo; }
function visible(i) { return shownNodes[M.from[i]] && shownNodes[M.to[i]] && shownKinds[M.kind[i]]; }
function draw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui,sans-serif";
  // faults: shaded spans
  const open = {};
  for (const [t, kind, f] of D.events) {
    if (kind === "adversary") continue;
    const end = f.duration ? t + f.duration : (kind === "crash" ? D.virtual : t);
    ctx.fillStyle = kind === "gst" ? "rgba(0,120,0,0.10)" : "rgba(252,187,161,0.35)";
    const a = x(t), b = Math.max(x(end), a + 2);
    if (b < LEFT || a > canvas.width) continue;
    ctx.fillRect(Math.max(a, LEFT), TOP, Math.min(b, canvas.width) - Math.max(a, LEFT), canvas.height - TOP);
    ctx.fillStyle = "#a33"; ctx.fillText(kind + (f.node ? " " + f.node : ""), Math.max(a, LEFT) + 2, TOP - 4);
  }
  // lanes: states
  names.forEach((name, n) => {
    const y = TOP + n * LANE;
    ctx.fillStyle = shownNodes[n] ? "#222" : "#aaa"; ctx.fillText(name, 4, y + 11);
    const l = lanes[n];
    for (let k = 0; k < l.length; k++) {
      const a = l[k][0], b = k + 1 < l.length ? l[k + 1][0] : D.virtual;
      if (b < t0 || a > t1) continue;
      ctx.fillStyle = stateColour(l[k][1]);
      ctx.fillRect(Math.max(x(a), LEFT), y + 2, Math.max(x(Math.min(b, t1)) - Math.max(x(a), LEFT), 1), LANE - 4);
    }
  });
  // attempts: ticks on the lanes
  ctx.fillStyle = "#000";
  for (const [t, node, kind] of D.notes) {
    if (kind !== "attempt" || t < t0 || t > t1) continue;
    ctx.fillRect(x(t), TOP + node * LANE, 1.5, LANE);
  }
  // finalizations: small marks under the lanes
  for (const [t, node] of D.finals) {
    if (t < t0 || t > t1) continue;
    ctx.fillStyle = "#000"; ctx.fillRect(x(t) - 0.5, TOP + node * LANE + LANE - 3, 1, 3);
  }
  // rows of the message diagram
  names.forEach((name, n) => {
    ctx.strokeStyle = "#e4e4e4"; ctx.beginPath(); ctx.moveTo(LEFT, rowY(n)); ctx.lineTo(canvas.width, rowY(n)); ctx.stroke();
    ctx.fillStyle = shownNodes[n] ? "#222" : "#aaa"; ctx.fillText(name, 4, rowY(n) + 4);
  });
  // messages sent in view (and those sent a little before, still in flight),
  // right of the names
  ctx.save(); ctx.beginPath(); ctx.rect(LEFT, 0, canvas.width - LEFT, canvas.height); ctx.clip();
  drawn = 0; drawnDelivered = 0;
  const from = lowerBound(t0 - (t1 - t0)), budget = BUDGET;
  ctx.lineWidth = 1;
  for (let i = from; i < N && M.sent[i] <= t1; i++) {
    if (!visible(i)) continue;
    if (M.fate[i] === 0 && M.at[i] < t0) continue;
    if (drawn >= budget) break;
    drawArrow(i, 1);
  }
  if (past || quorum) {
    ctx.lineWidth = 2;
    const set = past || quorum;
    for (const i of set) if (visible(i)) drawArrow(i, 2);
    ctx.lineWidth = 1;
  }
  if (selected >= 0) { ctx.lineWidth = 3; drawArrow(selected, 3); ctx.lineWidth = 1; }
  ctx.restore();
  document.getElementById("where").textContent = `${t0.toFixed(3)}–${t1.toFixed(3)} s, ${drawn} arrows` +
    (drawn >= budget ? " (zoom in for the rest)" : "");
}
function drawArrow(i, emphasis) {
  const xa = x(M.sent[i]), ya = rowY(M.from[i]);
  let xb = x(M.at[i]), yb = rowY(M.to[i]);
  const dim = (past || quorum) && emphasis === 1;
  ctx.strokeStyle = emphasis === 3 ? "#000" : kindColour(M.kind[i]);
  ctx.globalAlpha = dim ? 0.15 : 0.8;
  if (M.fate[i] === 1) { yb = ya + (yb - ya) * 0.3; xb = Math.max(xb, xa + 4); }
  ctx.beginPath(); ctx.moveTo(xa, ya); ctx.lineTo(xb, yb); ctx.stroke();
  if (M.fate[i] === 1) {
    ctx.strokeStyle = "#d00"; ctx.beginPath();
    ctx.moveTo(xb - 3, yb - 3); ctx.lineTo(xb + 3, yb + 3); ctx.moveTo(xb + 3, yb - 3); ctx.lineTo(xb - 3, yb + 3); ctx.stroke();
  } else if (M.fate[i] === 0) {
    const ang = Math.atan2(yb - ya, xb - xa);
    ctx.beginPath(); ctx.moveTo(xb, yb);
    ctx.lineTo(xb - 5 * Math.cos(ang - 0.4), yb - 5 * Math.sin(ang - 0.4));
    ctx.moveTo(xb, yb); ctx.lineTo(xb - 5 * Math.cos(ang + 0.4), yb - 5 * Math.sin(ang + 0.4)); ctx.stroke();
  }
  ctx.globalAlpha = 1;
  if (emphasis === 1) { drawn++; if (M.fate[i] === 0) drawnDelivered++; }
}
// the causal past of message i: what its sender had received before it sent it, and so on
function causalPast(i) {
  const out = new Set(), upto = names.map(() => -Infinity), queue = [[M.from[i], M.sent[i]]];
  while (queue.length) {
    const [node, t] = queue.pop();
    if (t <= upto[node]) continue;
    const lo = upto[node]; upto[node] = t;
    for (const j of byTo[node]) {
      if (M.at[j] > t) break;
      if (M.at[j] <= lo || out.has(j)) continue;
      out.add(j); queue.push([M.from[j], M.sent[j]]);
    }
  }
  return out;
}
function select(i) {
  selected = i; quorum = null; past = i >= 0 ? causalPast(i) : null;
  const info = document.getElementById("info");
  if (i < 0) { info.textContent = ""; draw(); return; }
  const fate = M.fate[i] === 0 ? `delivered at ${M.at[i]} s` + (M.again[i] ? ` (and ${M.again[i]} more time(s))` : "")
    : M.fate[i] === 1 ? `dropped at ${M.at[i]} s (${D.whys[M.why[i]]})` : "still in flight at the end";
  info.innerHTML = "";
  const h = document.createElement("div");
  h.innerHTML = `<b>message ${M.id[i]}</b>: ${D.kinds[M.kind[i]]} from ${names[M.from[i]]} to ${names[M.to[i]]}<br>` +
    `rank ${M.rank[i]}${M.attempt[i] >= 0 ? ", attempt " + M.attempt[i] : ""}; sent at ${M.sent[i]} s, ${fate}<br>` +
    `${past.size} message(s) happened before it (drawn bold)`;
  const pre = document.createElement("pre"); pre.id = "body";
  let text = D.bodies[M.body[i]];
  try { text = JSON.stringify(JSON.parse(text), null, 1); } catch (e) { /* not JSON: as it is */ }
  pre.textContent = text;
  info.appendChild(h); info.appendChild(pre);
  draw();
}
function nearest(px, py) {
  let best = -1, bd = 36;
  const from = lowerBound(t0 - (t1 - t0));
  for (let i = from; i < N && M.sent[i] <= t1; i++) {
    if (!visible(i)) continue;
    const xa = x(M.sent[i]), ya = rowY(M.from[i]);
    let xb = x(M.at[i]), yb = rowY(M.to[i]);
    if (M.fate[i] === 1) { yb = ya + (yb - ya) * 0.3; xb = Math.max(xb, xa + 4); }
    const dx = xb - xa, dy = yb - ya, len = dx * dx + dy * dy || 1;
    const u = Math.max(0, Math.min(1, ((px - xa) * dx + (py - ya) * dy) / len));
    const ex = xa + u * dx - px, ey = ya + u * dy - py, d = ex * ex + ey * ey;
    if (d < bd) { bd = d; best = i; }
  }
  return best;
}
let drag = null;
canvas.addEventListener("mousedown", e => { drag = { x: e.offsetX, t0, t1, moved: false }; });
canvas.addEventListener("mousemove", e => {
  if (!drag) return;
  const dt = (e.offsetX - drag.x) / (canvas.width - LEFT - 10) * (drag.t1 - drag.t0);
  if (Math.abs(e.offsetX - drag.x) > 3) drag.moved = true;
  if (drag.moved) { t0 = drag.t0 - dt; t1 = drag.t1 - dt; draw(); }
});
canvas.addEventListener("mouseup", e => { if (drag && !drag.moved) select(nearest(e.offsetX, e.offsetY)); drag = null; });
canvas.addEventListener("wheel", e => { e.preventDefault(); zoom(e.deltaY < 0 ? 0.8 : 1.25, tOf(e.offsetX)); }, { passive: false });
function zoom(f, at) { at = at === undefined ? (t0 + t1) / 2 : at; t0 = at - (at - t0) * f; t1 = at + (t1 - at) * f; draw(); }
document.getElementById("zin").onclick = () => zoom(0.5);
document.getElementById("zout").onclick = () => zoom(2);
document.getElementById("reset").onclick = () => { t0 = 0; t1 = Math.max(D.virtual, 1e-3); draw(); };
function jump() {
  const v = D.violations[0];
  if (!v) { document.getElementById("info").textContent = "No agreement violation in this run. " + D.findings.join(" "); return; }
  const a = names.indexOf(v.nodes[0]), b = names.indexOf(v.nodes[1]);
  const when = n => { for (const [t, node, rank] of D.finals) if (node === n && rank === v.rank) return t; return D.virtual; };
  const ta = when(a), tb = when(b);
  quorum = new Set(); selected = -1; past = null;
  for (let i = 0; i < N; i++) {
    if (D.kinds[M.kind[i]] !== "vote" || M.rank[i] !== v.rank || M.fate[i] !== 0) continue;
    if ((M.to[i] === a && M.at[i] <= ta) || (M.to[i] === b && M.at[i] <= tb)) quorum.add(i);
  }
  const lo = Math.min(ta, tb), hi = Math.max(ta, tb), pad = Math.max((hi - lo) * 0.3, 0.05);
  t0 = lo - pad * 3; t1 = hi + pad;
  document.getElementById("info").innerHTML = `<b class="bad">agreement violated at rank ${v.rank}</b>: ` +
    `${v.nodes[0]} finalized ${v.identities[0]} at ${ta} s, ${v.nodes[1]} finalized ${v.identities[1]} at ${tb} s.<br>` +
    `Bold: the ${quorum.size} votes of rank ${v.rank} each of them had received by then (both quorums).`;
  draw();
}
document.getElementById("jump").onclick = jump;
function checkboxes(id, list, shown) {
  const f = document.getElementById(id);
  list.forEach((name, i) => {
    const l = document.createElement("label"), c = document.createElement("input");
    c.type = "checkbox"; c.checked = true; c.onchange = () => { shown[i] = c.checked; draw(); };
    if (id === "kindf") l.style.color = kindColour(i);
    l.appendChild(c); l.appendChild(document.createTextNode(name)); f.appendChild(l);
  });
}
checkboxes("nodef", names, shownNodes);
D.states.forEach((name, i) => {
  const l = document.createElement("label");
  l.innerHTML = `<span style="display:inline-block;width:10px;height:10px;background:${stateColour(i)}"></span> ${name}`;
  document.getElementById("statef").appendChild(l);
});
checkboxes("kindf", D.kinds, shownKinds);
const h = D.header, cfg = h.config || {};
document.getElementById("head").innerHTML = `<b>${h.protocol || "protocol"}</b>, ${cfg.nodes || names.length} nodes` +
  (names.length > (cfg.nodes || 0) ? ` (${names.length} lanes: twin copies apart)` : "") + `, seed ${cfg.seed}` +
  `, ${N} messages, ${D.virtual.toFixed(3)} virtual s — verdict <span class="${D.verdict === "valid" ? "ok" : "bad"}">${D.verdict}</span>` +
  (D.violations.length ? `, ${D.violations.length} agreement violation(s)` : "") + (D.findings.length ? ` — ${D.findings[0]}` : "");
window.addEventListener("resize", resize);
// for tests and scripts: what is drawn, and where a message is
window.csmView = {
  messages: N, budget: BUDGET, delivered: () => M.fate.filter(f => f === 0).length, arrows: () => drawn,
  redraw: () => { const a = performance.now(); draw(); return performance.now() - a; },
  deliveryArrows: () => drawnDelivered,
  whole: () => { t0 = 0; t1 = Math.max(D.virtual, 1e-3) * 1.001; draw(); return drawnDelivered; },
  point: id => { const i = M.id.indexOf(id); const xa = x(M.sent[i]), xb = x(M.at[i]);
    const ya = rowY(M.from[i]), yb = rowY(M.to[i]); const r = canvas.getBoundingClientRect();
    return { x: r.left + (xa + xb) / 2, y: r.top + (ya + yb) / 2, kind: D.kinds[M.kind[i]] }; },
  select, jump, zoom,
};
resize();
</script></body></html>
]==]

--- A trace and a recorder as one: each event goes to both (trace may be
-- nil); close closes the trace.
function viewer.tee(log, rec)
  if log == nil then return rec end
  local t = {}
  for _, k in ipairs { "message", "finalize", "note", "event", "transition" } do
    t[k] = function(_, ...)
      log[k](log, ...)
      rec[k](rec, ...)
    end
  end
  function t.close() return log:close() end
  return t
end

--- The page (a string) of recorder rec and report r.
function viewer.page(rec, r)
  local data = data_of(rec, r):gsub("</", "<\\/")
  local title = ((rec.header or {}).protocol or "run"):gsub("[<>&]", "")
  local page = PAGE:gsub("%%TITLE%%", function() return title end)
  return (page:gsub("%%DATA%%", function() return data end))
end

--- Writes the page to path: true, or nil, a message and "io".
function viewer.write(rec, r, path)
  local fh, err = io.open(path, "wb")
  if not fh then return nil, "cannot write the page: " .. tostring(err), "io" end
  local ok, werr = fh:write(viewer.page(rec, r))
  fh:close()
  if not ok then return nil, "cannot write the page: " .. tostring(werr), "io" end
  return true
end

return viewer
