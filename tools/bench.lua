#!/usr/bin/env lua
-- csm's benchmark: the workloads of the performance targets (README,
-- Performance), each repeated at least 5 times in this process; prints the
-- median with min and max beside the target. Wall-clock figures on a shared machine are noisy: compare
-- ratios, or count instructions with valgrind --tool=callgrind.
--
--   . scripts/env.sh && lua5.4 tools/bench.lua [--quick] [--only NAME]     (luajit too)
--
-- Workloads
--   receive_vote      receive_vote into one machine (in loading, behaviour
--                     off): 4000 distinct voters at each of 50 ranks, then the
--                     loop runs until every queued event was handled. calls/s.
--   receive_proposal  the same with receive_proposal. calls/s.
--   self_transition   voting --voting_timeout--> voting with a no-op Lua
--                     behaviour, events sent in batches of 32 and handled by
--                     the loop. transitions/s.
--   real_cluster      the minimal protocol, 4 honest nodes on the real loop (luv),
--                     the default timings, zero-latency in-process
--                     delivery; rounds finalized per second of wall time.
--   trivial_cluster_4 4 machines of trivial providers (tools/trivial.lua) on a
--                     sim world, zero latency: csm's machinery alone;
--                     finalized rounds per second.
--   sim_cluster_N     the reference protocol with N nodes on
--                     a sim world, zero latency; finalized rounds per wall
--                     second, and wall microseconds per delivered message.
--   idle_machine      bytes of Lua heap + RSS per machine over 10,000 idle
--                     machines (started, default options, idle in loading).
--   soak              a 4-node minimal-protocol sim run (100,000 rounds; 20,000 with
--                     --quick): Lua heap and RSS sampled nine times after
--                     warm-up (the first 10 %); growth in % of the mean of the
--                     last three samples over the first three. `csm soak`
--                     runs the 1,000,000-round reference cluster of the target.
local argparse = require "argparse"
local csm = require "csm"
local minimal = require "csm.protocols.minimal"
local reference = require "csm.protocols.reference"
local lab_cluster = require "csm.lab.cluster"
local checker = require "csm.lab.checker"
local memory = require "csm.lab.memory"

local WORKLOADS = { "receive_vote", "receive_proposal", "self_transition", "real_cluster",
  "trivial_cluster_4", "sim_cluster_4", "sim_cluster_16", "sim_cluster_64", "sim_cluster_100", "idle_machine",
  "soak" }

local parser = argparse("bench.lua", "csm's benchmark: each workload's median of 5 runs beside its target.")
  :epilog("Workloads: " .. table.concat(WORKLOADS, ", ") .. ".")
parser:flag("--quick", "Shorter runs.")
parser:option("--only", "Run only the workloads whose name contains TEXT."):argname("TEXT")
local parsed, args = parser:pparse()
if not parsed then
  io.stderr:write(parser:get_usage(), "\n\nbench.lua: ", args, "\n")
  os.exit(2)
end
local quick, only = args.quick, args.only
if only then
  local any = false
  for _, name in ipairs(WORKLOADS) do any = any or name:find(only, 1, true) ~= nil end
  if not any then
    io.stderr:write(string.format("bench.lua: --only '%s' matches no workload (workloads: %s)\n", only,
      table.concat(WORKLOADS, ", ")))
    os.exit(2)
  end
end

local REPS = 5
local now = os.clock -- CPU seconds of this process: what the work costs
local function wall()
  return csm.loop():now()
end

local rss_bytes, heap_bytes = memory.rss_bytes, memory.heap_bytes

local rows = {}

-- Runs fn REPS times; fn returns a figure (higher is better unless noted).
local function measure(name, unit, target, fn, note)
  if only and not name:find(only, 1, true) then return end
  local figures = {}
  for i = 1, REPS do
    collectgarbage("collect")
    figures[i] = fn(i)
  end
  table.sort(figures)
  rows[#rows + 1] = { name = name, unit = unit, target = target, median = figures[math.ceil(REPS / 2)],
    min = figures[1], max = figures[REPS], note = note }
  io.stderr:write(string.format("  %s done\n", name))
end

local function quiet_machine(loop)
  local states = {}
  for name in pairs(csm.states) do states[name] = { behavior = false } end
  return csm.new { id = "me", initial = csm.value("genesis", 0), loop = loop, states = states }
end

-- ---- receives ----

local VOTERS, RANKS = quick and 1000 or 4000, 50

local function receive_workload(method)
  local values, voters = {}, {}
  for r = 1, RANKS do values[r] = csm.value("v" .. r, r) end
  for i = 1, VOTERS do voters[i] = "voter-" .. i end
  return function()
    local world = csm.sim { seed = 1 }
    local sm = quiet_machine(world)
    local receive = sm[method]
    local t0 = now()
    for r = 1, RANKS do
      local v = values[r]
      if method == "receive_vote" then
        for i = 1, VOTERS do receive(sm, "p", voters[i], v) end
      else
        for i = 1, VOTERS do receive(sm, voters[i], v) end
      end
      world:run("nowait")
    end
    world:run("nowait")
    local dt = now() - t0
    assert(sm:inspect().entries_held == RANKS * VOTERS)
    sm:close()
    return RANKS * VOTERS / dt
  end
end

measure("receive_vote", "calls/s", 2e6, receive_workload("receive_vote"))
measure("receive_proposal", "calls/s", 2e6, receive_workload("receive_proposal"))

-- ---- self-transitions ----

measure("self_transition", "transitions/s", 1e6, function()
  local world = csm.sim { seed = 1 }
  local sm = csm.new { id = "me", initial = csm.value("g", 0), loop = world,
    states = { voting = { behavior = function() end }, loading = { behavior = false } },
    transitions = { { from = "stopped", event = "go", to = "voting" } } }
  sm:send_event("go")
  world:run("nowait")
  local n = quick and 50000 or 200000
  local t0 = now()
  for i = 1, n do
    sm:send_event("voting_timeout")
    if i % 32 == 0 then world:run("nowait") end
  end
  world:run("nowait")
  local dt = now() - t0
  assert(sm:transition_count() == n + 1)
  sm:close()
  return n / dt
end)

-- ---- clusters ----

measure("real_cluster", "rounds/s", 500, function()
  local loop = csm.loop()
  local c = minimal.cluster { nodes = 4, loop = loop, latency = 0 }
  c:start()
  -- past starting's 1 s timeout, then count rounds over a fixed span
  loop:run_until(function() return c:lowest_height() >= 1 end, 10)
  local span = quick and 0.3 or 1
  local r0, t0 = c:lowest_height(), wall()
  loop:run_until(function() return wall() - t0 >= span end, span + 5)
  local rounds = c:lowest_height() - r0
  local dt = wall() - t0
  c:stop()
  loop:run("nowait")
  return rounds / dt
end, "wall clock")

local trivial = dofile(((arg and arg[0] or ""):match("^(.*[/\\])") or "") .. "trivial.lua")

measure("trivial_cluster_4", "rounds/s", 10000, function()
  local world, machines, heights = trivial.cluster(4)
  for _, sm in ipairs(machines) do sm:start() end
  world:run_until(function() return heights.lowest >= 1 end, 100)
  local rounds = quick and 2000 or 10000
  local r0, t0 = heights.lowest, now()
  world:run_until(function() return heights.lowest >= r0 + rounds end, 36000)
  local dt = now() - t0
  for _, sm in ipairs(machines) do sm:close() end
  return rounds / dt
end)

local function sim_cluster(n, ranks)
  return function()
    -- zero latency: every round at one virtual instant, by design
    local world = csm.sim { seed = 1, steps_per_instant = math.huge }
    local nodes, network = lab_cluster.new { protocol = reference, n = n, world = world }
    for _, node in ipairs(nodes) do node:start() end
    world:run_until(function() return nodes[1].height >= 1 end, 100)
    local r0, m0, t0 = nodes[1].height, network.stats.delivered, now()
    world:run_until(function() return checker.reached(nodes, r0 + ranks) end, 36000)
    local dt = now() - t0
    local rounds = ranks
    local delivered = network.stats.delivered - m0
    for _, node in ipairs(nodes) do node.sm:close() end
    return rounds / dt, dt / delivered * 1e6
  end
end

local per_message = {}
for _, spec in ipairs { { 4, nil, quick and 300 or 2000 }, { 16, nil, quick and 20 or 100 },
                        { 64, nil, quick and 3 or 10 }, { 100, 50, quick and 2 or 5 } } do
  local n, target, ranks = spec[1], spec[2], spec[3]
  local run = sim_cluster(n, ranks)
  local us = {}
  measure("sim_cluster_" .. n, "rounds/s", target, function(i)
    local rate, cost = run()
    us[i] = cost
    return rate
  end)
  if #us > 0 then
    table.sort(us)
    per_message[#per_message + 1] = { n = n, median = us[math.ceil(#us / 2)], min = us[1], max = us[#us] }
  end
end

-- ---- memory ----

measure("idle_machine", "bytes", 4096, function()
  local world = csm.sim { seed = 1 }
  local count = quick and 2000 or 10000
  collectgarbage("collect")
  local h0, r0 = heap_bytes(), rss_bytes()
  local machines = {}
  local genesis = csm.value("genesis", 0)
  for i = 1, count do
    -- no sync provider: loading does nothing, the machine idles there
    local sm = csm.new { id = "me", initial = genesis, loop = world }
    sm:start()
    machines[i] = sm
  end
  world:run_for(1.5) -- every machine past starting, idle in loading
  collectgarbage("collect")
  local per = (heap_bytes() - h0 + rss_bytes() - r0) / count
  for _, sm in ipairs(machines) do sm:close() end
  return per
end, "lower is better")

local soak_rounds = quick and 20000 or 100000
measure("soak", "% growth", 5, function()
  local world = csm.sim { seed = 1 }
  local c = minimal.cluster { nodes = 4, loop = world, latency = 0.01 }
  -- the cluster logs every finalized rank for its agreement check; empty
  -- that log every virtual second so only csm's own memory is measured
  local timer
  local function forget()
    for _, node in ipairs(c.nodes) do node.finalized = {} end
    timer = world:after(1, forget)
  end
  forget()
  c:start()
  -- after warm-up (the first 10 %), nine samples of heap and RSS after a
  -- full collection; messages in flight make single samples jitter, so the
  -- first three are compared with the last three
  local heap, rss = {}, {}
  for k = 1, 10 do
    world:run_until(function() return c:lowest_height() >= soak_rounds * k / 10 end, 1e9)
    if k > 1 then
      collectgarbage("collect")
      heap[#heap + 1], rss[#rss + 1] = heap_bytes(), rss_bytes()
    end
  end
  local function growth(s)
    local first, last = (s[1] + s[2] + s[3]) / 3, (s[#s] + s[#s - 1] + s[#s - 2]) / 3
    return (last - first) / first * 100
  end
  -- let messages in flight land, so nothing of this run outlives it
  timer:cancel()
  for _, node in ipairs(c.nodes) do node.sm:close() end
  world:run_for(1)
  return math.max(growth(heap), growth(rss))
end, string.format("%d rounds; lower is better", soak_rounds))

-- ---- the table ----

local function fmt(x)
  if x == nil then return "-" end
  if x >= 1e6 then return string.format("%.2fM", x / 1e6) end
  if x >= 1e4 then return string.format("%.1fk", x / 1e3) end
  if x >= 100 then return string.format("%.0f", x) end
  return string.format("%.2f", x)
end

print(string.format("csm bench (%s%s), median of %d runs [min .. max]", _VERSION,
  rawget(_G, "jit") and (" / " .. jit.version) or "", REPS))
print(string.format("%-18s %-14s %10s  %-22s %10s  %s", "workload", "unit", "median", "[min .. max]",
  "target", "note"))
for _, r in ipairs(rows) do
  local lower = r.unit == "bytes" or r.unit == "% growth"
  local ok = r.target and ((lower and r.median <= r.target) or (not lower and r.median >= r.target))
  print(string.format("%-18s %-14s %10s  %-22s %10s  %s%s", r.name, r.unit, fmt(r.median),
    "[" .. fmt(r.min) .. " .. " .. fmt(r.max) .. "]",
    r.target and ((lower and "<= " or ">= ") .. fmt(r.target)) or "-",
    r.target and (ok and "met" or "NOT met") or "", r.note and ("; " .. r.note) or ""))
end
if #per_message > 0 then
  print("")
  print("wall microseconds per delivered message (should stay flat as N grows):")
  for _, p in ipairs(per_message) do
    print(string.format("  N = %-4d %8.2f us  [%.2f .. %.2f]", p.n, p.median, p.min, p.max))
  end
end
