#!/usr/bin/env lua
-- Runs a protocol experiment on a sim world and prints a report; exits
-- non-zero when an invariant (agreement, progress) is violated.
--
--   lua5.4 scripts/experiment.lua --nodes 16 --byzantine 5:equivocate --loss 0.05 \
--       --seed 7 --ranks 200 --svg timeline.svg --trace trace.jsonl
local argparse = require "argparse"
local harness = require "csm.lab.harness"

local parser = argparse("experiment.lua", "Run csm's reference BFT protocol on a simulated network.")
  :epilog([[
Byzantine kinds: equivocate (different proposals to different peers),
double_vote (conflicting and double votes), silent (never sends), crash
(stops at --crash-at, restarts after --restart-after if given).
Partitions: --partition AT:DURATION:GROUPS, GROUPS as sizes ("2|2") or
names ("n01,n02|n03,n04"); nodes are named n01, n02, ...
Timing: --timing voting=2,vote_resend=0.1,scale=0.01 (see README, Timing).
The same seed gives the same run, byte for byte in --trace.]])
parser:option("--nodes", "Number of nodes.", "4"):convert(tonumber)
parser:option("--byzantine", "COUNT:KIND, e.g. 5:equivocate (repeatable, or comma-separated).")
  :count("*")
parser:option("--seed", "Seed of the sim world.", "1"):convert(tonumber)
parser:option("--ranks", "Stop when every honest node finalized this many ranks.", "100")
  :convert(tonumber)
parser:option("--time", "Stop after this many virtual seconds.", "3600"):convert(tonumber)
parser:option("--latency", "Seconds per message.", "0.01"):convert(tonumber)
parser:option("--jitter", "Extra seconds per message, uniform.", "0.005"):convert(tonumber)
parser:option("--loss", "Probability a message is lost.", "0"):convert(tonumber)
parser:option("--duplicate", "Probability a message is delivered twice.", "0"):convert(tonumber)
parser:option("--reorder", "Probability a message is held back.", "0"):convert(tonumber)
parser:option("--partition", "AT:DURATION:GROUPS (repeatable).", nil):count("*")
parser:option("--crash-at", "Virtual time crash nodes stop.", "5"):convert(tonumber)
parser:option("--restart-after", "Seconds until a crashed node restarts."):convert(tonumber)
parser:option("--view-timeout", "Seconds before a node gives up an attempt."):convert(tonumber)
parser:option("--timing", "Timing overrides, name=seconds,...")
parser:option("--trace", "Write every transition and message as JSON lines to FILE.")
parser:option("--svg", "Write a timeline of every node's states to FILE.")
local args = parser:parse()

local function die(msg)
  io.stderr:write("experiment.lua: ", msg, "\n")
  os.exit(2)
end

local byzantine = {}
for _, spec in ipairs(args.byzantine) do
  for item in spec:gmatch("[^,]+") do
    local count, kind = item:match("^%s*(%d+):([%w_]+)%s*$")
    if not count then die("bad --byzantine '" .. item .. "' (COUNT:KIND expected)") end
    byzantine[kind] = (byzantine[kind] or 0) + tonumber(count)
  end
end

local names = {}
for i = 1, args.nodes or 0 do names[i] = string.format("n%02d", i) end

local partitions = {}
for _, spec in ipairs(args.partition) do
  local at, duration, groups = spec:match("^([%d.]+):([%d.]+):(.+)$")
  if not at then die("bad --partition '" .. spec .. "' (AT:DURATION:GROUPS expected)") end
  local list, next_node = {}, 1
  for g in groups:gmatch("[^|]+") do
    local group = {}
    if g:match("^%d+$") then
      for _ = 1, tonumber(g) do group[#group + 1] = names[next_node]; next_node = next_node + 1 end
    else
      for name in g:gmatch("[^,]+") do group[#group + 1] = name end
    end
    list[#list + 1] = group
  end
  partitions[#partitions + 1] = { at = tonumber(at), duration = tonumber(duration), groups = list }
end

local timing
if args.timing then
  timing = {}
  for name, value in args.timing:gmatch("([%w_]+)=([%d.eE+-]+)") do timing[name] = tonumber(value) end
end

local ok, report = pcall(harness.run, {
  nodes = args.nodes, byzantine = byzantine, seed = args.seed, ranks = args.ranks, time = args.time,
  latency = args.latency, jitter = args.jitter, loss = args.loss, duplicate = args.duplicate,
  reorder = args.reorder, partitions = partitions, crash_at = args.crash_at,
  restart_after = args.restart_after, view_timeout = args.view_timeout, timing = timing,
  trace = args.trace, svg = args.svg,
})
if not ok then die(tostring(report)) end
io.write(harness.format(report))
if args.svg then print("timeline: " .. args.svg) end
if args.trace then print("trace: " .. args.trace) end
os.exit((report.agreement and report.progress) and 0 or 1)
