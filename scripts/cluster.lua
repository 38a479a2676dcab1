#!/usr/bin/env lua
-- Runs a 4-node honest cluster on a sim world and prints each node's
-- finalized ranks.  Usage: lua scripts/cluster.lua [ranks] [nodes] [seed]
local csm = require "csm"
local cluster = require "csm.cluster"

local ranks = tonumber(arg[1]) or 20
local nodes = tonumber(arg[2]) or 4
local seed = tonumber(arg[3]) or 1

local world = csm.sim { seed = seed }
local c = cluster.new { nodes = nodes, loop = world, latency = 0.05 }
local clock = os.clock()
c:start()
local done = world:run_until(function() return c:min_finalized() >= ranks end, 24 * 3600)
local wall = os.clock() - clock

for _, node in ipairs(c.nodes) do
  local list = {}
  for r = 1, node.height do list[#list + 1] = string.format("%d:%s", r, node.finalized[r] or "?") end
  print(string.format("%-8s %4d finalized  state=%-14s %s", node.id, node.height, node.sm:state(),
    table.concat(list, " ", 1, math.min(#list, 8)) .. (#list > 8 and " ..." or "")))
end
local ok, err = c:agreement()
print(string.format("virtual time %.2f s, cpu %.3f s, %d messages, agreement: %s",
  world:now(), wall, c.delivered, ok and "yes" or err))
c:stop()
os.exit((done and ok) and 0 or 1)
