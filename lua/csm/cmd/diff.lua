--- `csm diff --a P --b Q --seeds A-B`: two protocols on the same seeds and
-- faults; for each seed, the first rank where their decisions differ and
-- the first trace line, and the paired differences of their metrics.
-- @module csm.cmd.diff

local cmd = require "csm.cmd"
local experiment = require "csm.cmd.experiment"
local harness = require "csm.lab.harness"
local plots = require "csm.lab.plots"

local diff = {}

diff.summary = "Run two protocols on the same seeds and faults and report where they differ."

function diff.add(c)
  c:description([[
Runs protocol A (--a) and protocol B (--b) — reference, minimal or a
FILE.lua each — with the experiment the other options describe (those of
csm experiment but --protocol and --seed), on each seed of --seeds, and
reports for each seed whether the runs are the same: the first rank where
the decisions of the honest nodes differ, and the first trace line that
differs (after the header, which names the protocol). Then the paired
differences of the metrics, B - A, median over the seeds: round latency p50
and p99, ranks per virtual second, messages per rank. Exit status 0 when
every seed's runs are the same, 1 when some differ.]])
  experiment.options(c, true)
  c:option("--a", "Protocol A: reference, minimal or FILE.lua.")
  c:option("--b", "Protocol B: reference, minimal or FILE.lua.")
  c:option("--seeds", "A-B: the seeds to run (or one seed).", "1")
end

-- The run of protocol text on seed: its decisions (rank -> identity, ";"
-- joined when honest nodes differ), its trace lines after the header, and
-- its metrics.
local function run(base, text, seed)
  local c = {}
  for k, v in pairs(base) do c[k] = v end
  c.protocol = experiment.protocol(text)
  c.seed = seed
  c.trace = os.tmpname()
  local r = harness.run(c)
  local lines, decisions, first = {}, {}, true
  local cjson = require "cjson"
  for line in io.lines(c.trace) do
    if first then
      first = false
    else
      lines[#lines + 1] = line
      if line:find('"kind":"finalize"', 1, true) then
        local e = cjson.decode(line)
        local rank = math.floor(e.rank)
        local d = decisions[rank]
        if d == nil then
          decisions[rank] = e.identity
        elseif not (";" .. d .. ";"):find(";" .. e.identity .. ";", 1, true) then
          decisions[rank] = d .. ";" .. e.identity
        end
      end
    end
  end
  os.remove(c.trace)
  local out = plots.metrics_of(r)
  out.lines, out.decisions, out.verdict = lines, decisions, r.verdict
  return out
end

local function first_rank(a, b)
  local top = 0
  for rank in pairs(a.decisions) do top = math.max(top, rank) end
  for rank in pairs(b.decisions) do top = math.max(top, rank) end
  for rank = 1, top do
    if a.decisions[rank] ~= b.decisions[rank] then return rank end
  end
end

local function first_line(a, b)
  for i = 1, math.max(#a.lines, #b.lines) do
    if a.lines[i] ~= b.lines[i] then return i + 1, a.lines[i], b.lines[i] end
  end
end

local function median(list)
  table.sort(list)
  local n = #list
  if n == 0 then return 0 end
  if n % 2 == 1 then return list[(n + 1) / 2] end
  return (list[n / 2] + list[n / 2 + 1]) / 2
end

function diff.run(args)
  if not args.a or not args.b then cmd.usage_error("--a and --b name the two protocols") end
  local lo, hi = require("csm.cmd.sweep").range("--seeds", args.seeds, 0, 2 ^ 53)
  args.protocol = args.a
  local base = experiment.config(args)
  local checked, why = pcall(harness.config, base)
  if not checked then cmd.usage_error("%s", tostring(why)) end
  base.trace, base.svg, base.html = nil, nil, nil
  local function name_of(text)
    local p = experiment.protocol(text)
    return type(p) == "string" and p or (p.name or text)
  end
  print(string.format("csm diff: A %s, B %s, seeds %d-%d", name_of(args.a), name_of(args.b), lo, hi))
  local same, first, deltas = 0, nil, {}
  for _, m in ipairs(plots.metrics) do deltas[m] = {} end
  for seed = lo, hi do
    local a, b = run(base, args.a, seed), run(base, args.b, seed)
    local rank = first_rank(a, b)
    local line, la, lb = first_line(a, b)
    for _, m in ipairs(plots.metrics) do table.insert(deltas[m], b[m] - a[m]) end
    if rank == nil and line == nil then
      same = same + 1
      print(string.format("  seed %d: the same (%d trace lines)", seed, #a.lines + 1))
    else
      first = first or { seed = seed, rank = rank }
      print(string.format("  seed %d: %s; traces differ from line %s", seed, rank
        and string.format("decisions differ from rank %d (A %s, B %s)", rank, tostring(a.decisions[rank]),
          tostring(b.decisions[rank])) or "the same decisions", tostring(line)))
      if seed == lo or (first and first.seed == seed) then
        print("    A: " .. tostring(la))
        print("    B: " .. tostring(lb))
      end
    end
  end
  local total = hi - lo + 1
  print(string.format("the same: %d of %d seeds", same, total))
  if first then
    print(string.format("first difference: seed %d%s", first.seed,
      first.rank and string.format(", rank %d", first.rank) or " (same decisions, different traces)"))
  end
  local shown = {}
  for _, m in ipairs(plots.metrics) do shown[#shown + 1] = string.format("%s %+.6g", m, median(deltas[m])) end
  print("paired differences, B - A, median over the seeds: " .. table.concat(shown, ", "))
  return same == total and cmd.OK or cmd.VIOLATED
end

return diff
