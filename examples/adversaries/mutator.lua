--- A small-scope mutator, in the spirit of ByzzFuzz: each message a
-- controlled node sends is, with probability MUTATE, changed a little — its
-- rank or its attempt one up or down (in the message and in the value it
-- carries) — or, with probability OMIT, left out. Small changes find the
-- bugs that random bytes do not: a node that trusts a peer's rank or
-- attempt a little too much. The changed message is signed again with the
-- sender's own key (a byzantine node signs what it likes, as itself).
--
--   bin/csm experiment --adversary examples/adversaries/mutator.lua --byzantine 1:adversary
local csm = require "csm"

local MUTATE, OMIT = 0.2, 0.05

-- A copy of value with its rank moved by dr, and its payload's attempt by da.
local function moved(value, dr, da)
  local payload = value.payload
  if type(payload) == "table" then
    local copy = {}
    for k, v in pairs(payload) do copy[k] = v end
    if type(copy.attempt) == "number" then copy.attempt = math.max(0, copy.attempt + da) end
    payload = copy
  end
  return csm.value(value:identity(), math.max(0, value:rank() + dr), payload)
end

return {
  name = "mutator",
  message = function(a, m)
    if not m.controlled then return nil end
    local roll = a:random()
    if roll < OMIT then return "drop" end
    if roll >= OMIT + MUTATE then return nil end
    local step = a:random(2) == 1 and -1 or 1
    local on_rank = a:random(2) == 1
    local dr, da = on_rank and step or 0, on_rank and 0 or step
    local msg = {}
    for k, v in pairs(m.msg) do msg[k] = v end
    if type(msg.rank) == "number" then msg.rank = math.max(0, msg.rank + dr) end
    if type(msg.attempt) == "number" then msg.attempt = math.max(0, msg.attempt + da) end
    if csm.is_value(msg.value) then msg.value = moved(msg.value, dr, da) end
    return { replace = a:seal(m.from, msg) }
  end,
}
