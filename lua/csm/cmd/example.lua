--- `csm example`: the original machine's own example — four nodes, one of
-- them a malicious voter that sends conflicting votes to different peers
-- and votes twice. Honest nodes refuse the bad votes and still agree on
-- every finalized rank.
-- @module csm.cmd.example

local cmd = require "csm.cmd"
local csm = require "csm"
local net = require "csm.lab.net"
local signer = require "csm.lab.signer"
local checker = require "csm.lab.checker"
local reference = require "csm.protocols.reference"

local example = {}

example.summary = "The original's example: 4 nodes, one double voter; the honest ones agree."

function example.add(c)
  c:description([[
Four reference nodes on a sim world, n03 a malicious voter (conflicting votes
to different peers, and a second vote). Runs until every honest node has
finalized --ranks ranks, then prints what each refused, by kind and code,
and whether the honest nodes agree (exit status 1 if not).]])
  c:option("--ranks", "Ranks every honest node finalizes.", "20"):convert(cmd.integer("--ranks", 0))
  cmd.seed_option(c)
end

function example.run(args)
  local world = csm.sim { seed = args.seed }
  local network = net.new(world, { latency = 0.01, jitter = 0.005 })
  local names = net.names(4)
  local roles = { n03 = "double_vote" }
  local nodes, honest = {}, {}
  local keyring = signer.keyring(args.seed, names)
  for i, name in ipairs(names) do
    nodes[i] = reference.node { name = name, names = names, world = world, network = network,
      role = roles[name], initial = csm.value("genesis", 0), signer = keyring:signer(name) }
    if nodes[i].role == "honest" then honest[#honest + 1] = nodes[i] end
  end
  for _, node in ipairs(nodes) do node:start() end
  world:run_until(function() return checker.reached(honest, args.ranks) end, 3600)

  print(string.format("after %.2f virtual seconds:", world:now()))
  for _, node in ipairs(nodes) do
    print(string.format("  %s %-14s finalized %3d ranks; refused %d messages", node.name,
      "(" .. node.role .. ")", node.height, node.refused))
    local reasons = {}
    for reason in pairs(node.refusals) do reasons[#reasons + 1] = reason end
    table.sort(reasons)
    for _, reason in ipairs(reasons) do
      print(string.format("      %4d x %-20s e.g. %s", node.refusals[reason], reason,
        node.refusal_examples[reason]))
    end
  end
  print("(stale: a message for a rank the node had already finalized; conflict: a second,\n" ..
    "different vote from the same voter in the same attempt)")
  local agree, why = checker.logs_agree(honest)
  print("honest nodes agree on every rank: " .. (agree and "yes" or ("NO, " .. why)))
  for _, node in ipairs(nodes) do node.sm:close() end
  return agree and cmd.OK or cmd.VIOLATED
end

return example
