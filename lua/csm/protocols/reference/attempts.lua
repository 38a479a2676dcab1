--- The reference protocol's ranks and attempts: which rank a node decides,
-- which attempt it is in and when it moves on, which messages about a rank
-- and attempt it takes, and who leads. Methods of a reference node.
-- @module csm.protocols.reference.attempts

local tally = require "csm.protocols.reference.tally"

local ipairs, pairs, type = ipairs, pairs, type

local attempts = {}
local methods = {}

-- A message for an attempt more than this past the node's own (0 for the
-- next rank) is refused: peers choose attempt numbers, and the bound keeps
-- what one peer can add to a rank's maps proportional to how long the rank
-- has lasted.
attempts.SLACK = 16
local SLACK = attempts.SLACK



--- The rank being decided; starts its first attempt when it changed. What
-- arrived early for it (the next rank is recorded too) is kept.
function methods:current_rank()
  local active = self.sm:active_state()
  local rank = active and active:rank() + 1 or 1
  if self.rank ~= rank then
    local ranks = self.ranks
    local record = ranks[rank] or tally.record()
    self.ranks = { [rank] = record, [rank + 1] = ranks[rank + 1] }
    self.rank = rank
    self.attempt = 0
    self.attempt_start = self.world:now()
    self.tally, self.prevoted, self.voted = record.tally, record.prevoted, record.voted
    self.offers, self.seen_attempt = record.offers, record.seen
    self.lock = nil        -- { id =, attempt = } of this node's latest vote at this rank
    self.slot_bytes = {}   -- what this node wrote at this rank (a compaction keeps it)
    -- votes taken early, before this rank's parent was known
    tally.keep_parent(record, active and active:identity() or "genesis")
    local ahead = self.ahead
    for r in pairs(ahead) do
      if r < rank then ahead[r] = nil end
    end
  end
  return rank
end

function methods:move_to(attempt)
  self.attempt = attempt
  self.attempt_start = self.world:now()
  -- written, so that a restart resumes here; the next guarded write syncs it
  if self.write then self:write { "A", self.rank, attempt } end
  if self.note then self.note("attempt", { rank = self.rank, attempt = attempt }) end
end

--- The record of rank if a message about attempt of it is taken: the rank
-- being decided or the next, and an attempt at most SLACK past this
-- node's (0 for the next rank). Otherwise nil, why and a code; no reason
-- for a rank already decided, which the machine refuses itself.
function methods:record_for(rank, attempt)
  if type(rank) ~= "number" then return nil end
  local base
  if rank == self.rank then
    base = self.attempt
  elseif rank == self.rank + 1 then
    base = 0
  elseif rank > self.rank then
    return nil, "rank beyond the next", "far"
  else
    return nil
  end
  if type(attempt) ~= "number" or attempt < 0 or attempt % 1 ~= 0 or attempt > base + SLACK then
    return nil, "attempt out of range", "attempt"
  end
  local record = self.ranks[rank]
  if record == nil then
    record = tally.record()
    self.ranks[rank] = record
  end
  return record
end

--- The leaders of rank in the current attempt: every node, rotated. The
-- list is shared until the rotation changes: callers must not change it.
function methods:leaders(rank)
  local attempt = rank == self.rank and self.attempt or 0
  local n = self.n
  local first = (rank + attempt) % n
  local out = self.rotations[first]
  if out == nil then
    out = {}
    for i = 0, n - 1 do out[i + 1] = self.names[(first + i) % n + 1] end
    self.rotations[first] = out
  end
  return out
end

--- Whether this node holds a certificate of the rank it is deciding, or
-- f + 1 peers have moved past it.
function methods:is_behind()
  local rank, ahead = self:current_rank(), 0
  if self.ahead[rank] then return true end
  for _, name in ipairs(self.names) do
    if (self.progress[name] or 0) > rank then ahead = ahead + 1 end
  end
  return ahead > self.f
end

-- The attempt f + 1 peers have reached, if above this node's.
function methods:jump_target()
  local ahead = {}
  for _, name in ipairs(self.names) do
    local a = self.seen_attempt[name]
    if a and a > self.attempt then ahead[#ahead + 1] = a end
  end
  if #ahead <= self.f then return nil end
  table.sort(ahead, function(x, y) return x > y end)
  return ahead[self.f + 1]
end

-- How many nodes, this one included, have been seen in the current
-- attempt or a later one.
local function seen_here(self)
  local attempt, count = self.attempt, 1
  for name, a in pairs(self.seen_attempt) do
    if a >= attempt and name ~= self.name then count = count + 1 end
  end
  return count
end

--- When the current attempt ends by timeout: its view after q nodes were
-- first seen there (nil while fewer were: a node ahead waits for the
-- others, or attempts would drift apart for ever).
function methods:attempt_deadline()
  local record = self.ranks[self.rank]
  local attempt = self.attempt
  local full = record.full[attempt]
  if full == nil then
    if seen_here(self) < self.q then return nil end
    full = math.max(self.world:now(), self.attempt_start)
    record.full[attempt] = full
  end
  return full + self:view(attempt)
end

-- Moves to the next attempt when this one's view has passed, or to the one
-- f + 1 peers have reached; returns why, or nil.
function methods:advance()
  local target = self:jump_target()
  local deadline = not target and self:attempt_deadline()
  if target or (deadline and self.world:now() >= deadline) then
    if self.mark then self:mark(target and "attempt: jump to f + 1 peers" or "attempt: view timeout") end
    self:move_to(target or self.attempt + 1)
    return "attempt " .. self.attempt
  end
end

--- The methods, which csm.protocols.reference puts on its nodes.
attempts.methods = methods

return attempts
