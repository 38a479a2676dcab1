--- `csm shrink FILE.json`: the smallest run found that fails as FILE's
-- run does (csm.lab.shrink), written as a run file.
-- @module csm.cmd.shrink

local cmd = require "csm.cmd"
local runfile = require "csm.lab.runfile"
local shrink = require "csm.lab.shrink"

local command = {}

command.summary = "Cut a failing run file down to a smaller run that fails the same way."

function command.add(c)
  c:description([[
Makes the failing run in FILE.json (from csm sweep --out) as small as it
can while it keeps failing with the same signature — the same invariant
and kind of failure, not another one: faults deleted (delta debugging),
loss, duplication, reordering and jitter set to 0, fewer ranks and nodes,
each fault made shorter or later and a partition cut to two groups. Each
try is a run; prints each step it kept and writes the result as a run file
(--out, or FILE with -shrunk before .json).]])
  c:argument("file", "The failing run file.")
  c:option("--out", "Where to write the shrunk run file.")
  c:option("--budget", "The most runs to try.", "500"):convert(cmd.integer("--budget", 1))
  c:flag("--quiet", "Only the result.")
end

local function count(list) return #list end

function command.run(args)
  local rf, err = runfile.read(args.file)
  if not rf then cmd.usage_error("%s", err) end
  if not rf.expect or rf.expect.verdict ~= "invalid" then
    cmd.usage_error("%s: the run file records no failure to keep (expect.verdict is not invalid)", args.file)
  end
  local out = args.out or (args.file:gsub("%.json$", "") .. "-shrunk.json")
  local clock = os.clock()
  local ok, s = pcall(shrink.new, rf, args.file, args.budget, function(what)
    if not args.quiet then print("  kept: " .. what) end
  end)
  if not ok then cmd.usage_error("%s", tostring(s)) end
  -- the file must fail as it says before anything is cut
  local before = s:outcome(s.rf)
  if not (before and before.verdict == rf.expect.verdict and before.signature == rf.expect.signature) then
    cmd.usage_error("%s does not fail as recorded (expected %s %s, got %s %s): nothing to shrink", args.file,
      rf.expect.verdict, tostring(rf.expect.signature), before and before.verdict or "?",
      before and tostring(before.signature) or "?")
  end
  print(string.format("csm shrink: %s fails with %s (%d nodes, %d ranks, %d faults, loss %g)", args.file,
    rf.expect.signature, rf.config.nodes or 4, rf.config.ranks or 100, count(rf.schedule),
    rf.config.loss or 0))
  local result, runs = s:run()
  local written, werr = runfile.write(result, out)
  if not written then cmd.usage_error("--out: %s", werr) end
  print(string.format("shrunk in %d runs (%.1f s): %d nodes, %d ranks, %d fault%s, loss %g%s", runs,
    os.clock() - clock, result.config.nodes or 4, result.config.ranks or 100, count(result.schedule),
    count(result.schedule) == 1 and "" or "s", result.config.loss or 0, runs >= args.budget and
    " (the budget ran out)" or ""))
  for i, f in ipairs(result.schedule) do
    print(string.format("  fault %d: %s", i, require("csm.lab.trace").json(f)))
  end
  print(string.format("still failing: %s (%s)", result.expect.signature, tostring(result.expect.text)))
  print("run file: " .. out)
  return cmd.OK
end

return command
