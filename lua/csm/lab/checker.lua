--- The lab's invariants, written once: agreement (no two honest nodes
-- finalize different identities at one rank) and progress (every honest
-- node reached a target). The harness, the soak, the original's example and
-- the specs all check through here.
--
--     local agreement = checker.agreement()
--     local violation = agreement:observe("n01", 7, "7.0:n02")  -- nil, or what broke
-- @module csm.lab.checker

local check = require "csm.check"

local checker = {}

local Agreement = {}
Agreement.__index = Agreement

--- A new agreement tracker: rank -> the first honest finalization seen.
function checker.agreement()
  return setmetatable({ first = {}, violations = {} }, Agreement)
end

--- A violation as one line of text.
function checker.describe(v)
  if type(v) ~= "table" or type(v.rank) ~= "number" or type(v.nodes) ~= "table"
    or type(v.identities) ~= "table" then
    check.argerror("checker.describe", 1, "violation", "violation expected", v)
  end
  return string.format("rank %d: %s finalized %s, %s finalized %s", v.rank, v.nodes[1],
    v.identities[1], v.nodes[2], v.identities[2])
end

--- Checks finalized logs, one per node ({ name =, finalized = { [rank] =
-- identity } }): true, or nil and the first violation's description (in
-- node order, then rank order).
function checker.logs_agree(logs)
  if type(logs) ~= "table" then check.argerror("checker.logs_agree", 1, "logs", "list expected", logs) end
  local agreement = checker.agreement()
  for i, log in ipairs(logs) do
    if type(log) ~= "table" or type(log.name) ~= "string" or type(log.finalized) ~= "table" then
      check.fail("checker.logs_agree: logs[%d] must have a name and a finalized table", i)
    end
    local ranks = {}
    for rank in pairs(log.finalized) do ranks[#ranks + 1] = rank end
    table.sort(ranks)
    for _, rank in ipairs(ranks) do
      local v = agreement:observe(log.name, rank, log.finalized[rank])
      if v then return nil, checker.describe(v) end
    end
  end
  return true
end

--- Whether every node has a height of at least ranks.
function checker.reached(nodes, ranks)
  if type(nodes) ~= "table" then
    check.argerror("checker.reached", 1, "nodes", "list of nodes expected", nodes)
  end
  if type(ranks) ~= "number" then
    check.argerror("checker.reached", 2, "ranks", "number expected", ranks)
  end
  for i, node in ipairs(nodes) do
    if type(node) ~= "table" or type(node.height) ~= "number" then
      check.fail("checker.reached: nodes[%d] has no height", i)
    end
    if node.height < ranks then return false end
  end
  return true
end

--- An agreement tracker (checker.agreement()).
-- @type Agreement

--- Notes that node finalized identity at rank. Returns nil, or the
-- violation it makes: { rank =, nodes = { first, node }, identities =
-- { first's, node's } }, also appended to tracker.violations.
function Agreement:observe(node, rank, identity)
  if type(node) ~= "string" then
    check.argerror("agreement:observe", 1, "node", "node name expected", node)
  end
  if not check.is_integer(rank) or rank < 0 then
    check.argerror("agreement:observe", 2, "rank", "integer >= 0 expected", rank)
  end
  if type(identity) ~= "string" then
    check.argerror("agreement:observe", 3, "identity", "string expected", identity)
  end
  local first = self.first[rank]
  if first == nil then
    self.first[rank] = { identity = identity, node = node }
    return nil
  end
  if first.identity == identity then return nil end
  local v = { rank = rank, nodes = { first.node, node }, identities = { first.identity, identity } }
  self.violations[#self.violations + 1] = v
  return v
end

--- Forgets the ranks below rank (no honest node may finalize them again).
function Agreement:forget_below(rank)
  local kept = {}
  for r, first in pairs(self.first) do
    if r >= rank then kept[r] = first end
  end
  self.first = kept
end

--- Whether no violation was seen.
function Agreement:ok()
  return #self.violations == 0
end

return checker
