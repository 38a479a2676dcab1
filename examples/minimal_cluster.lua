#!/usr/bin/env lua
-- The minimal protocol (csm.protocols.minimal): N honest nodes on a sim
-- world, in-process delivery; prints each node's first finalized ranks and
-- whether they agree.
--
--   . scripts/env.sh && lua5.4 examples/minimal_cluster.lua --ranks 20 --nodes 4 --seed 1
local argparse = require "argparse"
local csm = require "csm"
local minimal = require "csm.protocols.minimal"
local checker = require "csm.lab.checker"

local function integer(option, min)
  return function(text)
    local n = tonumber(text)
    if not n or n % 1 ~= 0 or n < min then
      return nil, string.format("%s: an integer >= %d expected (got '%s')", option, min, text)
    end
    return n
  end
end

local parser = argparse("minimal_cluster.lua", "Run the minimal protocol's cluster on a sim world.")
parser:option("--ranks", "Ranks every node finalizes.", "20"):convert(integer("--ranks", 0))
parser:option("--nodes", "Number of nodes.", "4"):convert(integer("--nodes", 1))
parser:option("--seed", "Seed of the sim world.", "1"):convert(integer("--seed", 0))
parser:option("--latency", "Seconds per message.", "0.05"):convert(tonumber)
local ok, args = parser:pparse()
if not ok then
  io.stderr:write(parser:get_usage(), "\n\nError: ", args, "\n")
  os.exit(2)
end

local world = csm.sim { seed = args.seed }
local c = minimal.cluster { nodes = args.nodes, loop = world, latency = args.latency }
local clock = os.clock()
c:start()
local done = world:run_until(function() return c:lowest_height() >= args.ranks end, 24 * 3600)
local wall = os.clock() - clock

for _, node in ipairs(c.nodes) do
  local list = {}
  for r = 1, node.height do list[#list + 1] = string.format("%d:%s", r, node.finalized[r] or "?") end
  print(string.format("%-5s %4d finalized  state=%-14s %s", node.name, node.height, node.sm:state(),
    table.concat(list, " ", 1, math.min(#list, 8)) .. (#list > 8 and " ..." or "")))
end
local agree, why = checker.logs_agree(c.nodes)
print(string.format("virtual time %.2f s, cpu %.3f s, %d messages, agreement: %s",
  world:now(), wall, c.delivered, agree and "yes" or why))
c:stop()
os.exit((done and agree) and 0 or 1)
