--- The reference protocol's ranks and attempts: which rank a node decides,
-- which attempt it is in and when it moves on, which messages about a rank
-- and attempt it takes, and who leads. Methods of a reference node.
-- @module csm.protocols.reference.attempts

local tally = require "csm.protocols.reference.tally"

local ipairs, type = ipairs, type

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
  end
  return rank
end

function methods:move_to(attempt)
  self.attempt = attempt
  self.attempt_start = self.world:now()
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

--- Whether f + 1 peers have moved past the rank this node is deciding.
function methods:is_behind()
  local rank, ahead = self:current_rank(), 0
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

-- Moves to the next attempt when this one's view_timeout has passed, or to
-- the one f + 1 peers have reached; returns why, or nil.
function methods:advance()
  local target = self:jump_target()
  if target or self.world:now() >= self.attempt_start + self.view_timeout then
    if self.mark then self:mark(target and "attempt: jump to f + 1 peers" or "attempt: view timeout") end
    self:move_to(target or self.attempt + 1)
    return "attempt " .. self.attempt
  end
end

--- The methods, which csm.protocols.reference puts on its nodes.
attempts.methods = methods

return attempts
