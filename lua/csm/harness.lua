--- Protocol experiments: N reference nodes on a sim world and a simulated
-- network, byzantine peers, faults on a schedule; invariants checked after
-- every finalization; a report, a JSON-lines trace and an SVG timeline.
--
--     local harness = require "csm.harness"
--     local report = harness.run { nodes = 16, byzantine = { equivocate = 5 }, loss = 0.05,
--                                  seed = 7, ranks = 200 }
--     print(harness.format(report))
-- @module csm.harness

local csm = require "csm"
local net = require "csm.net"
local reference = require "csm.reference"

local harness = {}

local KINDS = { equivocate = true, double_vote = true, silent = true, crash = true }
harness.byzantine_kinds = { "equivocate", "double_vote", "silent", "crash" }

local DEFAULTS = {
  nodes = 4, seed = 1, ranks = 100, time = 3600, latency = 0.01, jitter = 0.005, loss = 0,
  duplicate = 0, reorder = 0, crash_at = 5, restart_after = nil, partitions = {},
  timing = nil, view_timeout = nil, trace = nil, svg = nil,
}

local OPTIONS = { byzantine = true, restart_after = true, timing = true, view_timeout = true,
                  trace = true, svg = true }
for k in pairs(DEFAULTS) do OPTIONS[k] = true end

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

--- Checks a configuration and fills in the defaults.
function harness.config(c)
  c = c or {}
  local out = {}
  for k, v in pairs(DEFAULTS) do out[k] = v end
  for k, v in pairs(c) do
    if not OPTIONS[k] then fail("harness: unknown option '%s'", tostring(k)) end
    out[k] = v
  end
  out.byzantine = {}
  local total = 0
  for kind, count in pairs(c.byzantine or {}) do
    if not KINDS[kind] then fail("harness: unknown byzantine kind '%s'", tostring(kind)) end
    if type(count) ~= "number" or count < 0 or count % 1 ~= 0 then
      fail("harness: byzantine count for %s must be an integer >= 0", kind)
    end
    out.byzantine[kind] = count
    total = total + count
  end
  if type(out.nodes) ~= "number" or out.nodes < 1 or out.nodes % 1 ~= 0 then
    fail("harness: nodes must be an integer >= 1")
  end
  if total >= out.nodes then
    fail("harness: %d byzantine nodes leave no honest one of %d", total, out.nodes)
  end
  return out
end

-- Which node plays which part: byzantine nodes are spread over the ring,
-- in the order of harness.byzantine_kinds.
local function assign_roles(c)
  local roles, n = {}, c.nodes
  local list = {}
  for _, kind in ipairs(harness.byzantine_kinds) do
    for _ = 1, c.byzantine[kind] or 0 do list[#list + 1] = kind end
  end
  local step = n / math.max(#list, 1)
  for i, kind in ipairs(list) do
    roles[math.floor((i - 1) * step) + 1] = kind
  end
  return roles
end

local function percentile(sorted, p)
  if #sorted == 0 then return 0 end
  local i = math.max(1, math.min(#sorted, math.ceil(p * #sorted)))
  return sorted[i]
end

-- ---- the trace: JSON lines with a fixed field order ----

-- lua-cjson escapes the strings; it is needed only when a trace is written
local encode
local function json_string(s)
  encode = encode or require("cjson").encode
  return encode(s)
end

local function trace_line(fields)
  local parts = {}
  for i = 1, #fields, 2 do
    local k, v = fields[i], fields[i + 1]
    if v ~= nil then
      local text
      if type(v) == "number" then
        text = v % 1 == 0 and string.format("%d", v) or string.format("%.6f", v)
      else
        text = json_string(v)
      end
      parts[#parts + 1] = json_string(k) .. ":" .. text
    end
  end
  return "{" .. table.concat(parts, ",") .. "}\n"
end

--- Runs an experiment; returns the report (see harness.format).
function harness.run(config)
  local c = harness.config(config)
  local clock = os.clock()
  local world = csm.sim { seed = c.seed }
  local network = net.new(world, { latency = c.latency, jitter = c.jitter, loss = c.loss,
    duplicate = c.duplicate, reorder = c.reorder })
  local names = {}
  for i = 1, c.nodes do names[i] = string.format("n%02d", i) end
  local roles = assign_roles(c)
  local genesis = csm.value("genesis", 0)

  local trace_file
  if c.trace then
    trace_file = assert(io.open(c.trace, "w"))
    network.observer = function(what, from, to, msg)
      local r = msg.rank or (msg.value and msg.value:rank())
      trace_file:write(trace_line { "t", world:now(), "kind", what, "node", from, "to", to,
        "message", msg.kind, "rank", r })
    end
  end

  local report = {
    config = c, nodes = {}, violations = {}, stuck = {}, finalized_by = {},
  }
  local honest_total, honest_done = 0, 0
  local agreed = {}          -- rank -> { identity, node } of the first honest finalization
  local lanes = {}           -- node -> { {t, state}, ... } for the SVG

  local nodes = {}
  local function on_finalize(node, rank, state)
    if trace_file then
      trace_file:write(trace_line { "t", world:now(), "kind", "finalize", "node", node.name,
        "rank", rank, "identity", state:identity() })
    end
    if node.role ~= "honest" then return end
    local first = agreed[rank]
    if first == nil then
      agreed[rank] = { identity = state:identity(), node = node.name }
    elseif first.identity ~= state:identity() then
      report.violations[#report.violations + 1] = {
        rank = rank, nodes = { first.node, node.name }, identities = { first.identity, state:identity() },
      }
    end
    if node.count >= c.ranks and not node.reached then
      node.reached = true
      honest_done = honest_done + 1
    end
  end

  local function make(i, sync)
    local role = roles[i]
    local node = reference.node {
      name = names[i], names = names, world = world, network = network,
      role = (role == "crash" or role == nil) and "honest" or role,
      initial = genesis, timing = c.timing, view_timeout = c.view_timeout, sync = sync,
      on_finalize = on_finalize,
    }
    node.part = role or "honest"
    if role == "crash" then node.role = "crash" end
    lanes[node.name] = lanes[node.name] or {}
    local lane = lanes[node.name]
    node.sm:add_listener(function(from, to, event)
      lane[#lane + 1] = { world:now(), to }
      if trace_file then
        local active = node.sm:active_state()
        trace_file:write(trace_line { "t", world:now(), "kind", "transition", "node", node.name,
          "from", from, "event", event, "to", to, "rank", active and active:rank() + 1 })
      end
    end)
    return node
  end

  for i = 1, c.nodes do
    nodes[i] = make(i, false)
    if nodes[i].role == "honest" then honest_total = honest_total + 1 end
  end
  for _, node in ipairs(nodes) do
    if node.part == "silent" then network:crash(node.name) end
    node:start()
  end

  -- faults on a schedule
  for i, node in ipairs(nodes) do
    if node.part == "crash" then
      network:at(c.crash_at, function()
        nodes[i].sm:close()
        network:crash(node.name)
        local lane = lanes[node.name]
        lane[#lane + 1] = { world:now(), "crashed" }
      end)
      if c.restart_after then
        network:at(c.crash_at + c.restart_after, function()
          network:restart(node.name)
          local old = nodes[i]
          local fresh = make(i, true)
          fresh.finalized, fresh.finalized_at, fresh.count = old.finalized, old.finalized_at, old.count
          -- what it finalized and voted survives the crash: it answers syncs and votes
          fresh.chain, fresh.cast = old.chain, old.cast
          local last = old.sm:active_state()
          if last then fresh.sm:set_active_state(last) end
          nodes[i] = fresh
          fresh:start()
        end)
      end
    end
  end
  for _, p in ipairs(c.partitions) do
    network:at(p.at, function() network:partition(p.groups) end)
    network:at(p.at + p.duration, function() network:heal() end)
  end

  local finished = world:run_until(function() return honest_done >= honest_total end, c.time)
  report.wall = os.clock() - clock
  report.virtual = world:now()
  report.finished = finished
  report.messages = network.stats

  -- per-node results, round latency, progress
  local latencies = {}
  local least = math.huge
  for _, node in ipairs(nodes) do
    local entry = { name = node.name, part = node.part, finalized = node.count,
      state = node.sm:state(), refused = node.refused }
    report.nodes[#report.nodes + 1] = entry
    if node.role == "honest" then
      least = math.min(least, node.count)
      local prev = 0
      for rank = 1, node.count do
        local at = node.finalized_at[rank]
        if at == nil then break end
        if rank > 1 then latencies[#latencies + 1] = at - prev end
        prev = at
      end
      if node.count < c.ranks then
        report.stuck[#report.stuck + 1] = { node = node.name, state = node.sm:state(),
          finalized = node.count }
      end
    end
  end
  table.sort(latencies)
  local sum = 0
  for _, l in ipairs(latencies) do sum = sum + l end
  report.latency = {
    mean = #latencies > 0 and sum / #latencies or 0,
    p50 = percentile(latencies, 0.5), p99 = percentile(latencies, 0.99), samples = #latencies,
  }
  report.rounds = least == math.huge and 0 or least
  report.rounds_per_second = report.wall > 0 and report.rounds / report.wall or 0
  report.agreement = #report.violations == 0
  report.progress = #report.stuck == 0
  report.lanes, report.names = lanes, names
  report.finalized_at = {}
  for _, node in ipairs(nodes) do report.finalized_at[node.name] = node.finalized_at end
  if trace_file then trace_file:close() end
  if c.svg then harness.svg(report, c.svg) end
  for _, node in ipairs(nodes) do node.sm:close() end
  return report
end

--- The report as text.
function harness.format(r)
  local c = r.config
  local out = {}
  local function line(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local byz = {}
  for _, kind in ipairs(harness.byzantine_kinds) do
    if (c.byzantine[kind] or 0) > 0 then byz[#byz + 1] = c.byzantine[kind] .. " " .. kind end
  end
  line("csm experiment: %d nodes%s, seed %d, target %d ranks or %g virtual s", c.nodes,
    #byz > 0 and (" (" .. table.concat(byz, ", ") .. ")") or "", c.seed, c.ranks, c.time)
  line("network: latency %gs jitter %gs loss %g duplicate %g reorder %g%s", c.latency, c.jitter,
    c.loss, c.duplicate, c.reorder, #c.partitions > 0 and (", " .. #c.partitions .. " partition(s)") or "")
  line("")
  line("%-6s %-12s %10s  %-15s %8s", "node", "part", "finalized", "state", "refused")
  for _, n in ipairs(r.nodes) do
    line("%-6s %-12s %10d  %-15s %8d", n.name, n.part, n.finalized, n.state, n.refused)
  end
  line("")
  line("round latency (virtual): mean %.4fs  p50 %.4fs  p99 %.4fs  (%d rounds)", r.latency.mean,
    r.latency.p50, r.latency.p99, r.latency.samples)
  line("messages: %d sent, %d delivered, %d dropped, %d duplicated", r.messages.sent,
    r.messages.delivered, r.messages.dropped, r.messages.duplicated)
  line("time: %.3f virtual s, %.3f wall s, %.1f rounds per wall second", r.virtual, r.wall,
    r.rounds_per_second)
  if r.agreement then
    line("agreement: ok (no two honest nodes finalized different identities at one rank)")
  else
    for _, v in ipairs(r.violations) do
      line("agreement VIOLATED at rank %d: %s finalized %s, %s finalized %s", v.rank, v.nodes[1],
        v.identities[1], v.nodes[2], v.identities[2])
    end
  end
  if r.progress then
    line("progress: ok (every honest node finalized %d ranks)", c.ranks)
  else
    for _, s in ipairs(r.stuck) do
      line("progress: %s finalized %d of %d ranks, stuck in %s", s.node, s.finalized, c.ranks, s.state)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- ---- the SVG timeline ----

local COLORS = {
  stopped = "#bbbbbb", starting = "#d9d9d9", loading = "#8c6bb1", collecting = "#9ecae1",
  liveness_check = "#6baed6", proving = "#fdae6b", publishing = "#fd8d3c", voting = "#74c476",
  finalizing = "#31a354", verifying = "#006d2c", stopping = "#969696", crashed = "#de2d26",
}
local ORDER = { "loading", "collecting", "liveness_check", "proving", "publishing", "voting",
  "finalizing", "verifying", "stopped", "crashed" }

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

--- Writes an SVG timeline: a lane per node, states coloured, finalizations
-- marked, byzantine nodes labelled.
function harness.svg(r, path)
  local lane_h, left, top, width = 22, 150, 40, 1100
  local names = r.names
  local height = top + #names * lane_h + 70
  local t_end = r.virtual > 0 and r.virtual or 1
  local function x(t) return left + (t / t_end) * width end
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
    .. 'font-family="Helvetica, Arial, sans-serif" font-size="12">', left + width + 20, height))
  add(string.format('<rect width="100%%" height="100%%" fill="white"/>'))
  local c = r.config
  add(string.format('<text x="%d" y="20" font-size="14">csm: %d nodes, seed %d, %d ranks '
    .. 'finalized by every honest node in %.2f virtual s — agreement %s</text>', left, c.nodes,
    c.seed, r.rounds, r.virtual, r.agreement and "ok" or "VIOLATED"))
  local parts = {}
  for _, n in ipairs(r.nodes) do parts[n.name] = n.part end
  for i, name in ipairs(names) do
    local y = top + (i - 1) * lane_h
    local part = parts[name]
    local labeltext = part == "honest" and name or (name .. " (" .. part .. ")")
    add(string.format('<text x="%d" y="%d" text-anchor="end"%s>%s</text>', left - 8, y + 15,
      part == "honest" and "" or ' fill="#b30000" font-weight="bold"', esc(labeltext)))
    local lane = r.lanes[name] or {}
    -- merge runs narrower than half a pixel into the state that follows
    for k, seg in ipairs(lane) do
      local t0 = seg[1]
      local t1 = lane[k + 1] and lane[k + 1][1] or r.virtual
      local x0, x1 = x(t0), x(t1)
      if x1 - x0 >= 0.5 then
        add(string.format('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s %s '
          .. '%.4f–%.4f s</title></rect>', x0, y + 2, x1 - x0, lane_h - 6,
          COLORS[seg[2]] or "#cccccc", esc(name), esc(seg[2]), t0, t1))
      end
    end
    local fin = r.finalized_at[name] or {}
    for _, t in ipairs(fin) do
      add(string.format('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black" stroke-width="1"/>',
        x(t), x(t), y, y + lane_h - 2))
    end
  end
  -- axis
  local axis_y = top + #names * lane_h + 8
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>', left, left + width,
    axis_y, axis_y))
  for k = 0, 10 do
    local t = t_end * k / 10
    add(string.format('<text x="%.1f" y="%d" text-anchor="middle" font-size="10">%.2fs</text>',
      x(t), axis_y + 14, t))
  end
  -- legend
  local lx, ly = left, axis_y + 34
  for _, state in ipairs(ORDER) do
    add(string.format('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>', lx, ly - 10,
      COLORS[state]))
    add(string.format('<text x="%d" y="%d">%s</text>', lx + 16, ly, state))
    lx = lx + 24 + #state * 7
  end
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>', lx, lx, ly - 11, ly + 1))
  add(string.format('<text x="%d" y="%d">finalization</text>', lx + 6, ly))
  add("</svg>")
  local fh = assert(io.open(path, "w"))
  fh:write(table.concat(out, "\n"), "\n")
  fh:close()
end

return harness
