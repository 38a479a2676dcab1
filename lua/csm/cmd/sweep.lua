--- `csm sweep`: one experiment over a range of seeds, each seed a run in
-- one of -j worker processes; failures grouped by invariant and signature,
-- each group with its fastest seed and the line that reproduces it; with
-- --out DIR, DIR/summary.json and a run file per failing seed
-- (csm.lab.runfile) for `csm replay` and `csm shrink`.
-- @module csm.cmd.sweep

local cmd = require "csm.cmd"
local experiment = require "csm.cmd.experiment"
local harness = require "csm.lab.harness"
local net = require "csm.lab.net"
local generate = require "csm.lab.generate"
local runfile = require "csm.lab.runfile"
local trace = require "csm.lab.trace"

local sweep = {}

sweep.summary = "Run an experiment over many seeds in worker processes and group the failures."

function sweep.add(c)
  c:description([[
Runs the experiment its options describe (those of csm experiment) once per
seed of --seeds A-B, in -j worker processes, with a progress line on a
terminal. --partitions A-B gives each seed that many random partitions into
two groups, drawn from the seed; --swarm draws each seed's loss,
duplication, reordering, partitions, isolations and pauses from it (after
TigerBeetle's VOPR). Prints the failures grouped by invariant and
signature, with each group's fastest failing seed (least virtual time) and
the command that reproduces it. With --out DIR, writes DIR/summary.json and
DIR/fail-SEED.json per failing seed: a run file that csm replay and csm
shrink take. Exit status 1 when any run failed, 0 otherwise.]])
  c:epilog([[
Example: csm sweep --protocol examples/protocols/broken_quorum.lua --ranks 10
--partitions 0-3 --seeds 1-200 -j 2 --out /tmp/bq. A seed's drawn faults are
the same in every process; the runs themselves are those of csm experiment
--seed SEED with the drawn faults added to --fault and --schedule's.]])
  experiment.options(c, true)
  c:option("--seeds", "A-B: the seeds to run (or one seed).")
  c:option("-j --jobs", "Worker processes (default: the number of cores).")
    :convert(cmd.integer("--jobs", 1, 256))
  c:option("--partitions", "A-B: each seed draws A to B partitions into two groups.")
  c:flag("--swarm", "Draw each seed's fault rates and schedule from the seed.")
  c:option("--horizon", "Seconds of virtual time in which drawn faults start (default: 1 s and 0.1 s per "
    .. "rank of --ranks, times the timing scale).")
    :convert(cmd.number("--horizon", 0))
  c:option("--out", "DIR: write summary.json and a run file per failing seed.")
  c:option("--param", "NAME=V1,V2,...: run every seed at each value (repeatable: every combination); NAME is "
    .. "an experiment option (loss, latency, jitter, duplicate, reorder, view_timeout, nodes, ranks) or "
    .. "timing.NAME. Writes DIR/points.csv and a plot per metric (needs --out).")
    :count("*")
  c:option("--hosts", "FILE: run the jobs on the hosts of FILE through GNU parallel (--sshloginfile FILE; "
    .. "':' is this machine); each host runs csm at the same path.")
  c:flag("--quiet", "No progress line.")
  c:flag("--worker"):hidden(true)
end

--- A..B of text, checked: two integers, A <= B (or one); a usage error
-- naming option otherwise.
function sweep.range(option, text, min, max)
  local a, b = text:match("^(%d+)%-(%d+)$")
  if not a then a = text:match("^(%d+)$"); b = a end
  a, b = tonumber(a), tonumber(b)
  if not a or a > b or a < min or b > max then
    cmd.usage_error("bad %s '%s' (A-B expected, integers %d <= A <= B <= %s)", option, text, min,
      max == 2 ^ 53 and "2^53" or tostring(max))
  end
  return a, b
end

local range = sweep.range

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- ---- parameters ----

local PARAMS = { loss = "probability", duplicate = "probability", reorder = "probability", latency = "number",
                 jitter = "number", view_timeout = "number", nodes = "integer", ranks = "integer" }

--- The names of --param items, in order.
function sweep.param_names(args)
  local out = {}
  for _, item in ipairs(args.param or {}) do out[#out + 1] = item:match("^([%w_.]+)=") end
  return out
end

--- The points of --param items: every combination of their values, the
-- first parameter slowest; nil without --param.
function sweep.points(args)
  if not args.param or #args.param == 0 then return nil end
  local axes = {}
  for _, item in ipairs(args.param) do
    local name, values = item:match("^([%w_.]+)=(.+)$")
    if not name then cmd.usage_error("bad --param '%s' (NAME=V1,V2,... expected)", item) end
    local timing = name:match("^timing%.([%w_]+)$")
    if not timing and not PARAMS[name] then
      local known = {}
      for k in pairs(PARAMS) do known[#known + 1] = k end
      table.sort(known)
      cmd.usage_error("bad --param '%s': unknown parameter '%s' (%s, or timing.NAME)", item, name,
        table.concat(known, ", "))
    end
    if timing and require("csm").defaults.timing[timing] == nil then
      cmd.usage_error("bad --param '%s': unknown timing '%s'", item, timing)
    end
    local list = {}
    for v in values:gmatch("[^,]+") do
      local x = tonumber(v)
      local kind = timing and "number" or PARAMS[name]
      if x == nil or x < 0 or (kind == "probability" and x > 1)
        or (kind == "integer" and (x % 1 ~= 0 or x < 1))
        or (timing and x <= 0) then
        cmd.usage_error("bad --param '%s': '%s' is not a %s", item, v,
          kind == "probability" and "probability in [0, 1]" or kind == "integer" and "positive integer"
          or timing and "number > 0" or "number >= 0")
      end
      list[#list + 1] = x
    end
    axes[#axes + 1] = { name = name, values = list }
  end
  local points = { {} }
  for _, axis in ipairs(axes) do
    local next_points = {}
    for _, p in ipairs(points) do
      for _, v in ipairs(axis.values) do
        local q = copy(p)
        q[axis.name] = v
        next_points[#next_points + 1] = q
      end
    end
    points = next_points
  end
  return points
end

--- base with a point's parameters set (timing.NAME into a copy of timing).
function sweep.with_params(base, params)
  local c = copy(base)
  for name, v in pairs(params) do
    local timing = name:match("^timing%.([%w_]+)$")
    if timing then
      c.timing = copy(c.timing or {})
      c.timing[timing] = v
    else
      c[name] = v
    end
  end
  return c
end

-- ---- the worker: seeds in on stdin, one JSON line per run out ----

--- The span in which drawn faults start: --horizon, or 1 s (the nodes'
-- first liveness round) and 0.1 s per rank, at the run's timing scale.
function sweep.horizon(args, c)
  if args.horizon then return args.horizon end
  local scale = c.timing and c.timing.scale or 1
  return (1 + 0.1 * (c.ranks or 100)) * scale
end

-- The harness configuration of seed, given the base configuration: the
-- drawn faults added.
function sweep.config_for(base, args, seed)
  local c = copy(base)
  c.seed = seed
  c.schedule = copy(base.schedule or {})
  local names = net.names(c.nodes)
  local d = generate.draw(seed)
  local horizon = sweep.horizon(args, c)
  if args.swarm then
    local rates, drawn = generate.swarm(d, names, horizon)
    for k, v in pairs(rates) do c[k] = v end
    for _, f in ipairs(drawn) do c.schedule[#c.schedule + 1] = f end
  end
  if args.partitions then
    local lo, hi = range("--partitions", args.partitions, 0, 100)
    for _, f in ipairs(generate.partitions(d, names, lo, hi, horizon)) do c.schedule[#c.schedule + 1] = f end
  end
  return c
end

-- One seed's run, as the line the worker writes.
local function run_seed(base, args, modules, seed)
  local c = sweep.config_for(base, args, seed)
  local clock = os.clock()
  local ok, r = pcall(harness.run, c)
  local out = { seed = seed, wall = os.clock() - clock }
  if not ok then
    -- a run that raises (the protocol's error, or the adversary's) failed
    out.verdict, out.invariant = "invalid", "error"
    out.signature = "error:" .. tostring(r):gsub("\n.*", ""):gsub("^[^:]*:%d+: ", "")
    out.text = tostring(r):gsub("\n.*", "")
    out.run = runfile.make(c, nil, modules)
    out.run.expect = { verdict = out.verdict, invariant = "error", signature = out.signature }
    return out
  end
  local o = runfile.outcome(r)
  for k, v in pairs(o) do out[k] = v end
  out.virtual, out.rounds = r.virtual, r.rounds
  out.coverage = r.coverage
  for k, v in pairs(require("csm.lab.plots").metrics_of(r)) do out[k] = v end
  if o.verdict ~= "valid" then out.run = runfile.make(c, r, modules) end
  return out
end

local function worker(args)
  local base = experiment.config(args)
  base.trace, base.svg = nil, nil
  local modules = experiment.modules(args)
  local cjson = require "cjson"
  for line in io.lines() do
    local seed, point, params = tonumber(line), nil, nil
    if seed == nil and line:sub(1, 1) == "{" then
      local job = cjson.decode(line)
      seed, point, params = job.seed, job.point, job.params
      if math.tointeger then seed = math.tointeger(seed) or seed end
    end
    if seed then
      local config = base
      if params then config = sweep.with_params(base, params) end
      local res = run_seed(config, args, modules, seed)
      res.point = point
      io.stdout:write(trace.json(res), "\n")
      io.stdout:flush()
    end
  end
  return cmd.OK
end

-- ---- the parent: hands seeds to workers, gathers their lines ----

-- s as one word of a shell command line.
local function shell_quote(s)
  if s:match("^[%w%-%._/=,:+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- This command line for a worker: the sweep's own options less those only
-- the parent uses.
local function worker_args()
  local command = cmd.self_command()
  local out = {}
  for k = 2, #command do out[#out + 1] = command[k] end
  local skip = false
  local parent_only = { ["--seeds"] = true, ["-j"] = true, ["--jobs"] = true, ["--out"] = true,
                        ["--param"] = true, ["--hosts"] = true }
  for _, a in ipairs(cmd.argv or {}) do
    if skip then
      skip = false
    elseif parent_only[a] then
      skip = true
    elseif a ~= "--quiet" and not a:match("^%-%-seeds=") and not a:match("^%-%-jobs=")
      and not a:match("^%-%-out=") and not a:match("^%-j%d") and not a:match("^%-%-param=")
      and not a:match("^%-%-hosts=") then
      out[#out + 1] = a
    end
  end
  out[#out + 1] = "--worker"
  return command[1], out
end

local function cores()
  local ok, uv = pcall(require, "luv")
  if ok and uv.available_parallelism then return uv.available_parallelism() end
  if ok and uv.cpu_info then return #(uv.cpu_info() or { 1 }) end
  return 1
end

-- Runs seeds lo..hi on jobs workers; on_result(line table) for each, in
-- the order they finish. Returns nil, message when a worker fails.
-- With --hosts, one worker: GNU parallel, which runs each job (its line on
-- parallel's stdin) as `echo JOB | csm sweep ... --worker` on a host of the
-- file, and writes each job's lines as they come.
local function parallel_worker(hosts, jobs)
  local program, wargs = worker_args()
  local command = { shell_quote(program) }
  for _, a in ipairs(wargs) do command[#command + 1] = shell_quote(a) end
  return "parallel", { "--sshloginfile", hosts, "--line-buffer", "-j", tostring(jobs), "--no-notice",
                       "echo {} | " .. table.concat(command, " ") }
end

local function farm(list, jobs, on_result, hosts)
  local uv = require "luv"
  local cjson = require "cjson"
  local program, wargs = worker_args()
  local workers = math.min(jobs, #list)
  if hosts then
    program, wargs = parallel_worker(hosts, jobs)
    workers = 1
  end
  local next_job, failure = 1, nil
  local live = 0
  local function feed(w)
    if hosts then
      -- parallel takes every job at once, and hands them out itself
      if not w.closed then
        for _, job in ipairs(list) do w.stdin:write(job .. "\n") end
        w.closed = true
        w.stdin:shutdown()
      end
      return
    end
    if next_job <= #list then
      w.stdin:write(list[next_job] .. "\n")
      next_job = next_job + 1
    elseif not w.closed then
      w.closed = true
      w.stdin:shutdown()
    end
  end
  for _ = 1, workers do
    local w = { stdin = uv.new_pipe(false), stdout = uv.new_pipe(false), buffer = "" }
    local handle, err = uv.spawn(program, { args = wargs, stdio = { w.stdin, w.stdout, 2 } }, function(code)
      live = live - 1
      if code ~= 0 and not failure then failure = string.format("a worker exited with status %d", code) end
      w.handle:close()
    end)
    if not handle then
      return nil, hosts and ("cannot start GNU parallel (apt-get install parallel): " .. tostring(err))
        or ("cannot start a worker: " .. tostring(err))
    end
    w.handle = handle
    live = live + 1
    w.stdout:read_start(function(rerr, chunk)
      if rerr or chunk == nil then
        w.stdout:close()
        return
      end
      w.buffer = w.buffer .. chunk
      while true do
        local nl = w.buffer:find("\n", 1, true)
        if not nl then break end
        local line = w.buffer:sub(1, nl - 1)
        w.buffer = w.buffer:sub(nl + 1)
        local ok, result = pcall(cjson.decode, line)
        if ok and type(result) == "table" then
          result.seed = math.tointeger and math.tointeger(result.seed) or result.seed
          on_result(result)
          feed(w)
        elseif not failure then
          failure = "a worker wrote what is not a result: " .. line:sub(1, 200)
        end
      end
    end)
    feed(w)
  end
  while live > 0 do uv.run("once") end
  uv.run("nowait")
  if failure then return nil, failure end
  return true
end

local function is_tty()
  local ok, uv = pcall(require, "luv")
  return ok and uv.guess_handle(2) == "tty"
end

-- The command line that reproduces seed: the replay of its run file
-- when there is one, else this sweep on that seed alone.
local function reproduce(args, seed)
  if args.out then return string.format("csm replay %s/fail-%d.json", args.out, seed) end
  local out = { "csm sweep" }
  local skip = false
  for _, a in ipairs(cmd.argv or {}) do
    if skip then
      skip = false
    elseif a == "--seeds" or a == "-j" or a == "--jobs" then
      skip = true
    elseif a ~= "sweep" and a ~= "--quiet" then
      out[#out + 1] = shell_quote(a)
    end
  end
  out[#out + 1] = "--seeds " .. seed
  return table.concat(out, " ")
end

local function mkdir(path)
  local uv = require "luv"
  local ok, err, code = uv.fs_mkdir(path, 493) -- 0755
  if not ok and code ~= "EEXIST" then cmd.usage_error("--out: cannot make %s: %s", path, tostring(err)) end
  local stat = uv.fs_stat(path)
  if not stat or stat.type ~= "directory" then cmd.usage_error("--out: %s is not a directory", path) end
end

--- Prints and returns the coverage of a sweep: of the machine's
-- transitions (list), those taken (counts by name) and never taken, and
-- the protocol's marks.
function sweep.coverage(transitions, taken, marks)
  local never, count = {}, 0
  for _, t in ipairs(transitions) do
    if (taken[t] or 0) > 0 then count = count + 1 else never[#never + 1] = t end
  end
  if #transitions > 0 then
    print(string.format("coverage: %d of the machine's %d transitions taken in some run", count,
      #transitions))
    if #never > 0 then print("  never taken: " .. table.concat(never, "; ")) end
  end
  local names = {}
  for k in pairs(marks) do names[#names + 1] = k end
  table.sort(names)
  if #names > 0 then
    local shown = {}
    for i, k in ipairs(names) do shown[i] = string.format("%s %d", k, marks[k]) end
    print("  marks: " .. table.concat(shown, ", "))
  end
  return { transitions = #transitions, taken = count, never = never, marks = marks, counts = taken }
end

function sweep.run(args)
  if args.worker then return worker(args) end
  if not args.seeds then cmd.usage_error("--seeds A-B is required") end
  local lo, hi = range("--seeds", args.seeds, 0, 2 ^ 53)
  if args.partitions then range("--partitions", args.partitions, 0, 100) end
  -- the options are checked here, once, before any worker starts
  local checked, why = pcall(harness.config, experiment.config(args))
  if not checked then cmd.usage_error("%s", tostring(why)) end
  if args.out then mkdir(args.out) end
  local jobs = args.jobs or cores()
  local points = sweep.points(args)
  if points and not args.out then
    cmd.usage_error("--param needs --out DIR (for points.csv and the plots)")
  end
  local list = {}
  for seed = lo, hi do
    if points then
      for k, point in ipairs(points) do
        list[#list + 1] = trace.json { seed = seed, point = k, params = point }
      end
    else
      list[#list + 1] = tostring(seed)
    end
  end
  local total, done, failed, unknown = #list, 0, 0, 0
  local rows = {}
  local groups, order, results = {}, {}, {}
  local clock = require("luv").hrtime()
  local tty = is_tty() and not args.quiet
  local last_print = 0
  local function progress(final)
    local uv = require "luv"
    local now = uv.hrtime()
    if not final and now - last_print < 2e8 then return end
    last_print = now
    local elapsed = (now - clock) / 1e9
    local rate = elapsed > 0 and done / elapsed or 0
    local left = rate > 0 and (total - done) / rate or 0
    io.stderr:write(string.format("\rsweep: %d/%d runs, %d failed, %.1f runs/s, %s left   ", done, total,
      failed,
      rate, left >= 1 and string.format("%.0f s", left) or "<1 s"))
    if final then io.stderr:write("\n") end
  end
  local transitions, taken, marks = nil, {}, {}
  if args.hosts then
    local fh = io.open(args.hosts, "rb")
    if not fh then cmd.usage_error("--hosts: cannot read %s", args.hosts) end
    fh:close()
  end
  local ok, err = farm(list, jobs, function(res)
    done = done + 1
    if points then rows[#rows + 1] = res end
    local cov = res.coverage
    if type(cov) == "table" then
      if transitions == nil and type(cov.transitions) == "table" and #cov.transitions > 0 then
        transitions = cov.transitions
      end
      for k, n in pairs(type(cov.taken) == "table" and cov.taken or {}) do
        taken[k] = (taken[k] or 0) + n
      end
      for k, n in pairs(type(cov.marks) == "table" and cov.marks or {}) do
        marks[k] = (marks[k] or 0) + n
      end
    end
    results[#results + 1] = { seed = res.seed, verdict = res.verdict, signature = res.signature }
    if res.verdict == "invalid" then
      failed = failed + 1
      local g = groups[res.signature]
      if not g then
        g = { signature = res.signature, invariant = res.invariant, count = 0, seeds = {} }
        groups[res.signature] = g
        order[#order + 1] = res.signature
      end
      g.count = g.count + 1
      g.seeds[#g.seeds + 1] = res.seed
      local v = res.virtual or math.huge
      if not g.fastest or v < g.fastest_virtual or (v == g.fastest_virtual and res.seed < g.fastest) then
        g.fastest, g.fastest_virtual, g.text = res.seed, v, res.text
      end
      if args.out and res.run then
        local written, werr = runfile.write(res.run, string.format("%s/fail-%d.json", args.out, res.seed))
        if not written then io.stderr:write("csm sweep: ", werr, "\n") end
      end
    elseif res.verdict == "unknown" then
      unknown = unknown + 1
    end
    if tty then progress(false) end
  end, args.hosts)
  if tty then progress(true) end
  if not ok then cmd.usage_error("%s", err) end
  local elapsed = (require("luv").hrtime() - clock) / 1e9
  table.sort(order)
  table.sort(results, function(a, b) return a.seed < b.seed end)
  print(string.format("csm sweep: seeds %d-%d%s, %d runs on %d worker(s) in %.1f s (%.1f runs/s): %d failed, "
    .. "%d unknown", lo, hi, points and string.format(" at %d points", #points) or "", total,
    math.min(jobs, total), elapsed, elapsed > 0 and total / elapsed or 0,
    failed,
    unknown))
  local summary = { seeds = { lo, hi }, runs = total, failed = failed, unknown = unknown, jobs = jobs,
                    wall = elapsed, groups = {}, results = results }
  for _, sig in ipairs(order) do
    local g = groups[sig]
    table.sort(g.seeds)
    local shown = {}
    for i = 1, math.min(#g.seeds, 10) do shown[i] = tostring(g.seeds[i]) end
    print(string.format("  %s: %d run(s), seeds %s%s", sig, g.count, table.concat(shown, " "),
      #g.seeds > 10 and " ..." or ""))
    print(string.format("    fastest: seed %d (%.3f virtual s): %s", g.fastest, g.fastest_virtual,
      tostring(g.text or "")))
    local line = reproduce(args, g.fastest)
    print("    reproduce: " .. line)
    summary.groups[#summary.groups + 1] = { signature = sig, invariant = g.invariant, count = g.count,
      seeds = g.seeds, fastest = g.fastest, fastest_virtual = g.fastest_virtual, reproduce = line }
  end
  summary.coverage = sweep.coverage(transitions or {}, taken, marks)
  if points then
    local plots = require "csm.lab.plots"
    local names = sweep.param_names(args)
    local csv = args.out .. "/points.csv"
    local written, werr = plots.csv(csv, names, points, rows)
    if not written then cmd.usage_error("--out: %s", werr) end
    print("points: " .. csv)
    for _, metric in ipairs(plots.metrics) do
      local path = string.format("%s/%s.svg", args.out, metric)
      written, werr = plots.svg(path, metric, names, points, rows)
      if not written then cmd.usage_error("--out: %s", werr) end
      print("plot: " .. path)
    end
  end
  if args.out then
    local path = args.out .. "/summary.json"
    local fh, ferr = io.open(path, "wb")
    if not fh then cmd.usage_error("--out: cannot write %s", tostring(ferr)) end
    fh:write(trace.json(summary), "\n")
    fh:close()
    print("summary: " .. path)
  end
  return failed > 0 and cmd.VIOLATED or cmd.OK
end

return sweep
