#!/usr/bin/env lua
-- Workloads for instruction counts: tools/icount.sh runs each under
-- valgrind --tool=callgrind at two sizes, so set-up cancels out.
--
--   lua5.4 tools/icount.lua receive_vote N      N distinct voters at each of 50
--                                                 ranks into a machine whose
--                                                 behaviours are off; events handled
--   lua5.4 tools/icount.lua self_transition N   N voting -> voting transitions
--   lua5.4 tools/icount.lua trivial_cluster N   4 machines of trivial providers,
--                                                 zero latency, until each finalized
--                                                 N ranks (csm's machinery alone)
--   lua5.4 tools/icount.lua sim_cluster K N     K reference nodes, zero latency,
--                                                 until every node finalized N ranks
--   lua5.4 tools/icount.lua idle_machine N      N idle machines: prints the bytes of
--                                                 RSS and of Lua heap per machine
local csm = require "csm"

local workload = arg[1]

-- A machine that runs no behaviour: receives are stored and their events
-- handled (dropped in loading), nothing else.
local function quiet_machine(world)
  local states = {}
  for name in pairs(csm.states) do states[name] = { behavior = false } end
  return csm.new { id = "me", initial = csm.value("genesis", 0), loop = world, states = states }
end

-- the trivial cluster, shared with tools/bench.lua
local trivial = dofile(((arg and arg[0] or ""):match("^(.*[/\\])") or "") .. "trivial.lua")

if workload == "receive_vote" then
  local n = assert(tonumber(arg[2]), "usage: icount.lua receive_vote N")
  local world = csm.sim { seed = 1 }
  local sm = quiet_machine(world)
  local voters, values = {}, {}
  for i = 1, n do voters[i] = "voter-" .. i end
  for r = 1, 50 do values[r] = csm.value("v" .. r, r) end
  local receive = sm.receive_vote
  for r = 1, 50 do
    local v = values[r]
    for i = 1, n do receive(sm, "p", voters[i], v) end
    world:run("nowait")
  end
  world:run("nowait")
  assert(sm:inspect().entries_held == 50 * n)
  sm:close()
elseif workload == "self_transition" then
  local n = assert(tonumber(arg[2]), "usage: icount.lua self_transition N")
  local world = csm.sim { seed = 1 }
  local sm = csm.new { id = "me", initial = csm.value("g", 0), loop = world,
    states = { voting = { behavior = function() end }, loading = { behavior = false } },
    transitions = { { from = "stopped", event = "go", to = "voting" } } }
  sm:send_event("go")
  world:run("nowait")
  for i = 1, n do
    sm:send_event("voting_timeout")
    if i % 32 == 0 then world:run("nowait") end
  end
  world:run("nowait")
  assert(sm:transition_count() == n + 1)
  sm:close()
elseif workload == "trivial_cluster" then
  local ranks = assert(tonumber(arg[2]), "usage: icount.lua trivial_cluster N")
  local world, machines, heights = trivial.cluster(4)
  for _, sm in ipairs(machines) do sm:start() end
  assert(world:run_until(function() return heights.lowest >= ranks end, 36000))
  for _, sm in ipairs(machines) do sm:close() end
elseif workload == "sim_cluster" then
  local reference = require "csm.protocols.reference"
  local cluster = require "csm.lab.cluster"
  local checker = require "csm.lab.checker"
  local k, ranks = assert(tonumber(arg[2])), assert(tonumber(arg[3]))
  -- zero latency: every round at one virtual instant, by design
  local world = csm.sim { seed = 1, steps_per_instant = math.huge }
  local nodes, network = cluster.new { protocol = reference, n = k, world = world }
  for _, node in ipairs(nodes) do node:start() end
  assert(world:run_until(function() return checker.reached(nodes, ranks) end, 36000))
  io.stderr:write(string.format("delivered %d\n", network.stats.delivered))
  for _, node in ipairs(nodes) do node.sm:close() end
elseif workload == "idle_machine" then
  local memory = require "csm.lab.memory"
  local n = assert(tonumber(arg[2]), "usage: icount.lua idle_machine N")
  local world = csm.sim { seed = 1 }
  local genesis = csm.value("genesis", 0)
  local machines = {}
  local h0, r0 = memory.heap_bytes(true), memory.rss_bytes()
  for i = 1, n do
    -- no sync provider: loading does nothing, the machine idles there
    local sm = csm.new { id = "me", initial = genesis, loop = world }
    sm:start()
    machines[i] = sm
  end
  world:run_for(1.5)
  local h1, r1 = memory.heap_bytes(true), memory.rss_bytes()
  print(string.format("idle_machine: %d bytes of RSS per machine (%d of Lua heap)",
    math.floor((r1 - r0) / n), math.floor((h1 - h0) / n)))
  for _, sm in ipairs(machines) do sm:close() end
else
  io.stderr:write("usage: icount.lua receive_vote N | self_transition N | trivial_cluster N"
    .. " | sim_cluster K N | idle_machine N\n")
  os.exit(2)
end
