--- Fault schedules drawn from a seed: what `csm sweep --partitions A-B`
-- and `--swarm` give each seed. The draws come from their own generator
-- (Park and Miller's minimal standard, exact in a double on both
-- interpreters), seeded by the run's seed, so a seed's schedule is the
-- same in every process and the world's own draws are left alone. What is
-- drawn is an explicit list (csm.lab.faults), written into each run file.
-- @module csm.lab.generate

local fnv = require "csm.fnv"

local generate = {}

local Draw = {}
Draw.__index = Draw

--- A generator for seed (an integer; any integer gives a usable state).
function generate.draw(seed)
  -- neighbouring seeds must not start on neighbouring states (the first
  -- draws of a small state are small): the seed's digits are hashed first
  local h = fnv.hash32(string.format("%.0f", seed))
  local d = setmetatable({ state = h % 2147483646 + 1 }, Draw)
  d:float()
  return d
end

--- A float in [0, 1).
function Draw:float()
  self.state = (self.state * 16807) % 2147483647
  return (self.state - 1) / 2147483646
end

--- An integer in [lo, hi].
function Draw:int(lo, hi)
  return lo + math.floor(self:float() * (hi - lo + 1))
end

--- A number in [lo, hi), rounded to milliseconds (schedules stay short to
-- read and exact to write).
function Draw:between(lo, hi)
  return math.floor((lo + self:float() * (hi - lo)) * 1000 + 0.5) / 1000
end

-- names split in two non-empty groups, in the order of the names.
local function split(d, names)
  local groups = { {}, {} }
  local order = {}
  for i = 1, #names do order[i] = names[i] end
  for i = #order, 2, -1 do
    local j = d:int(1, i)
    order[i], order[j] = order[j], order[i]
  end
  local cut = d:int(1, #order - 1)
  local side = {}
  for i, name in ipairs(order) do side[name] = i <= cut and 1 or 2 end
  for _, name in ipairs(names) do
    local g = groups[side[name]]
    g[#g + 1] = name
  end
  return groups
end

--- count partitions (count drawn from [lo, hi]) into two groups of names,
-- each starting in [0, horizon) and lasting 0.1 to horizon / 2 seconds.
function generate.partitions(d, names, lo, hi, horizon)
  local out = {}
  if #names < 2 then return out end
  for _ = 1, d:int(lo, hi) do
    out[#out + 1] = { kind = "partition", at = d:between(0, horizon), duration = d:between(0.1, horizon / 2),
                      groups = split(d, names) }
  end
  return out
end

-- The rates a swarm draws from, as TigerBeetle's VOPR does: each seed
-- turns some faults off altogether, and the others on at one of a few rates.
local RATES = { loss = { 0.01, 0.05, 0.1, 0.2 }, duplicate = { 0.01, 0.05 }, reorder = { 0.05, 0.2 } }
local RATE_ORDER = { "loss", "duplicate", "reorder" }

--- A swarm's draw for one seed: { loss, duplicate, reorder } (each 0 half
-- the time) and a schedule of 0 to 3 partitions, 0 to 1 isolations and 0
-- to 1 pauses of a node, over horizon seconds.
function generate.swarm(d, names, horizon)
  local rates = {}
  for _, k in ipairs(RATE_ORDER) do
    local list = RATES[k]
    rates[k] = d:float() < 0.5 and 0 or list[d:int(1, #list)]
  end
  local schedule = generate.partitions(d, names, 0, 3, horizon)
  if d:float() < 0.5 then
    schedule[#schedule + 1] = { kind = "isolate", node = names[d:int(1, #names)], at = d:between(0, horizon),
                                duration = d:between(0.1, horizon / 2) }
  end
  if d:float() < 0.5 then
    schedule[#schedule + 1] = { kind = "pause", node = names[d:int(1, #names)], at = d:between(0, horizon),
                                duration = d:between(0.1, horizon / 4) }
  end
  return rates, schedule
end

return generate
