--- `csm soak`: a 4-node reference cluster (all honest) on a sim world with
-- message loss and random partitions, run for a number of rounds (a round:
-- a rank every node has finalized). Checks
--   agreement: no two nodes finalize different identities at one rank,
--              checked at every finalization;
--   progress:  after every heal, every node finalizes a rank above the
--              highest finalized before it within --resume-within virtual
--              seconds; without a partition, no such span passes without a
--              round;
--   memory:    the Lua heap (after a full collection) and RSS stay flat after
--              warm-up: the largest sample of the last tenth of the run is
--              within --growth % (RSS: --rss-growth %) of the largest of the
--              tenth after warm-up.
-- Prints a progress line at every sample and a report; exits 1 on any
-- violation, naming it.
-- @module csm.cmd.soak

local cmd = require "csm.cmd"
local csm = require "csm"
local net = require "csm.lab.net"
local signer = require "csm.lab.signer"
local store = require "csm.lab.store"
local checker = require "csm.lab.checker"
local memory = require "csm.lab.memory"
local reference = require "csm.protocols.reference"

local soak = {}

-- The longest partition or gap between them: a soak is many short ones.
local MAX_SECONDS = 3600

-- Below this many rounds memory is sampled but not judged: the heap takes
-- a few thousand rounds to settle (caches fill as longer partitions occur).
local JUDGED_ROUNDS = 10000

soak.summary = "Soak a 4-node reference cluster: loss, random partitions, flat memory."

function soak.add(c)
  c:description([[
Runs a 4-node reference cluster with message loss and random partitions for
--rounds rounds (1,000,000 by default), checking agreement at every
finalization, progress after every heal, and that the Lua heap and RSS stay
flat after warm-up. Prints a progress line per memory sample (unless
--quiet) and a report; exit status 1 names the violation.]])
  c:epilog([[
Partitions: after a random gap (0.5 to 1.5 x --partition-every virtual s of
connected network, counted from the moment progress resumed), the nodes split
into two random non-empty groups for --partition-min to --partition-max
virtual seconds, then heal. A round is a rank every node has finalized.
The same seed gives the same run.]])
  c:option("--rounds", "Rounds to run (memory is judged from 10,000 on).", "1000000")
    :convert(cmd.integer("--rounds", 10))
  cmd.seed_option(c)
  c:option("--loss", "Probability a message is lost.", "0.1"):convert(cmd.probability("--loss"))
  c:option("--latency", "Seconds per message.", "0.01"):convert(cmd.number("--latency", 0))
  c:option("--jitter", "Extra seconds per message, uniform.", "0.005"):convert(cmd.number("--jitter", 0))
  c:option("--scale", "timing.scale of every machine (view timeout 8 x scale).", "0.05")
    :convert(cmd.number("--scale", 0))
  c:option("--partition-every", "Mean virtual seconds between partitions.", "20")
    :convert(cmd.number("--partition-every", 0, MAX_SECONDS))
  c:option("--partition-min", "Shortest partition, virtual seconds.", "0.5")
    :convert(cmd.number("--partition-min", 0, MAX_SECONDS))
  c:option("--partition-max", "Longest partition, virtual seconds.", "3")
    :convert(cmd.number("--partition-max", 0, MAX_SECONDS))
  c:option("--resume-within", "Virtual seconds within which progress resumes after a heal "
    .. "(and goes on without partitions); default 600 x --scale (30 s).")
    :convert(cmd.number("--resume-within", 0))
  c:option("--warm-up", "Fraction of the rounds before memory is measured, in (0, 0.9).", "0.1")
    :convert(cmd.number("--warm-up"))
  c:option("--growth", "Largest memory growth after warm-up, in %.", "5"):convert(cmd.number("--growth", 0))
  c:option("--rss-growth", "Largest RSS growth after warm-up, in % (default: --growth). RSS moves in "
    .. "allocator steps of a few hundred KiB, which a short run may not have taken before warm-up ends.")
    :convert(cmd.number("--rss-growth", 0))
  c:option("--samples", "Memory samples over the run.", "200"):convert(cmd.integer("--samples", 10))
  c:flag("--quiet", "No progress lines, only the report.")
end

local function rss_kib()
  return memory.rss_bytes() / 1024
end

local function heap_kib()
  return memory.heap_bytes(true) / 1024
end

-- The reference nodes log every finalized rank, and so does the agreement
-- check: every this many rounds, keep only ranks a node may still finalize
-- (in fresh tables, which do not keep the old ones' size), so that csm's
-- memory is what the samples measure.
local TRIM_EVERY = 500

local Soak = {}
Soak.__index = Soak

-- The cluster, its checks and its counters.
local function new(args)
  local self = setmetatable({
    args = args, names = net.names(4), nodes = {}, violations = {}, agreement = checker.agreement(),
    top = 0,             -- the highest rank any node finalized
    stopped = false,     -- set by a violation: the run ends at once
    partitions = 0, heals = 0, resumed = 0, resume_max = 0, resume_sum = 0,
    waiting = nil,       -- { at = heal time, above = rank to pass, timer = deadline } after a heal
    partitioned = false, -- whether a partition was on since the watchdog last looked
    watched = 0,         -- the rounds the watchdog saw last
  }, Soak)
  self.world = csm.sim { seed = args.seed }
  self.network = net.new(self.world, { latency = args.latency, jitter = args.jitter, loss = args.loss })
  local function on_finalize(node, rank, state)
    local v = self.agreement:observe(node.name, rank, state:identity())
    if v then self:violation("agreement violated at %s", checker.describe(v)) end
    if rank > self.top then self.top = rank end
  end
  local keyring = signer.keyring(args.seed, self.names)
  for i, name in ipairs(self.names) do
    self.nodes[i] = reference.node { name = name, names = self.names, world = self.world,
      network = self.network, initial = csm.value("genesis", 0), timing = { scale = args.scale },
      on_finalize = on_finalize, signer = keyring:signer(name), store = store.sim() }
  end
  return self
end

function Soak:violation(fmt, ...)
  self.violations[#self.violations + 1] = string.format(fmt, ...)
  self.stopped = true
end

-- The rounds so far: the ranks every node has finalized.
function Soak:rounds()
  local least = math.huge
  local nodes = self.nodes
  for i = 1, #nodes do
    local height = nodes[i].height
    if height < least then least = height end
  end
  return least
end

function Soak:trim()
  self.agreement:forget_below(self:rounds() + 1)
  for _, node in ipairs(self.nodes) do
    local active = node.sm:active_state():rank()
    local finalized, at = {}, {}
    for r = active - 8, active + 8 do
      finalized[r], at[r] = node.finalized[r], node.finalized_at[r]
    end
    node.finalized, node.finalized_at = finalized, at
  end
end

-- ---- partitions, heals and the progress check ----

function Soak:random()
  return self.world:random()
end

-- A random order of the nodes, cut at a random point: two non-empty groups.
function Soak:split()
  local order = {}
  for i, name in ipairs(self.names) do order[i] = name end
  for i = #order, 2, -1 do
    local j = 1 + math.floor(self:random() * i)
    order[i], order[j] = order[j], order[i]
  end
  local cut = 1 + math.floor(self:random() * (#order - 1))
  local a, b = {}, {}
  for i, name in ipairs(order) do
    if i <= cut then a[#a + 1] = name else b[#b + 1] = name end
  end
  return { a, b }
end

-- Where each node is, for a violation's message (only those at or below
-- rank when it is given).
function Soak:where(rank)
  local out = {}
  for _, node in ipairs(self.nodes) do
    local at = node.sm:active_state():rank()
    if rank == nil or at <= rank then
      out[#out + 1] = string.format("%s at rank %d in %s", node.name, at, node.sm:state())
    end
  end
  return table.concat(out, ", ")
end

function Soak:heal()
  self.network:heal()
  self.heals = self.heals + 1
  local at, above = self.world:now(), self.top
  self.waiting = { at = at, above = above }
  self.waiting.timer = self.world:after(self.args.resume_within, function()
    self:violation("no progress within %g virtual s of the heal at %.3f s (rank %d then): %s",
      self.args.resume_within, at, above, self:where(above))
  end)
end

function Soak:partition()
  local args = self.args
  self.partitioned = true
  local groups = self:split()
  local duration = args.partition_min + self:random() * (args.partition_max - args.partition_min)
  self.network:partition(groups)
  self.partitions = self.partitions + 1
  self.world:after(duration, function() self:heal() end)
end

function Soak:schedule()
  self.world:after(self.args.partition_every * (0.5 + self:random()), function() self:partition() end)
end

-- Progress without partitions too: every --resume-within virtual seconds
-- with no partition on, some rank must have been finalized by every node.
function Soak:watchdog()
  local now = self:rounds()
  if not self.partitioned and self.network.group == nil and not self.waiting and now == self.watched then
    self:violation("no progress for %g virtual s up to %.3f s without a partition: %s",
      self.args.resume_within, self.world:now(), self:where())
    return
  end
  self.watched, self.partitioned = now, self.network.group ~= nil
  self.world:after(self.args.resume_within, function() self:watchdog() end)
end

-- Called after every scheduler step: whether every node passed the rank
-- that was the highest at the last heal.
function Soak:check_resumed()
  local waiting = self.waiting
  if waiting and self:rounds() > waiting.above then
    local took = self.world:now() - waiting.at
    waiting.timer:cancel()
    self.waiting = nil
    self.resumed = self.resumed + 1
    self.resume_sum = self.resume_sum + took
    if took > self.resume_max then self.resume_max = took end
    self:schedule()
  end
end

-- ---- the run ----

function Soak:say(fmt, ...)
  if not self.args.quiet then io.stdout:write(string.format(fmt, ...), "\n") io.stdout:flush() end
end

-- Runs to the target, sampling memory; fills in the samples' maxima.
function Soak:run()
  local args, world = self.args, self.world
  self.wall0, self.cpu0 = csm.loop():now(), os.clock()
  for _, node in ipairs(self.nodes) do node:start() end
  self:schedule()
  world:after(args.resume_within, function() self:watchdog() end)

  local target = args.rounds
  local warm_at = math.floor(target * args.warm_up)
  local every = math.max(1, math.floor(target / args.samples))
  local tail_from = target - math.floor(target / 10)    -- the last tenth
  local warm_until = warm_at + math.floor(target / 10)  -- and the tenth after warm-up
  local next_sample, next_trim = warm_at, TRIM_EVERY
  self.heap_warm, self.rss_warm, self.heap_end, self.rss_end = 0, 0, 0, 0
  while not self.stopped do
    local goal = math.min(next_sample, next_trim, target)
    local ok = world:run_until(function()
      self:check_resumed()
      return self.stopped or self:rounds() >= goal
    end, 1e9)
    if not ok then
      self:violation("the world ran out of events at %.3f virtual s", world:now())
      break
    end
    if self.stopped then break end
    local done = self:rounds()
    if done >= next_trim then
      self:trim()
      next_trim = done + TRIM_EVERY
    end
    if done >= next_sample then
      next_sample = done + every
      local heap, rss = heap_kib(), rss_kib()
      if done <= warm_until then
        self.heap_warm, self.rss_warm = math.max(self.heap_warm, heap), math.max(self.rss_warm, rss)
      end
      if done >= tail_from then
        self.heap_end, self.rss_end = math.max(self.heap_end, heap), math.max(self.rss_end, rss)
      end
      local wall = csm.loop():now() - self.wall0
      self:say("%9d rounds  %10.1f virtual s  %7.1f wall s  %7.0f rounds/s  heap %6.0f KiB  rss %7.0f KiB"
        .. "  partitions %d", done, world:now(), wall, done / math.max(wall, 1e-9), heap, rss,
        self.partitions)
    end
    if done >= target then break end
  end
  if self.waiting and not self.stopped then self:check_resumed() end
end

local function growth(first, last)
  if first <= 0 then return 0 end
  return (last - first) / first * 100
end

-- Checks memory and prints the report.
function Soak:report()
  local args, world = self.args, self.world
  local wall, cpu = csm.loop():now() - self.wall0, os.clock() - self.cpu0
  local done = self:rounds()
  local heap_growth, rss_growth = growth(self.heap_warm, self.heap_end), growth(self.rss_warm, self.rss_end)
  local measured = self.heap_warm > 0 and self.heap_end > 0
  local judged = measured and args.rounds >= JUDGED_ROUNDS
  if judged then
    if heap_growth > args.growth then
      self:violation("Lua heap grew %.2f %% after warm-up (%.0f KiB -> %.0f KiB)", heap_growth,
        self.heap_warm, self.heap_end)
    end
    if rss_growth > args.rss_growth then
      self:violation("RSS grew %.2f %% after warm-up (%.0f KiB -> %.0f KiB)", rss_growth, self.rss_warm,
        self.rss_end)
    end
  end
  local stats = self.network.stats
  print(string.format("csm soak (%s%s): 4 honest reference nodes, seed %d, loss %g, latency %gs "
    .. "jitter %gs, scale %g", _VERSION, rawget(_G, "jit") and (" / " .. jit.version) or "", args.seed,
    args.loss, args.latency, args.jitter, args.scale))
  print(string.format("rounds: %d of %d in %.1f virtual s, %.1f wall s (%.1f CPU s), %.0f rounds per wall s",
    done, args.rounds, world:now(), wall, cpu, done / math.max(wall, 1e-9)))
  print(string.format("partitions: %d, heals: %d, progress resumed after %d (mean %.3f s, max %.3f s; "
    .. "bound %g s)", self.partitions, self.heals, self.resumed,
    self.resumed > 0 and self.resume_sum / self.resumed or 0, self.resume_max, args.resume_within))
  print(string.format("messages: %d sent, %d delivered, %d dropped", stats.sent, stats.delivered,
    stats.dropped))
  if measured then
    print(string.format("Lua heap: %.0f KiB at warm-up, %.0f KiB at the end (%+.2f %%)", self.heap_warm,
      self.heap_end, heap_growth))
    print(string.format("RSS:      %.0f KiB at warm-up, %.0f KiB at the end (%+.2f %%)", self.rss_warm,
      self.rss_end, rss_growth))
  else
    print("memory: not measured (the run ended before its last tenth)")
  end
  if #self.violations == 0 then
    if judged then
      print(string.format("agreement: ok; progress: ok; memory: flat (heap within %g %%, RSS within %g %%)",
        args.growth, args.rss_growth))
    else
      print(string.format("agreement: ok; progress: ok; memory: not judged (under %d rounds the heap is "
        .. "still settling)", JUDGED_ROUNDS))
    end
  else
    for _, v in ipairs(self.violations) do print("VIOLATION: " .. v) end
  end
end

function soak.run(args)
  if args.partition_min > args.partition_max then
    cmd.usage_error("--partition-min exceeds --partition-max")
  end
  if args.warm_up <= 0 or args.warm_up >= 0.9 then cmd.usage_error("--warm-up must be in (0, 0.9)") end
  if args.scale == 0 then cmd.usage_error("--scale must be > 0") end
  if args.resume_within == 0 then cmd.usage_error("--resume-within must be > 0") end
  args.resume_within = args.resume_within or 600 * args.scale
  args.rss_growth = args.rss_growth or args.growth
  -- a shorter pause keeps garbage peaks, and so RSS, from wandering with GC
  -- timing (Lua 5.4's interpreter runs generational, where it applies after a
  -- major collection; "incremental" with a pause of 100 would collect at every
  -- allocation there)
  collectgarbage("setpause", 100)
  local run = new(args)
  run:run()
  run:report()
  for _, node in ipairs(run.nodes) do node.sm:close() end
  return #run.violations == 0 and cmd.OK or cmd.VIOLATED
end

return soak
