#!/usr/bin/env lua
-- Soak: a 4-node reference cluster (csm.reference, all honest) on a sim world
-- with message loss and random partitions, run for a number of rounds (a
-- round: a rank every node has finalized). Checks
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
--
--   . scripts/env.sh && lua5.4 scripts/soak.lua                  (1,000,000 rounds)
--   . scripts/env.sh luajit && luajit scripts/soak.lua --rounds 20000 --seed 3
local argparse = require "argparse"
local csm = require "csm"
local net = require "csm.lab.net"
local reference = require "csm.protocols.reference"

local parser = argparse("soak.lua", "Soak a 4-node reference cluster: loss, random partitions, flat memory.")
  :epilog([[
Partitions: after a random gap (0.5 to 1.5 x --partition-every virtual s of
connected network, counted from the moment progress resumed), the nodes split
into two random non-empty groups for --partition-min to --partition-max
virtual seconds, then heal. A round is a rank every node has finalized.
The same seed gives the same run.]])
parser:option("--rounds", "Rounds to run.", "1000000"):convert(tonumber)
parser:option("--seed", "Seed of the sim world.", "1"):convert(tonumber)
parser:option("--loss", "Probability a message is lost.", "0.1"):convert(tonumber)
parser:option("--latency", "Seconds per message.", "0.01"):convert(tonumber)
parser:option("--jitter", "Extra seconds per message, uniform.", "0.005"):convert(tonumber)
parser:option("--scale", "timing.scale of every machine (view timeout 8 x scale).", "0.05")
  :convert(tonumber)
parser:option("--partition-every", "Mean virtual seconds between partitions.", "20"):convert(tonumber)
parser:option("--partition-min", "Shortest partition, virtual seconds.", "0.5"):convert(tonumber)
parser:option("--partition-max", "Longest partition, virtual seconds.", "3"):convert(tonumber)
parser:option("--resume-within", "Virtual seconds within which progress resumes after a heal "
  .. "(and goes on without partitions).", "30"):convert(tonumber)
parser:option("--warm-up", "Fraction of the rounds before memory is measured.", "0.1"):convert(tonumber)
parser:option("--growth", "Largest memory growth after warm-up, in %.", "5"):convert(tonumber)
parser:option("--rss-growth", "Largest RSS growth after warm-up, in % (default: --growth). RSS moves in "
  .. "allocator steps of a few hundred KiB, which a short run may not have taken before warm-up ends.")
  :convert(tonumber)
parser:option("--samples", "Memory samples over the run.", "200"):convert(tonumber)
parser:flag("--quiet", "No progress lines, only the report.")
local args = parser:parse()

local function die(msg)
  io.stderr:write("soak.lua: ", msg, "\n")
  os.exit(2)
end
if args.rounds < 10 or args.rounds % 1 ~= 0 then die("--rounds must be an integer >= 10") end
if args.partition_min > args.partition_max then die("--partition-min exceeds --partition-max") end
if args.warm_up <= 0 or args.warm_up >= 0.9 then die("--warm-up must be in (0, 0.9)") end
args.rss_growth = args.rss_growth or args.growth

local function rss_kib()
  local fh = io.open("/proc/self/statm")
  if not fh then return 0 end
  local _, resident = fh:read("*n", "*n")
  fh:close()
  return (resident or 0) * 4
end

local function heap_kib()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count")
end

local function say(fmt, ...)
  if not args.quiet then io.stdout:write(string.format(fmt, ...), "\n") io.stdout:flush() end
end

-- ---- the cluster ----

-- a shorter pause keeps garbage peaks, and so RSS, from wandering with GC
-- timing (Lua 5.4's interpreter runs generational, where it applies after a
-- major collection; "incremental" with a pause of 100 would collect at every
-- allocation there)
collectgarbage("setpause", 100)

local world = csm.sim { seed = args.seed }
local network = net.new(world, { latency = args.latency, jitter = args.jitter, loss = args.loss })
local names = { "n01", "n02", "n03", "n04" }
local nodes = {}
local violations = {}
local agreed, by = {}, {} -- rank -> identity first finalized there, and by which node
local top = 0            -- the highest rank any node finalized
local stopped = false    -- set by a violation: the run ends at once

local function violation(fmt, ...)
  violations[#violations + 1] = string.format(fmt, ...)
  stopped = true
end

local function on_finalize(node, rank, state)
  local id = state:identity()
  local first = agreed[rank]
  if first == nil then
    agreed[rank], by[rank] = id, node.name
  elseif first ~= id then
    violation("agreement violated at rank %d: %s finalized %s, %s finalized %s", rank, by[rank],
      first, node.name, id)
  end
  if rank > top then top = rank end
end

for i, name in ipairs(names) do
  nodes[i] = reference.node { name = name, names = names, world = world, network = network,
    initial = csm.value("genesis", 0), timing = { scale = args.scale }, on_finalize = on_finalize }
end

-- The rounds so far: the ranks every node has finalized.
local function rounds()
  local least = math.huge
  for i = 1, #nodes do
    local count = nodes[i].height
    if count < least then least = count end
  end
  return least
end

-- The reference nodes log every finalized rank, and so does `agreed`: keep
-- only ranks a node may still finalize (in fresh tables, which do not keep
-- the old ones' size), so that csm's memory is what the samples measure.
local TRIM_EVERY = 500 -- rounds
local function trim()
  local low = rounds()
  local a, b = {}, {}
  for r, id in pairs(agreed) do
    if r > low then a[r], b[r] = id, by[r] end
  end
  agreed, by = a, b
  for _, node in ipairs(nodes) do
    local active = node.sm:active_state():rank()
    local finalized, at = {}, {}
    for r = active - 8, active + 8 do
      finalized[r], at[r] = node.finalized[r], node.finalized_at[r]
    end
    node.finalized, node.finalized_at = finalized, at
    -- a cache of refusal texts, bounded (256 a node) but slow to fill: its
    -- filling would read as growth
    if node.reasons then node.reasons, node.nreasons = {}, 0 end
  end
end

-- ---- partitions, heals and the progress check ----

local random = function() return world:random() end
local partitions, heals, resumed = 0, 0, 0
local resume_max, resume_sum = 0, 0
local waiting -- { at = heal time, above = rank to pass, timer = deadline } while a heal awaits progress
local schedule

local function split()
  -- a random order, cut at a random point: two non-empty groups
  local order = {}
  for i, name in ipairs(names) do order[i] = name end
  for i = #order, 2, -1 do
    local j = 1 + math.floor(random() * i)
    order[i], order[j] = order[j], order[i]
  end
  local cut = 1 + math.floor(random() * (#order - 1))
  local a, b = {}, {}
  for i, name in ipairs(order) do
    if i <= cut then a[#a + 1] = name else b[#b + 1] = name end
  end
  return { a, b }
end

local function heal()
  network:heal()
  heals = heals + 1
  local at, above = world:now(), top
  waiting = { at = at, above = above }
  waiting.timer = world:after(args.resume_within, function()
    local behind = {}
    for _, node in ipairs(nodes) do
      local rank = node.sm:active_state():rank()
      if rank <= above then behind[#behind + 1] = string.format("%s at rank %d in %s", node.name, rank,
        node.sm:state()) end
    end
    violation("no progress within %g virtual s of the heal at %.3f s (rank %d then): %s",
      args.resume_within, at, above, table.concat(behind, ", "))
  end)
end

local partitioned = false  -- whether a partition was on since the watchdog last looked

local function partition()
  partitioned = true
  local groups = split()
  local duration = args.partition_min + random() * (args.partition_max - args.partition_min)
  network:partition(groups)
  partitions = partitions + 1
  world:after(duration, heal)
end

schedule = function()
  world:after(args.partition_every * (0.5 + random()), partition)
end

-- Progress without partitions too: every --resume-within virtual seconds
-- with no partition on, some rank must have been finalized by every node.
local watched = 0
local function watchdog()
  local now = rounds()
  if not partitioned and network.group == nil and not waiting and now == watched then
    local where = {}
    for _, node in ipairs(nodes) do
      where[#where + 1] = string.format("%s at rank %d in %s", node.name,
        node.sm:active_state():rank(), node.sm:state())
    end
    violation("no progress for %g virtual s up to %.3f s without a partition: %s", args.resume_within,
      world:now(), table.concat(where, ", "))
    return
  end
  watched, partitioned = now, network.group ~= nil
  world:after(args.resume_within, watchdog)
end

-- Called after every scheduler step: whether every node passed the rank
-- that was the highest at the last heal.
local function check_resumed()
  if waiting and rounds() > waiting.above then
    local took = world:now() - waiting.at
    waiting.timer:cancel()
    waiting = nil
    resumed = resumed + 1
    resume_sum = resume_sum + took
    if took > resume_max then resume_max = took end
    schedule()
  end
end

-- ---- the run ----

local wall0, cpu0 = csm.loop():now(), os.clock()
for _, node in ipairs(nodes) do node:start() end
schedule()
world:after(args.resume_within, watchdog)

local target = args.rounds
local warm_at = math.floor(target * args.warm_up)
local every = math.max(1, math.floor(target / args.samples))
local heap_warm, rss_warm = 0, 0
local heap_end, rss_end = 0, 0
local tail_from = target - math.floor(target / 10)    -- the last tenth
local warm_until = warm_at + math.floor(target / 10)  -- and the tenth after warm-up
local next_sample, next_trim = warm_at, TRIM_EVERY

while not stopped do
  local goal = math.min(next_sample, next_trim, target)
  local ok = world:run_until(function()
    check_resumed()
    return stopped or rounds() >= goal
  end, 1e9)
  if not ok then
    violation("the world ran out of events at %.3f virtual s", world:now())
    break
  end
  if stopped then break end
  local done = rounds()
  if done >= next_trim then
    trim()
    next_trim = done + TRIM_EVERY
  end
  if done >= next_sample then
    next_sample = done + every
    local heap, rss = heap_kib(), rss_kib()
    if done <= warm_until then
      heap_warm, rss_warm = math.max(heap_warm, heap), math.max(rss_warm, rss)
    end
    if done >= tail_from then
      heap_end, rss_end = math.max(heap_end, heap), math.max(rss_end, rss)
    end
    local wall = csm.loop():now() - wall0
    say("%9d rounds  %10.1f virtual s  %7.1f wall s  %7.0f rounds/s  heap %6.0f KiB  rss %7.0f KiB"
      .. "  partitions %d", done, world:now(), wall, done / math.max(wall, 1e-9), heap, rss, partitions)
  end
  if done >= target then break end
end
if waiting and not stopped then check_resumed() end

local wall, cpu = csm.loop():now() - wall0, os.clock() - cpu0
local done = rounds()
local function growth(first, last)
  if first <= 0 then return 0 end
  return (last - first) / first * 100
end
local heap_growth, rss_growth = growth(heap_warm, heap_end), growth(rss_warm, rss_end)
local measured = heap_warm > 0 and heap_end > 0
if measured then
  if heap_growth > args.growth then
    violation("Lua heap grew %.2f %% after warm-up (%.0f KiB -> %.0f KiB)", heap_growth, heap_warm, heap_end)
  end
  if rss_growth > args.rss_growth then
    violation("RSS grew %.2f %% after warm-up (%.0f KiB -> %.0f KiB)", rss_growth, rss_warm, rss_end)
  end
end

local stats = network.stats
print(string.format("csm soak (%s%s): 4 honest reference nodes, seed %d, loss %g, latency %gs jitter %gs, "
  .. "scale %g", _VERSION, rawget(_G, "jit") and (" / " .. jit.version) or "", args.seed, args.loss,
  args.latency, args.jitter, args.scale))
print(string.format("rounds: %d of %d in %.1f virtual s, %.1f wall s (%.1f CPU s), %.0f rounds per wall s",
  done, target, world:now(), wall, cpu, done / math.max(wall, 1e-9)))
print(string.format("partitions: %d, heals: %d, progress resumed after %d (mean %.3f s, max %.3f s; "
  .. "bound %g s)", partitions, heals, resumed, resumed > 0 and resume_sum / resumed or 0, resume_max,
  args.resume_within))
print(string.format("messages: %d sent, %d delivered, %d dropped", stats.sent, stats.delivered,
  stats.dropped))
if measured then
  print(string.format("Lua heap: %.0f KiB at warm-up, %.0f KiB at the end (%+.2f %%)", heap_warm, heap_end,
    heap_growth))
  print(string.format("RSS:      %.0f KiB at warm-up, %.0f KiB at the end (%+.2f %%)", rss_warm, rss_end,
    rss_growth))
else
  print("memory: not measured (the run ended before its last tenth)")
end
if #violations == 0 then
  print(string.format("agreement: ok; progress: ok; memory: flat (heap within %g %%, RSS within %g %%)",
    args.growth, args.rss_growth))
else
  for _, v in ipairs(violations) do print("VIOLATION: " .. v) end
end
for _, node in ipairs(nodes) do node.sm:close() end
os.exit(#violations == 0 and 0 or 1)
