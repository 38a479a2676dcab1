--- Shrinking a failing run file: the smallest run found that still fails
-- with the same signature (the same invariant and kind of failure, not
-- another failure). In turn, until a whole round changes nothing or the
-- budget of runs is spent:
--
-- 1. faults deleted, by delta debugging (halves, then quarters, ..., then
--    one at a time);
-- 2. loss, duplication, reordering and jitter set to 0, one at a time,
--    and loss a run needs turned into the drops it made (named by sender,
--    receiver, kind, rank, attempt and occurrence), which step 1 then cuts;
-- 3. fewer ranks (the run stops once the violation's rank is reached);
-- 4. fewer nodes (faults lose the nodes that are gone);
-- 5. each fault simplified: shorter, later, and a partition's groups cut
--    to two.
--
-- Each try is a run in this process; a try that raises counts as not
-- failing.
-- @module csm.lab.shrink

local harness = require "csm.lab.harness"
local runfile = require "csm.lab.runfile"
local net = require "csm.lab.net"

local shrink = {}

local function deep(x)
  if type(x) ~= "table" then return x end
  local out = {}
  for k, v in pairs(x) do out[k] = deep(v) end
  return out
end

local Shrinker = {}
Shrinker.__index = Shrinker

--- A shrinker for run file rf (read from path), with budget runs at most
-- and on_step(text) told of each kept step. Raises when rf's modules
-- cannot be loaded.
function shrink.new(rf, path, budget, on_step)
  local self = setmetatable({ rf = deep(rf), path = path, budget = budget or 500, runs = 0,
                              on_step = on_step or function() end }, Shrinker)
  local c = runfile.config(self.rf, path)
  self.protocol, self.adversary, self.adversary_source = c.protocol, c.adversary, c.adversary_source
  return self
end

-- The outcome of candidate (a run file), or nil when the budget is spent.
function Shrinker:outcome(candidate, trace_path)
  if self.runs >= self.budget then return nil end
  self.runs = self.runs + 1
  local c = {}
  for k, v in pairs(candidate.config) do c[k] = deep(v) end
  c.seed, c.schedule, c.partitions, c.trace = candidate.seed, deep(candidate.schedule), {}, trace_path
  c.protocol, c.adversary, c.adversary_source = self.protocol, self.adversary, self.adversary_source
  local ok, r = pcall(harness.run, c)
  if not ok then return { verdict = "error", signature = "error" } end
  return runfile.outcome(r), r
end

--- Whether candidate still fails as the original: if so it becomes the
-- current run, with its outcome.
function Shrinker:try(candidate, what)
  local o, r = self:outcome(candidate)
  if o == nil then return false end
  if o.verdict == self.rf.expect.verdict and o.signature == self.rf.expect.signature then
    candidate.expect = o
    self.rf = candidate
    self.report = r
    self.on_step(what)
    return true
  end
  return false
end

function Shrinker:spent() return self.runs >= self.budget end

-- Delta debugging over the schedule: remove chunks while the run fails.
function Shrinker:faults()
  local changed = false
  local chunk = math.max(1, math.floor(#self.rf.schedule / 2))
  while chunk >= 1 and #self.rf.schedule > 0 and not self:spent() do
    local i, removed = 1, false
    while i <= #self.rf.schedule and not self:spent() do
      local candidate = deep(self.rf)
      local kept = {}
      for k, f in ipairs(candidate.schedule) do
        if k < i or k >= i + chunk then kept[#kept + 1] = f end
      end
      candidate.schedule = kept
      local n = math.min(chunk, #self.rf.schedule - i + 1)
      local what = string.format("deleted %d fault%s (%d left)", n, n == 1 and "" or "s", #kept)
      if self:try(candidate, what) then
        removed, changed = true, true
      else
        i = i + chunk
      end
    end
    if not removed then chunk = math.floor(chunk / 2) end
  end
  return changed
end

local RATES = { "loss", "duplicate", "reorder", "jitter" }

function Shrinker:rates()
  local changed = false
  for _, k in ipairs(RATES) do
    if (self.rf.config[k] or 0) > 0 and not self:spent() then
      local candidate = deep(self.rf)
      candidate.config[k] = 0
      if self:try(candidate, k .. " set to 0") then changed = true end
    end
  end
  return changed
end

-- The random losses of the current run, as named drops: sender,
-- receiver, kind, rank, attempt and which copy of those it was.
function Shrinker:losses()
  local path = os.tmpname()
  local o = self:outcome(self.rf, path)
  if o == nil then os.remove(path) return nil end
  local cjson = require "cjson"
  local count, occurrence, drops = {}, {}, {}
  local function key(e) return table.concat({ e.node, e.to, tostring(e.message), tostring(e.rank),
                                              tostring(e.attempt) }, "|") end
  for line in io.lines(path) do
    if line:find('"kind":"send"', 1, true) then
      local e = cjson.decode(line)
      local k = key(e)
      count[k] = (count[k] or 0) + 1
      occurrence[e.id] = count[k]
    elseif line:find('"why":"loss"', 1, true) then
      local e = cjson.decode(line)
      if e.message ~= nil then
        drops[#drops + 1] = { kind = "drop", from = e.node, to = e.to, message = e.message,
                              rank = e.rank ~= nil and math.floor(e.rank) or nil,
                              attempt = e.attempt ~= nil and math.floor(e.attempt) or nil,
                              occurrence = occurrence[e.id] }
      end
    end
  end
  os.remove(path)
  return drops
end

-- Random loss turned into the drops it made, so that delta debugging can
-- cut them down one by one.
function Shrinker:drops()
  local loss = self.rf.config.loss or 0
  if loss == 0 or self:spent() then return false end
  local drops = self:losses()
  if drops == nil then return false end
  local candidate = deep(self.rf)
  candidate.config.loss = 0
  for _, d in ipairs(drops) do candidate.schedule[#candidate.schedule + 1] = d end
  return self:try(candidate, string.format("loss %g turned into %d named drops", loss, #drops))
end

function Shrinker:ranks()
  local changed = false
  local rank = self.rf.expect.rank
  local ranks = self.rf.config.ranks or 100
  if rank and rank < ranks then
    local candidate = deep(self.rf)
    candidate.config.ranks = rank
    if self:try(candidate, "ranks cut to " .. rank) then changed = true end
  end
  return changed
end

-- The schedule without node name: faults about it go, groups lose it.
local function without(schedule, gone)
  local out = {}
  for _, f in ipairs(schedule) do
    local keep = true
    if f.node and gone[f.node] then keep = false end
    if (f.a and gone[f.a]) or (f.b and gone[f.b]) then keep = false end
    local g = deep(f)
    if g.groups then
      local groups = {}
      for _, group in ipairs(g.groups) do
        local left = {}
        for _, name in ipairs(group) do if not gone[name] then left[#left + 1] = name end end
        if #left > 0 then groups[#groups + 1] = left end
      end
      g.groups = groups
      if #groups < 2 and g.kind == "partition" then keep = false end
    end
    for _, key in ipairs { "from", "to" } do
      if type(g[key]) == "table" then
        local left = {}
        for _, name in ipairs(g[key]) do if not gone[name] then left[#left + 1] = name end end
        g[key] = left
        if #left == 0 then keep = false end
      end
    end
    if g.when and g.when.node and gone[g.when.node] then keep = false end
    if keep then out[#out + 1] = g end
  end
  return out
end

function Shrinker:nodes()
  local changed = false
  local n = self.rf.config.nodes or 4
  while n > 1 and not self:spent() do
    local candidate = deep(self.rf)
    candidate.config.nodes = n - 1
    local gone = {}
    gone[net.names(n)[n]] = true
    candidate.schedule = without(candidate.schedule, gone)
    -- byzantine nodes must leave an honest one
    local total = 0
    for _, count in pairs(candidate.config.byzantine or {}) do total = total + count end
    if total >= n - 1 then break end
    if not self:try(candidate, string.format("nodes cut to %d", n - 1)) then break end
    changed = true
    n = n - 1
  end
  return changed
end

local function round(x) return math.floor(x * 1000 + 0.5) / 1000 end

function Shrinker:simplify()
  local changed = false
  for i = 1, #self.rf.schedule do
    if self:spent() then break end
    local f = self.rf.schedule[i]
    if f.duration and f.duration > 0.002 then
      local candidate = deep(self.rf)
      candidate.schedule[i].duration = round(f.duration / 2)
      local what = string.format("fault %d (%s) shorter: %g s", i, f.kind, candidate.schedule[i].duration)
      if self:try(candidate, what) then
        changed = true
      elseif f.at and not self:spent() then
        candidate = deep(self.rf)
        local g = candidate.schedule[i]
        g.at, g.duration = round(f.at + f.duration / 2), round(f.duration / 2)
        what = string.format("fault %d (%s) later: at %g s", i, f.kind, g.at)
        if self:try(candidate, what) then changed = true end
      end
    end
    f = self.rf.schedule[i]
    if f.groups and #f.groups > 2 and not self:spent() then
      local candidate = deep(self.rf)
      local g = candidate.schedule[i]
      for k = #g.groups, 3, -1 do
        for _, name in ipairs(g.groups[k]) do g.groups[2][#g.groups[2] + 1] = name end
        g.groups[k] = nil
      end
      if self:try(candidate, string.format("fault %d (%s) in two groups", i, f.kind)) then changed = true end
    end
  end
  return changed
end

--- Shrinks; returns the smallest run file found and the runs it took.
function Shrinker:run()
  while not self:spent() do
    local changed = false
    for _, step in ipairs { "faults", "rates", "drops", "ranks", "nodes", "simplify" } do
      if self[step](self) then changed = true end
    end
    if not changed then break end
  end
  return self.rf, self.runs
end

return shrink
