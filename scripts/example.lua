#!/usr/bin/env lua
-- The seed's own example: four nodes, one of them a malicious voter that
-- sends conflicting votes to different peers and votes twice. Honest nodes
-- refuse the bad votes ("receive vote: received conflicting vote") and
-- still agree on every finalized rank.
--   lua5.4 scripts/example.lua [ranks]
local csm = require "csm"
local net = require "csm.lab.net"
local reference = require "csm.protocols.reference"

local ranks = tonumber(arg[1]) or 20
local world = csm.sim { seed = 1 }
local network = net.new(world, { latency = 0.01, jitter = 0.005 })
local names = { "n01", "n02", "n03", "n04" }
local roles = { n03 = "double_vote" }
local nodes = {}
for i, name in ipairs(names) do
  nodes[i] = reference.node { name = name, names = names, world = world, network = network,
    role = roles[name], initial = csm.value("genesis", 0) }
end
for _, node in ipairs(nodes) do node:start() end
world:run_until(function()
  for _, node in ipairs(nodes) do
    if node.role == "honest" and node.height < ranks then return false end
  end
  return true
end, 3600)

print(string.format("after %.2f virtual seconds:", world:now()))
local agree = true
for _, node in ipairs(nodes) do
  print(string.format("  %s %-14s finalized %3d ranks; refused %d messages", node.name,
    node.role == "honest" and "(honest)" or "(" .. node.role .. ")", node.height, node.refused))
  local reasons = {}
  for reason in pairs(node.refusals) do reasons[#reasons + 1] = reason end
  table.sort(reasons)
  for _, reason in ipairs(reasons) do
    print(string.format("      %4d x %s", node.refusals[reason], reason))
  end
  if node.role == "honest" then
    for rank = 1, ranks do
      if node.finalized[rank] ~= nodes[1].finalized[rank] then agree = false end
    end
  end
end
print("(stale: a message for a rank the node had already finalized; conflicting: a second,\n" ..
  "different vote from the same voter in the same attempt)")
print("honest nodes agree on every rank: " .. (agree and "yes" or "NO"))
for _, node in ipairs(nodes) do node.sm:close() end
os.exit(agree and 0 or 1)
