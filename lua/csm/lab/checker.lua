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

-- ---- the run's monitor: validity, honest equivocation, accountability,
-- assertions ----

local Monitor = {}
Monitor.__index = Monitor

-- How many ranks below the highest finalized one the monitor keeps votes
-- and sent messages for: enough for any violation it reports to be
-- explained, and a long run stays bounded.
local KEPT = 64

--- A monitor of a run's messages and finalizations. o: honest (a set of
-- node names), content = fn(msg) -> string or nil (what an honest node may
-- send only one of per kind, rank and attempt; nil: not checked),
-- classify = fn(msg) -> kind, rank, attempt, vote = fn(msg) -> identity
-- or nil (a vote's), valid = fn(state, previous) -> true | nil, why, or
-- nil (then: a state's parent, when it has one, is what the node finalized
-- at the rank before).
function checker.monitor(o)
  if type(o) ~= "table" then check.argerror("checker.monitor", 1, "options", "table expected", o) end
  return setmetatable({
    honest = o.honest or {}, content = o.content, classify = o.classify, vote = o.vote, valid = o.valid,
    sent = {}, votes = {}, last = {}, findings = {}, seen = {}, top = 0, low = 0,
  }, Monitor)
end

--- The default vote classification: a message of kind "vote" whose value
-- is a csm value votes for its identity.
function checker.vote_of(msg)
  if type(msg) == "table" and msg.kind == "vote" and csm.is_value(msg.value) then
    return msg.value:identity()
  end
  return nil
end

--- The default content of a message for the equivocation check: its
-- canonical text.
function checker.content_of(msg)
  local out = {}
  canonical(msg, out)
  return table.concat(out)
end

--- A monitor of a run (checker.monitor).
-- @type Monitor

local function finding(self, invariant, text, fields)
  local f = { invariant = invariant, text = text }
  for k, v in pairs(fields or {}) do f[k] = v end
  self.findings[#self.findings + 1] = f
  return f
end

local function slot(t, a, b)
  local x = t[a]
  if x == nil then x = {}; t[a] = x end
  local y = x[b]
  if y == nil then y = {}; x[b] = y end
  return y
end

-- node knows of voter's vote for identity at rank.
local function count_vote(self, node, rank, identity, voter)
  local by = slot(self.votes, node, rank)
  local voters = by[identity]
  if voters == nil then voters = {}; by[identity] = voters end
  voters[voter] = true
end

--- A message was sent from: an honest sender's second, different message
-- of one kind, rank and attempt is an equivocation.
function Monitor:on_send(from, msg)
  -- a publish hands the same copy over for every receiver: once is enough
  if msg == self.last_msg and from == self.last_from then return end
  self.last_msg, self.last_from = msg, from
  local kind, rank, attempt = self.classify(msg)
  if kind == nil or rank == nil or rank < self.low then return end
  local identity = self.vote(msg)
  if identity then count_vote(self, from, rank, identity, from) end
  if not self.honest[from] then return end
  local content = self.content(msg)
  if content == nil then return end
  local key = kind .. "/" .. tostring(attempt)
  local mine = slot(self.sent, from, rank)
  local first = mine[key]
  if first == nil then
    mine[key] = content
  elseif first ~= content and not mine[key .. "!"] then
    mine[key .. "!"] = true
    finding(self, "equivocation", string.format("honest node %s sent two different %s messages at rank %d%s",
      from, kind, rank, attempt and (" attempt " .. tostring(attempt)) or ""),
      { node = from, kind = kind, rank = rank, attempt = attempt, contents = { first, content } })
  end
end

--- Node came back from a crash with its store: recovered is a list of {
-- kind, rank, attempt, content } (what the protocol read back, as
-- classify and content name messages) and height the rank it had
-- finalized. Every slot it sent above height before the crash must be
-- among them, with the same content: a message that left before what
-- guards it was written is a durability violation.
function Monitor:on_recover(node, height, recovered)
  if not self.honest[node] then return end
  local have = {} -- rank -> { ["kind/attempt"] = content }
  for _, s in ipairs(recovered) do
    local mine = have[s[2]] or {}
    have[s[2]] = mine
    mine[s[1] .. "/" .. tostring(s[3])] = s[4]
  end
  local ranks = self.sent[node]
  if ranks == nil then return end
  local list = {}
  for rank in pairs(ranks) do
    if rank > height then list[#list + 1] = rank end
  end
  table.sort(list)
  for _, rank in ipairs(list) do
    local keys = {}
    for key in pairs(ranks[rank]) do
      if key:sub(-1) ~= "!" then keys[#keys + 1] = key end
    end
    table.sort(keys)
    local got = have[rank] or {}
    for _, key in ipairs(keys) do
      local content = ranks[rank][key]
      if got[key] ~= content then
        local kind, attempt = key:match("^(.-)/(.*)$")
        finding(self, "durability", string.format(
          "honest node %s came back without the %s it sent at rank %d "
          .. "attempt %s (%s; it recovered %s)", node, kind, rank, attempt, tostring(content),
          got[key] and tostring(got[key]) or "nothing there"),
          { node = node, kind = kind, rank = rank, attempt = tonumber(attempt) })
        return
      end
    end
  end
end

--- Node lost what it wrote down (its disk): that counts as a byzantine
-- fault, and what it sends is not held against it any more.
function Monitor:forget(node)
  self.honest[node] = nil
end

--- A message from -> to was delivered: a vote is counted for to.
function Monitor:on_deliver(from, to, msg)
  local identity = self.vote(msg)
  if identity == nil then return end
  local _, rank = self.classify(msg)
  if rank == nil or rank < self.low then return end
  count_vote(self, to, rank, identity, from)
end

--- The voters node knew of for identity at rank (its own vote included),
-- sorted.
function Monitor:voters(node, rank, identity)
  local out = {}
  for voter in pairs(((self.votes[node] or {})[rank] or {})[identity] or {}) do out[#out + 1] = voter end
  table.sort(out)
  return out
end

--- node finalized state at rank: validity is checked (the protocol's
-- predicate, or the parent link).
function Monitor:on_finalize(node, rank, state)
  local previous = self.last[node]
  if self.honest[node] then
    local ok, why
    if self.valid then
      ok, why = self.valid(state, previous and previous.rank == rank - 1 and previous.state or nil)
    else
      local parent = state.parent
      ok = true
      if type(parent) == "string" and previous and previous.rank == rank - 1
        and parent ~= previous.state:identity() then
        ok, why = false, string.format("its parent %s is not %s, which %s finalized at rank %d", parent,
          previous.state:identity(), node, rank - 1)
      end
    end
    if not ok then
      finding(self, "validity", string.format("%s finalized %s at rank %d: %s", node, state:identity(), rank,
        tostring(why or "the protocol's predicate refused it")), { node = node, rank = rank })
    end
  end
  self.last[node] = { rank = rank, state = state }
  if rank > self.top then
    self.top = rank
    local low = rank - KEPT
    if low > self.low + KEPT then
      self.low = low
      for _, t in ipairs { self.sent, self.votes } do
        for _, by in pairs(t) do
          for r in pairs(by) do if r < low then by[r] = nil end end
        end
      end
    end
  end
end

--- Accountability of an agreement violation v: the quorums of votes each
-- side knew of, and the nodes in both (those that voted for two states).
function Monitor:account(v)
  local a = self:voters(v.nodes[1], v.rank, v.identities[1])
  local b = self:voters(v.nodes[2], v.rank, v.identities[2])
  local in_a, both = {}, {}
  for _, n in ipairs(a) do in_a[n] = true end
  for _, n in ipairs(b) do
    if in_a[n] then both[#both + 1] = n end
  end
  return { quorums = { a, b }, both = both }
end

--- An assertion a protocol makes: always(name, cond, detail) must hold at
-- every call, sometimes(name, cond) at one call at least in a run.
function Monitor:always(node, name, cond, detail)
  if cond then return end
  local key = node .. "/" .. name
  if self.seen[key] then return end
  self.seen[key] = true
  finding(self, "always", string.format("%s: always '%s' failed%s", node, name,
    detail ~= nil and (": " .. tostring(detail)) or ""), { node = node, name = name })
end

function Monitor:sometimes(name, cond)
  self.seen_sometimes = self.seen_sometimes or {}
  if cond then
    self.seen_sometimes[name] = true
  elseif self.seen_sometimes[name] == nil then
    self.seen_sometimes[name] = false
  end
end

--- The sometimes assertions never seen to hold, sorted.
function Monitor:never_seen()
  local out = {}
  for name, hit in pairs(self.seen_sometimes or {}) do
    if not hit then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

return checker
