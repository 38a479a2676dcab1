#!/usr/bin/env lua
-- Workloads for instruction counts: tools/icount.sh runs each under
-- valgrind --tool=callgrind at two sizes, so set-up cancels out.
--
--   lua5.4 tools/icount.lua self_transition N   N voting -> voting transitions
--   lua5.4 tools/icount.lua sim_cluster K N     K reference nodes, zero latency,
--                                                 until every node finalized N ranks
local csm = require "csm"

local workload = arg[1]
if workload == "self_transition" then
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
else
  io.stderr:write("usage: icount.lua self_transition N | sim_cluster K N\n")
  os.exit(2)
end
