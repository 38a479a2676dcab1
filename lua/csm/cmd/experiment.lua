--- `csm experiment`: one run of a protocol (the reference one unless
-- --protocol names another) in the lab — N nodes on a sim world and a
-- simulated network, byzantine peers, loss, partitions and crashes — with
-- a report, and a trace and a timeline on request. Exit status 1 when an invariant (agreement, progress) was
-- violated.
-- @module csm.cmd.experiment

local cmd = require "csm.cmd"
local csm = require "csm"
local harness = require "csm.lab.harness"
local layout = require "csm.layout"
local net = require "csm.lab.net"
local timeline = require "csm.lab.timeline"
local trace = require "csm.lab.trace"

local experiment = {}

experiment.summary = "Run a protocol (the reference one by default) on a simulated network and report."

function experiment.add(c)
  c:description([[
Runs N nodes of a protocol (--protocol: the reference protocol unless told)
on a sim world and a simulated network, stops when
every honest node has finalized --ranks ranks (or after --time virtual
seconds), and prints a report: ranks finalized per node, refusals, round
latency, messages, wall time, and the invariants agreement and progress.]])
  c:epilog([[
Byzantine kinds: equivocate (different proposals to different peers),
double_vote (conflicting and double votes), silent (never sends), crash
(stops at --crash-at, restarts after --restart-after if given), adversary
(runs the protocol, but --adversary speaks for it and may change what it
sends).
Partitions: --partition AT:DURATION:GROUPS, GROUPS as sizes ("2|2") or
names ("n01,n02|n03,n04"); nodes are named n01, n02, ...; nodes in no
group form one more group.
Faults: --fault 'KIND key=value ...', e.g. 'partition at=10 duration=5
groups=2|2', 'one_way at=1 duration=3 from=n01 to=n02,n03', 'isolate node=n02
when=n02.finalized=3 duration=4', 'crash node=n01 at=5 restart_after=2
durable=false', 'link a=n01 b=n02 at=1 duration=9 loss=0.5', 'pause node=n03
at=2 duration=1', 'heal at=20', 'gst at=30'. when= is [NODE.]finalized=R,
[NODE.]attempt=A or [NODE.]state=NAME instead of at=. --schedule FILE reads
the same faults as JSON (docs/lab.md, Faults).
Timing: --timing voting=2,vote_resend=0.1,scale=0.01 (see the guide).
Protocols: reference, minimal, or FILE.lua, a Lua file that returns a
protocol module (docs/lab.md, "Protocols"); equivocate and double_vote are
roles a protocol must offer, silent and crash work with any.
The same seed gives the same run, byte for byte in --trace.]])
  experiment.options(c)
  c:option("--trace", "Write every transition and message as JSON lines to FILE.")
  c:flag("--check-determinism", "Run the experiment in two fresh processes instead, and compare their "
    .. "traces: exit 1 naming the first line that differs.")
  c:option("--svg", "Write a timeline of every node's states to FILE.")
  c:option("--html", "Write the run's viewer to FILE: one self-contained page (lanes, messages, faults).")
end

--- Adds the options that make an experiment's configuration to parser
-- command c (csm sweep takes them too); without_seed leaves --seed out.
function experiment.options(c, without_seed)
  c:option("--protocol", "reference, minimal, or FILE.lua returning a protocol module.", "reference")
  c:option("--adversary", "FILE.lua returning an adversary module (see docs/lab.md, Adversaries); "
    .. "--byzantine N:adversary gives it nodes to speak for.")
  c:option("--twins", "NAME: two honest copies of node NAME under its identity (repeatable).")
    :count("*")
  c:option("--twin-sides", "NAME=GROUP|GROUP: the nodes each copy of twin NAME hears and is heard by "
    .. "(repeatable; GROUP as in --partition).")
    :count("*")
  c:option("--nodes", "Number of nodes.", "4"):convert(cmd.integer("--nodes", 1, harness.max_nodes))
  c:option("--byzantine", "COUNT:KIND, e.g. 5:equivocate (repeatable, or comma-separated).")
    :count("*")
  if not without_seed then cmd.seed_option(c) end
  c:option("--ranks", "Stop when every honest node finalized this many ranks.", "100")
    :convert(cmd.integer("--ranks", 0))
  c:option("--time", "Stop after this many virtual seconds.", "3600"):convert(cmd.number("--time", 0))
  c:option("--latency", "Seconds per message.", "0.01"):convert(cmd.number("--latency", 0))
  c:option("--jitter", "Extra seconds per message, uniform.", "0.005"):convert(cmd.number("--jitter", 0))
  c:option("--loss", "Probability a message is lost.", "0"):convert(cmd.probability("--loss"))
  c:option("--duplicate", "Probability a message is delivered twice.", "0")
    :convert(cmd.probability("--duplicate"))
  c:option("--reorder", "Probability a message is held back.", "0"):convert(cmd.probability("--reorder"))
  c:option("--partition", "AT:DURATION:GROUPS (repeatable).", nil):count("*")
  c:option("--fault", "A fault: KIND key=value ... (repeatable; see below).", nil):count("*")
  c:option("--schedule", "A JSON file: a list of faults, or a trace whose header holds one.")
  c:option("--crash-at", "Virtual time crash nodes stop (default 5).")
    :convert(cmd.number("--crash-at", 0))
  c:option("--restart-after", "Seconds until a crashed node restarts.")
    :convert(cmd.number("--restart-after", 0))
  c:option("--restarts", "Crash and restart N honest nodes, with their store, at protocol points "
    .. "drawn from the seed.")
    :convert(cmd.integer("--restarts", 0))
  c:option("--view-timeout", "Seconds before a node gives up an attempt (> 0).")
    :convert(cmd.number("--view-timeout", 0))
  c:option("--timing", "Timing overrides, name=seconds,...")
  c:option("--steps-per-instant", "Steps at one virtual instant before the run is a livelock "
    .. "(default 1,000,000; a run at zero latency may need more).")
    :convert(cmd.integer("--steps-per-instant", 1))
end

local KINDS = {}
for _, kind in ipairs(harness.byzantine_kinds) do KINDS[kind] = true end

--- The byzantine counts of --byzantine items ("5:equivocate", ...) among
-- nodes nodes, at least one of them left honest.
function experiment.byzantine(items, nodes)
  local byzantine, total = {}, 0
  for _, spec in ipairs(items) do
    for item in spec:gmatch("[^,]+") do
      local text, kind = item:match("^%s*([^:]+):([%w_]+)%s*$")
      if not text then cmd.usage_error("bad --byzantine '%s' (COUNT:KIND expected)", item) end
      if not KINDS[kind] then
        cmd.usage_error("bad --byzantine '%s': unknown kind '%s' (kinds: %s)", item, kind,
          table.concat(harness.byzantine_kinds, ", "))
      end
      local count, why = cmd.integer("COUNT", 0, nodes)(text)
      if not count then cmd.usage_error("bad --byzantine '%s': %s", item, why) end
      byzantine[kind] = (byzantine[kind] or 0) + count
      total = total + count
    end
  end
  if total >= nodes then
    cmd.usage_error("--byzantine: %d byzantine nodes leave no honest one of %d (--nodes)", total, nodes)
  end
  return byzantine
end

--- The partitions of --partition items over the run's node names.
function experiment.partitions(items, names)
  local known = {}
  for _, name in ipairs(names) do known[name] = true end
  local partitions = {}
  local seconds = cmd.number("--partition", 0)
  for _, spec in ipairs(items) do
    local at, duration, groups = spec:match("^([^:]+):([^:]+):(.+)$")
    at, duration = at and seconds(at), duration and seconds(duration)
    if not (at and duration) then
      cmd.usage_error("bad --partition '%s' (AT:DURATION:GROUPS expected, AT and DURATION "
        .. "numbers >= 0)", spec)
    end
    local list, next_node, seen = {}, 1, {}
    local function add(group, name)
      if seen[name] then cmd.usage_error("bad --partition '%s': node '%s' is in two groups", spec, name) end
      seen[name] = true
      group[#group + 1] = name
    end
    for g in groups:gmatch("[^|]+") do
      local group = {}
      if g:match("^%d+$") then
        local size = tonumber(g)
        if size == 0 or next_node + size - 1 > #names then
          cmd.usage_error("bad --partition '%s': groups of %s nodes, there are %d", spec,
            groups:gsub("|", "+"), #names)
        end
        for _ = 1, size do add(group, names[next_node]); next_node = next_node + 1 end
      else
        for name in g:gmatch("[^,]+") do
          if not known[name] then
            cmd.usage_error("bad --partition '%s': unknown node '%s' (nodes are %s to %s)", spec, name,
              names[1], names[#names])
          end
          add(group, name)
        end
      end
      list[#list + 1] = group
    end
    if #list == 0 then cmd.usage_error("bad --partition '%s': no group", spec) end
    partitions[#partitions + 1] = { at = at, duration = duration, groups = list }
  end
  return partitions
end

local FAULT_NUMBERS = { at = true, duration = true, restart_after = true, loss = true, latency = true,
                        jitter = true, duplicate = true, reorder = true }

--- The fault of a --fault text ("crash node=n01 at=5"), over the run's
-- node names (a usage error naming what is wrong).
function experiment.fault(text, names)
  local kind, rest = text:match("^%s*([%w_]+)%s*(.-)%s*$")
  if not kind then cmd.usage_error("bad --fault '%s' (KIND key=value ... expected)", text) end
  local fault = { kind = kind }
  for item in rest:gmatch("%S+") do
    local k, v = item:match("^([%w_]+)=(.+)$")
    if not k then cmd.usage_error("bad --fault '%s': '%s' is not key=value", text, item) end
    if fault[k] ~= nil then cmd.usage_error("bad --fault '%s': '%s' given twice", text, k) end
    if FAULT_NUMBERS[k] then
      local n = tonumber(v)
      if not n then cmd.usage_error("bad --fault '%s': %s=%s is not a number", text, k, v) end
      fault[k] = n
    elseif k == "durable" then
      if v ~= "true" and v ~= "false" then
        cmd.usage_error("bad --fault '%s': durable is true or false", text)
      end
      fault[k] = v == "true"
    elseif k == "groups" then
      fault.groups = experiment.partitions({ "0:0:" .. v }, names)[1].groups
    elseif k == "from" or k == "to" then
      local list = {}
      for name in v:gmatch("[^,]+") do list[#list + 1] = name end
      fault[k] = list
    elseif k == "when" then
      local node, point, value = v:match("^([%w_]+)%.([%w_]+)=(.+)$")
      if not node then point, value = v:match("^([%w_]+)=(.+)$") end
      if not point then
        cmd.usage_error("bad --fault '%s': when=[NODE.]POINT=VALUE expected (got '%s')", text, v)
      end
      fault.when = { node = node, [point] = tonumber(value) or value }
    else
      fault[k] = v
    end
  end
  return fault
end

--- The twin_sides of --twin-sides items ("n01=n02|n03,n04").
function experiment.twin_sides(args)
  if #args.twin_sides == 0 then return nil end
  local out = {}
  for _, item in ipairs(args.twin_sides) do
    local twin, groups = item:match("^([%w_]+)=(.+)$")
    if not twin then cmd.usage_error("bad --twin-sides '%s' (NAME=GROUP|GROUP expected)", item) end
    local known, names = {}, net.names(args.nodes)
    for _, name in ipairs(names) do known[name] = true end
    local sides = {}
    for g in (groups .. "|"):gmatch("([^|]*)|") do
      local side = {}
      for name in g:gmatch("[^,]+") do
        if not known[name] then
          cmd.usage_error("bad --twin-sides '%s': unknown node '%s' (nodes are %s to %s)", item, name,
            names[1], names[#names])
        end
        side[#side + 1] = name
      end
      sides[#sides + 1] = side
    end
    if #sides ~= 2 or #sides[1] == 0 or #sides[2] == 0 then
      cmd.usage_error("bad --twin-sides '%s': two groups of names expected, NAME=GROUP|GROUP", item)
    end
    out[twin] = sides
  end
  return out
end

--- The faults of a --schedule file: a JSON list of faults, or an object
-- (a trace's header) with one under "schedule".
function experiment.schedule(path)
  local fh, err = io.open(path, "rb")
  if not fh then cmd.usage_error("--schedule: cannot read %s", tostring(err)) end
  local first = fh:read("*l") or ""
  local rest = fh:read("*a") or ""
  fh:close()
  local cjson = require "cjson"
  local ok, data = pcall(cjson.decode, first .. "\n" .. rest)
  if not ok then ok, data = pcall(cjson.decode, first) end -- a trace: its header line
  if not ok or type(data) ~= "table" then
    cmd.usage_error("--schedule: %s is not JSON (a list of faults, or a trace whose first line holds one)",
      path)
  end
  if data.schedule ~= nil then data = data.schedule end
  if type(data) ~= "table" then cmd.usage_error("--schedule: %s holds no list of faults", path) end
  return data
end

--- The timing overrides of a --timing text ("voting=2,scale=0.1"),
-- checked as csm.new checks timing.
function experiment.timing(text)
  if text == nil then return nil end
  local timing = {}
  for item in text:gmatch("[^,]+") do
    local name, value = item:match("^%s*([%w_]+)%s*=%s*(%S+)%s*$")
    if not name then cmd.usage_error("bad --timing '%s' (name=seconds expected)", item) end
    if csm.defaults.timing[name] == nil then
      cmd.usage_error("bad --timing '%s': unknown timing '%s' (timings: %s)", item, name,
        table.concat(layout.sorted_keys(csm.defaults.timing), ", "))
    end
    local seconds, why = cmd.number(name, 0)(value)
    if not seconds then cmd.usage_error("bad --timing '%s': %s", item, why) end
    local problem = layout.timing_problem(name, seconds)
    if problem then cmd.usage_error("bad --timing '%s': %s", item, problem) end
    timing[name] = seconds
  end
  return timing
end

--- The protocol module --protocol names: a shipped one's name, or a Lua
-- file that returns a module (a usage error when it cannot be loaded).
function experiment.protocol(text)
  if harness.protocols[text] then return text end
  if not text:match("%.lua$") then
    local names = {}
    for name in pairs(harness.protocols) do names[#names + 1] = name end
    table.sort(names)
    cmd.usage_error("--protocol: unknown protocol '%s' (shipped: %s; or a FILE.lua)", text,
      table.concat(names, ", "))
  end
  return experiment.load("--protocol", "protocol", text)
end

--- What a run file says of the modules of parsed arguments: { protocol =
-- { name, file, source }, adversary = { name, file, source } or nil } (a
-- shipped protocol by its name alone).
function experiment.modules(args)
  local out = {}
  local mod, source = experiment.protocol(args.protocol)
  if type(mod) == "string" then
    out.protocol = { name = mod }
  else
    out.protocol = { name = mod.name, file = args.protocol, source = source }
  end
  if args.adversary then
    local adv, asource = experiment.load("--adversary", "adversary", args.adversary)
    out.adversary = { name = adv.name, file = args.adversary, source = asource }
  end
  return out
end

--- The module a Lua file returns, and the fingerprint of its source (a
-- usage error, naming option, when it cannot be read, loaded or run, or
-- returns no table).
function experiment.load(option, what, path)
  local fh, err = io.open(path, "rb")
  if not fh then cmd.usage_error("%s: cannot load %s", option, tostring(err)) end
  local source = fh:read("*a")
  fh:close()
  local chunk
  chunk, err = load(source, "@" .. path)
  if not chunk then cmd.usage_error("%s: cannot load %s", option, tostring(err)) end
  local ok, module = pcall(chunk)
  if not ok then cmd.usage_error("%s: %s raised: %s", option, path, tostring(module)) end
  if type(module) ~= "table" then
    cmd.usage_error("%s: %s must return %s %s module table (it returned %s)", option, path,
      what == "adversary" and "an" or "a", what, type(module))
  end
  return module, trace.fingerprint(source)
end

--- The harness configuration of parsed arguments.
function experiment.config(args)
  if args.view_timeout == 0 then cmd.usage_error("--view-timeout must be > 0") end
  local byzantine = experiment.byzantine(args.byzantine, args.nodes)
  local schedule = args.schedule and experiment.schedule(args.schedule) or {}
  for _, text in ipairs(args.fault) do
    schedule[#schedule + 1] = experiment.fault(text, net.names(args.nodes))
  end
  local adversary, adversary_source
  if args.adversary then
    adversary, adversary_source = experiment.load("--adversary", "adversary", args.adversary)
  end
  if (args.crash_at or args.restart_after) and not byzantine.crash then
    cmd.usage_error("%s needs a crash node (--byzantine N:crash)",
      args.crash_at and "--crash-at" or "--restart-after")
  end
  return {
    nodes = args.nodes, byzantine = byzantine, seed = args.seed,
    ranks = args.ranks, time = args.time, latency = args.latency, jitter = args.jitter,
    loss = args.loss, duplicate = args.duplicate, reorder = args.reorder,
    partitions = experiment.partitions(args.partition, net.names(args.nodes)),
    crash_at = args.crash_at, restart_after = args.restart_after, view_timeout = args.view_timeout,
    restarts = args.restarts, timing = experiment.timing(args.timing), trace = args.trace, html = args.html,
    steps_per_instant = args.steps_per_instant, protocol = experiment.protocol(args.protocol),
    adversary = adversary, adversary_source = adversary_source, schedule = schedule,
    twins = #args.twins > 0 and args.twins or nil, twin_sides = experiment.twin_sides(args),
  }
end

-- Raises a usage error unless path can be written (it is then empty).
local function writable(option, path)
  local fh, err = io.open(path, "w")
  if not fh then cmd.usage_error("%s: cannot write %s", option, tostring(err)) end
  fh:close()
end

-- The first line where the files at a and b differ: its number and both
-- lines (nil for a file that ended); nil when they are the same.
local function first_difference(a, b)
  local fa, fb = assert(io.open(a)), assert(io.open(b))
  local n = 0
  while true do
    local la, lb = fa:read("*l"), fb:read("*l")
    n = n + 1
    if la ~= lb then
      fa:close()
      fb:close()
      return n, la, lb
    end
    if la == nil then break end
  end
  fa:close()
  fb:close()
  return nil, n - 1
end

--- --check-determinism: this command line again, twice, in fresh processes
-- (their --trace and --svg left out), and their traces compared.
function experiment.check_determinism()
  local command = cmd.self_command()
  local argv, skip = {}, false
  for _, a in ipairs(cmd.argv or {}) do
    if skip then
      skip = false
    elseif a == "--trace" or a == "--svg" or a == "--html" then
      skip = true
    elseif a ~= "--check-determinism" and not a:match("^%-%-trace=") and not a:match("^%-%-svg=")
      and not a:match("^%-%-html=") then
      argv[#argv + 1] = a
    end
  end
  local traces = { os.tmpname(), os.tmpname() }
  for i, path in ipairs(traces) do
    local args = {}
    for k = 2, #command do args[#args + 1] = command[k] end
    for _, a in ipairs(argv) do args[#args + 1] = a end
    args[#args + 1] = "--trace"
    args[#args + 1] = path
    local status, err = cmd.spawn(command[1], args)
    if status == nil or status > 1 then
      for _, p in ipairs(traces) do os.remove(p) end
      cmd.usage_error("--check-determinism: run %d failed (%s)", i,
        status and "exit " .. status or tostring(err))
    end
  end
  local n, a, b = first_difference(traces[1], traces[2])
  for _, p in ipairs(traces) do os.remove(p) end
  if n == nil then
    print(string.format("determinism: ok (two processes wrote the same trace, %d lines)", a))
    return cmd.OK
  end
  print(string.format("determinism: VIOLATED (the traces of two processes differ from line %d)", n))
  print("  first:  " .. (a or "(the trace ended)"))
  print("  second: " .. (b or "(the trace ended)"))
  print("A run must be a function of its seed: iterate with csm.sorted_pairs where pairs order "
    .. "decides what a node does.")
  return cmd.VIOLATED
end

function experiment.run(args)
  if args.check_determinism then
    experiment.config(args) -- the options are checked here, before anything runs
    return experiment.check_determinism()
  end
  local config = experiment.config(args)
  local checked, why = pcall(harness.config, config)
  if not checked then cmd.usage_error("%s", tostring(why)) end
  -- the timeline is written after the report is printed: paths that cannot
  -- be written are refused before the run
  if args.trace then writable("--trace", args.trace) end
  if args.svg then writable("--svg", args.svg) end
  if args.html then writable("--html", args.html) end
  local report, unwritten = harness.run(config)
  io.write(harness.format(report))
  if unwritten then cmd.usage_error("%s: %s", args.html and "--trace/--html" or "--trace", unwritten) end
  if args.svg then
    local written, err = timeline.write(report, args.svg)
    if not written then cmd.usage_error("--svg: %s", err) end
    print("timeline: " .. args.svg)
  end
  if args.trace then print("trace: " .. args.trace) end
  if args.html then print("page: " .. args.html) end
  return experiment.status(report)
end

--- The exit status of a report's verdict: 0 valid, 1 invalid, 3 unknown.
function experiment.status(report)
  if report.verdict == "invalid" then return cmd.VIOLATED end
  if report.verdict == "unknown" then return cmd.UNKNOWN end
  return cmd.OK
end

return experiment
