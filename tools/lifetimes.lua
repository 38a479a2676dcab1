#!/usr/bin/env lua
-- A sweep in one process: harness.run experiments (4 reference nodes, 5
-- ranks, 5 % loss, a new seed each) one after another, the Lua heap (after
-- a full collection) and RSS sampled --samples times. After the first tenth
-- (warm-up), the largest sample of the last tenth must be within --growth
-- KiB of the largest of the tenth after warm-up, heap and RSS alike; exit
-- status 1 says which grew.
--
--   . scripts/env.sh && lua5.4 tools/lifetimes.lua [--runs 10000]     (luajit too)
local argparse = require "argparse"
local harness = require "csm.lab.harness"
local memory = require "csm.lab.memory"

local parser = argparse("lifetimes.lua", "Runs experiments in one process; checks that memory stays flat.")
parser:option("--runs", "Experiments to run.", "10000"):convert(tonumber)
parser:option("--samples", "Memory samples over the runs.", "50"):convert(tonumber)
parser:option("--growth", "Largest growth after warm-up, KiB (heap and RSS).", "512"):convert(tonumber)
parser:flag("--quiet", "No progress lines.")
local parsed, args = parser:pparse()
if not parsed or not args.runs or args.runs < 20 or not args.samples or args.samples < 10
    or not args.growth or args.growth < 0 then
  io.stderr:write(parser:get_usage(), "\n\nlifetimes.lua: ",
    parsed and "--runs must be >= 20, --samples >= 10, --growth >= 0" or args, "\n")
  os.exit(2)
end

local every = math.max(1, math.floor(args.runs / args.samples))
local samples = {} -- { run, heap KiB, rss KiB }
local clock = os.clock()
for run = 1, args.runs do
  local r = harness.run { nodes = 4, ranks = 5, loss = 0.05, seed = run }
  if not r.finished or not r.agreement then
    io.stderr:write(string.format("lifetimes.lua: seed %d did not finish, or broke agreement\n", run))
    os.exit(1)
  end
  if run % every == 0 or run == args.runs then
    local heap, rss = memory.heap_bytes(true) / 1024, memory.rss_bytes() / 1024
    samples[#samples + 1] = { run, heap, rss }
    if not args.quiet then
      io.write(string.format("%6d runs  heap %8.1f KiB  rss %8.0f KiB  %6.1f runs/s\n", run, heap, rss,
        run / (os.clock() - clock)))
      io.flush()
    end
  end
end

-- The largest of column k over the samples whose run is in (from, to].
local function largest(k, from, to)
  local m = 0
  for _, s in ipairs(samples) do
    if s[1] > from and s[1] <= to and s[k] > m then m = s[k] end
  end
  return m
end

local n, tenth = args.runs, args.runs / 10
local status = 0
for k, what in pairs { [2] = "heap", [3] = "rss" } do
  local early, late = largest(k, tenth, 2 * tenth), largest(k, n - tenth, n)
  local verdict = late - early <= args.growth and "flat" or "GREW"
  if verdict == "GREW" then status = 1 end
  print(string.format("%s: %.1f KiB after warm-up, %.1f KiB at the end (%+.1f KiB; limit %d): %s", what,
    early, late, late - early, args.growth, verdict))
end
print(string.format("%d runs in %.1f s of CPU", n, os.clock() - clock))
os.exit(status)
