--- `csm replay FILE.json`: re-runs a run file (csm.lab.runfile), prints
-- the report, and says whether the run still ends as the file expects;
-- when the file records its trace, the first line where the run now
-- differs. --until T --inspect NODE prints a node's machine and protocol
-- state at virtual time T instead.
-- @module csm.cmd.replay

local cmd = require "csm.cmd"
local experiment = require "csm.cmd.experiment"
local harness = require "csm.lab.harness"
local runfile = require "csm.lab.runfile"
local timeline = require "csm.lab.timeline"
local trace = require "csm.lab.trace"

local replay = {}

replay.summary = "Re-run a run file (from csm sweep or csm shrink) and check it ends as recorded."

function replay.add(c)
  c:description([[
Re-runs the run in FILE.json (written by csm sweep --out, csm shrink or
csm replay --record), prints its report, and says whether it ends as the
file expects (the same verdict and signature). When the file records the
run's trace, a run that now differs names the first line where it does.
Exit status as csm experiment's: 0 valid, 1 invalid, 3 unknown.]])
  c:argument("file", "The run file.")
  c:option("--trace", "Write every transition and message as JSON lines to FILE.")
  c:option("--svg", "Write a timeline of every node's states to FILE.")
  c:option("--html", "Write the run's viewer to FILE: one self-contained page (lanes, messages, faults).")
  c:option("--record", "Write the run file again to FILE, with this run's outcome and its trace's line "
    .. "hashes (so a later replay names the first line that differs).")
  c:option("--until", "With --inspect: the virtual time to stop at.")
    :convert(cmd.number("--until", 0))
  c:option("--inspect", "NODE: print the node's machine (sm:inspect()) and protocol state at --until.")
end

-- Per-line hashes of the trace at path, less its header (which names the
-- csm commit and interpreter, which may change): a string of 8 hex digits
-- per line, the lines' count and the digest of all.
local function hashes(path)
  local out, n, all = {}, 0, {}
  local first = true
  for line in io.lines(path) do
    if first then
      first = false
    else
      n = n + 1
      local h = trace.fingerprint(line):sub(-8)
      out[n] = h
      all[#all + 1] = h
    end
  end
  return table.concat(out), n, trace.fingerprint(table.concat(all))
end

-- The first line (counting the header as line 1) where the trace at path
-- differs from the recorded hashes; nil when it does not.
local function first_difference(recorded, path)
  local got = hashes(path)
  local n = math.max(#recorded, #got) / 8
  for i = 1, n do
    if recorded:sub(8 * i - 7, 8 * i) ~= got:sub(8 * i - 7, 8 * i) then
      local k, line = 0, nil
      for l in io.lines(path) do
        k = k + 1
        if k == i + 1 then line = l break end
      end
      return i + 1, line
    end
  end
end

local function inspect_node(c, name, at)
  -- the run stops at --until: nodes are read before the world closes
  local seen
  local config = {}
  for k, v in pairs(c) do config[k] = v end
  config.time = at
  config.on_end = function(nodes)
    for _, node in ipairs(nodes) do
      if node.name == name then seen = node end
    end
    if not seen then return end
    print(string.format("%s at %.3f virtual s:", name, at))
    if seen.sm and seen.sm.inspect then
      local ok, info = pcall(seen.sm.inspect, seen.sm)
      if ok and type(info) == "table" then
        local keys = {}
        for k in pairs(info) do keys[#keys + 1] = k end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        for _, k in ipairs(keys) do
          local jok, text = pcall(trace.json, info[k])
          print(string.format("  %s: %s", tostring(k), jok and text or tostring(info[k])))
        end
      else
        print(ok and tostring(info) or ("(sm:inspect failed: " .. tostring(info) .. ")"))
      end
    end
    local fields = {}
    for _, k in ipairs { "height", "rank", "attempt", "lock", "needs_sync" } do
      local v = seen[k]
      if v ~= nil then
        if type(v) == "table" then v = trace.json(v) end
        fields[#fields + 1] = k .. " = " .. tostring(v)
      end
    end
    if #fields > 0 then print("protocol: " .. table.concat(fields, ", ")) end
  end
  return config, function() return seen ~= nil end
end

function replay.run(args)
  local rf, err = runfile.read(args.file)
  if not rf then cmd.usage_error("%s", err) end
  local ok, c, warnings = pcall(runfile.config, rf, args.file)
  if not ok then cmd.usage_error("%s", tostring(c)) end
  for _, w in ipairs(warnings) do io.stderr:write("csm replay: warning: ", w, "\n") end
  if (args["until"] == nil) ~= (args.inspect == nil) then
    cmd.usage_error("--until and --inspect go together")
  end
  local checked, why = pcall(harness.config, c)
  if not checked then cmd.usage_error("%s: %s", args.file, tostring(why)) end
  local found
  if args.inspect then
    local names = require("csm.lab.net").names(c.nodes)
    local known = false
    for _, n in ipairs(names) do known = known or n == args.inspect end
    if not known then
      cmd.usage_error("--inspect: unknown node '%s' (nodes are %s to %s)", args.inspect, names[1],
        names[#names])
    end
    c, found = inspect_node(c, args.inspect, args["until"])
  end
  local path = args.trace
  local temporary = false
  if path == nil and (rf.trace or args.record) then path, temporary = os.tmpname(), true end
  c.trace, c.html = path, args.html
  local report, unwritten = harness.run(c)
  if args.inspect then
    if not found() then print("(the node was not running at " .. args["until"] .. " s)") end
    if temporary then os.remove(path) end
    return cmd.OK
  end
  if unwritten then cmd.usage_error("--trace: %s", unwritten) end
  io.write(harness.format(report))
  local o = runfile.outcome(report)
  if rf.expect then
    if runfile.matches(rf, o) then
      print(string.format("replay: as recorded (%s%s)", rf.expect.verdict,
        rf.expect.signature and (", " .. rf.expect.signature) or ""))
    else
      print(string.format("replay: NOT as recorded: expected %s%s, got %s%s", rf.expect.verdict,
        rf.expect.signature and (" " .. rf.expect.signature) or "", o.verdict,
        o.signature and (" " .. o.signature) or ""))
    end
  end
  if rf.trace and rf.trace.hashes and path then
    local n, line = first_difference(rf.trace.hashes, path)
    if n then
      print(string.format("trace: differs from the recorded one from line %d: %s", n, tostring(line)))
    else
      print(string.format("trace: the same as recorded (%d lines after the header)", rf.trace.lines or 0))
    end
  end
  if args.record then
    local again = runfile.make(c, report, { protocol = rf.protocol, adversary = rf.adversary })
    again.config, again.schedule = rf.config, rf.schedule
    local h, n, digest = hashes(path)
    again.trace = { lines = n, digest = digest, hashes = h }
    local written, werr = runfile.write(again, args.record)
    if not written then cmd.usage_error("--record: %s", werr) end
    print("run file: " .. args.record)
  end
  if args.svg then
    local written, werr = timeline.write(report, args.svg)
    if not written then cmd.usage_error("--svg: %s", werr) end
    print("timeline: " .. args.svg)
  end
  if temporary then os.remove(path) elseif path then print("trace: " .. path) end
  if args.html then print("page: " .. args.html) end
  return experiment.status(report)
end

return replay
