--- The lab's invariants, written once: agreement (no two honest nodes
-- finalize different states at one rank: different identities, or one
-- identity with different digests) and progress (every honest node reached
-- a target). The harness, the soak, the original's example and
-- the specs all check through here.
--
--     local agreement = checker.agreement()
--     local violation = agreement:observe("n01", 7, "7.0:n02")  -- nil, or what broke
-- @module csm.lab.checker

local csm = require "csm"
local check = require "csm.check"

local checker = {}

local Agreement = {}
Agreement.__index = Agreement

-- The canonical text of plain data: type-tagged, table keys sorted.
local function canonical(x, out)
  local t = type(x)
  if t == "string" then
    out[#out + 1] = string.format("s%d:%s", #x, x)
  elseif t == "number" then
    out[#out + 1] = x % 1 == 0 and x >= -2 ^ 53 and x <= 2 ^ 53 and string.format("i%d;", x)
      or string.format("n%.17g;", x)
  elseif t == "boolean" or t == "nil" then
    out[#out + 1] = tostring(x):sub(1, 1)
  elseif csm.is_value(x) then
    out[#out + 1] = "v"
    canonical(x:identity(), out)
    canonical(x:rank(), out)
    canonical(x.payload, out)
  elseif t == "table" then
    local keys = {}
    for k in pairs(x) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      local ta, tb = type(a), type(b)
      if ta ~= tb then return ta < tb end
      if ta == "boolean" then return (a and 1 or 0) < (b and 1 or 0) end
      return a < b
    end)
    out[#out + 1] = "{"
    for _, k in ipairs(keys) do
      canonical(k, out)
      canonical(x[k], out)
    end
    out[#out + 1] = "}"
  else
    out[#out + 1] = "?" .. t
  end
end

--- The digest of a finalized state: its identity, rank and payload as
-- canonical text (table keys sorted). A protocol whose states carry what
-- may differ between honest copies (the attempt a proposal was offered in,
-- say) gives its own digest of what must agree.
function checker.digest(state)
  if not csm.is_value(state) then
    check.argerror("checker.digest", 1, "state", "csm value expected", state)
  end
  local out = {}
  canonical(state, out)
  return table.concat(out)
end

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
  if v.identities[1] == v.identities[2] then
    return string.format("rank %d: %s and %s finalized %s with different contents (digests differ)",
      v.rank, v.nodes[1], v.nodes[2], v.identities[1])
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

--- Notes that node finalized identity at rank, with digest (a string, or
-- nil: identities alone are compared). Returns nil, or the violation it
-- makes: { rank =, nodes = { first, node }, identities = { first's, node's
-- }, digests = { first's, node's } }, also appended to tracker.violations.
function Agreement:observe(node, rank, identity, digest)
  if type(node) ~= "string" then
    check.argerror("agreement:observe", 1, "node", "node name expected", node)
  end
  if not check.is_integer(rank) or rank < 0 then
    check.argerror("agreement:observe", 2, "rank", "integer >= 0 expected", rank)
  end
  if type(identity) ~= "string" then
    check.argerror("agreement:observe", 3, "identity", "string expected", identity)
  end
  if digest ~= nil and type(digest) ~= "string" then
    check.argerror("agreement:observe", 4, "digest", "string or nil expected", digest)
  end
  local first = self.first[rank]
  if first == nil then
    self.first[rank] = { identity = identity, node = node, digest = digest }
    return nil
  end
  if first.identity == identity and (digest == nil or first.digest == nil or first.digest == digest) then
    return nil
  end
  local v = { rank = rank, nodes = { first.node, node }, identities = { first.identity, identity },
              digests = { first.digest, digest } }
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
