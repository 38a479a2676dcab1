-- Shared by the specs: error capture, a recording machine on a sim world,
-- and providers whose every method can be replaced per test.
local csm = require "csm"

local support = {}

--- The message fn raised (a spec file's position prefix removed), or nil
-- if it did not. A message that names a file and line of csm's own (lua/,
-- bin/) fails the spec: csm's errors carry no position.
function support.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return nil end
  local text = tostring(err)
  local where = text:match("^([^\n]-:%d+): ")
  if where and not where:find("_spec%.lua:%d+$") and not where:find("support%.lua:%d+$") then
    error("an error names a position of csm's own: " .. text, 0)
  end
  return (text:gsub("^[^\n]-:%d+: ", ""))
end

--- Whether we run on Lua 5.4 (as opposed to LuaJIT).
support.lua54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")

--- The interpreter running the specs, and the repository's root.
support.interpreter = rawget(_G, "jit") and "luajit" or "lua5.4"
support.root = debug.getinfo(1, "S").source:gsub("^@", ""):match("^(.*)/spec/[^/]*$") or "."

--- Runs luv's loop until pred() is true or seconds (default 120) of wall
-- time passed; returns pred(). The bound is for a broken transport, never
-- a timing claim (valgrind and the GC stress run these specs too).
function support.wait_for(pred, seconds)
  local uv = require "luv"
  local deadline = uv.hrtime() + (seconds or 120) * 1e9
  local t = uv.new_timer()
  t:start(10, 10, function() end)
  while not pred() and uv.hrtime() < deadline do uv.run("once") end
  t:close()
  uv.run("nowait")
  return pred()
end

--- The first of n free TCP ports on 127.0.0.1, below Linux's ephemeral
-- ports (32768-), which outgoing connections would take.
function support.free_ports(n)
  local uv = require "luv"
  for _ = 1, 50 do
    local base = 10000 + math.random(0, 22000)
    local ok = true
    for i = 0, n - 1 do
      local s = uv.new_tcp()
      if not s:bind("127.0.0.1", base + i) then ok = false end
      s:close()
    end
    uv.run("nowait")
    if ok then return base end
  end
  error("no free range of " .. n .. " ports")
end

--- The bytes of the file at path.
function support.slurp(path)
  local fh = assert(io.open(path, "rb"))
  local text = fh:read("*a")
  fh:close()
  return text
end

--- s quoted for a POSIX shell.
function support.quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

--- Runs a program of the repository (path from its root, e.g. "bin/csm")
-- under the specs' interpreter with args (a shell-quoted string), from the
-- root; returns its output (stdout and stderr) and exit status. host runs it
-- instead of the interpreter (a path from the root, e.g. support.host()).
-- A program that runs past 10 minutes is killed (exit status 124), so a
-- hang fails its spec instead of stalling the suite.
function support.run(program, args, host)
  local cmd = string.format("cd %s && LUA_PATH=%s LUA_CPATH=%s timeout -k 10 600 %s %s %s 2>&1; "
    .. "echo \"exit=$?\"",
    support.quote(support.root), support.quote(package.path), support.quote(package.cpath),
    host or support.interpreter, program, args or "")
  local pipe = assert(io.popen(cmd))
  local out = pipe:read("*a")
  pipe:close()
  local status = tonumber(out:match("exit=(%d+)%s*$"))
  return (out:gsub("exit=%d+%s*$", "")), status
end

--- Runs the Lua source as a program (from a temporary file), as support.run
-- runs one; returns its output and exit status.
function support.run_source(source, args, host)
  local path = os.tmpname()
  local fh = assert(io.open(path, "w"))
  fh:write(source)
  fh:close()
  local out, status = support.run(path, args, host)
  os.remove(path)
  return out, status
end

--- The build directory csm.core is loaded from (e.g. "build/5.4").
function support.build_dir()
  for entry in package.cpath:gmatch("[^;]+") do
    local dir = entry:match("^(.-)/%?%.so$")
    local fh = dir and io.open(dir .. "/csm/core.so")
    if fh then
      fh:close()
      return dir
    end
  end
  error("no csm/core.so on package.cpath")
end

--- Providers for one node: a one-node protocol that finalizes every rank
-- with its own proposal. Pass overrides as { voting = { is_quorum = fn } }.
-- Every call is recorded in p.calls as "provider.method".
function support.providers(id, overrides)
  overrides = overrides or {}
  local p = { calls = {} }
  local function record(name) p.calls[#p.calls + 1] = name end
  local base = {
    sync = {
      synchronize = function(_, existing) return existing end,
    },
    leader = {
      get_next_leaders = function() return { id } end,
      prove_next_state = function(_, prior)
        return csm.value("p" .. (prior:rank() + 1), prior:rank() + 1)
      end,
    },
    liveness = {
      collect = function()
        local active = p.sm and p.sm:active_state()
        return csm.value("live-" .. id, active and active:rank() + 1 or 1)
      end,
      send_liveness = function() return true end,
    },
    voting = {
      send_proposal = function() return true end,
      decide_and_send_vote = function(_, proposals)
        local _, proposal = next(proposals)
        return id, csm.value(proposal:identity(), proposal:rank())
      end,
      send_vote = function() return id end,
      is_quorum = function(_, votes) return next(votes) ~= nil end,
      finalize_votes = function(_, proposals)
        local peer, proposal = next(proposals)
        return proposal, peer
      end,
      send_confirmation = function() return true end,
    },
  }
  for name, methods in pairs(base) do
    local provider = {}
    for method, fn in pairs(methods) do
      local chosen = (overrides[name] and overrides[name][method]) or fn
      provider[method] = function(...)
        record(name .. "." .. method)
        return chosen(...)
      end
    end
    p[name] = provider
  end
  return p
end

--- A machine on a sim world with the providers above and fast timings;
-- opts are passed to csm.new over these defaults. Returns sm, world, log
-- where log.transitions lists "from -event-> to" and log.errors the
-- trace.error calls as "message: err".
function support.machine(opts)
  opts = opts or {}
  local world = opts.loop or csm.sim { seed = 1 }
  local id = opts.id or "n1"
  local p = support.providers(id, opts.overrides)
  local log = { transitions = {}, errors = {}, traces = {} }
  local o = {
    id = id, loop = world, initial = csm.value("genesis", 0), emit_on_send = true,
    minimum_provers = 1,
    sync = p.sync, voting = p.voting, leader = p.leader, liveness = p.liveness,
    trace = {
      trace = function(msg) log.traces[#log.traces + 1] = msg end,
      error = function(msg, err) log.errors[#log.errors + 1] = msg .. ": " .. tostring(err) end,
    },
  }
  for k, v in pairs(opts) do
    if k ~= "overrides" and k ~= "loop" then o[k] = v end
  end
  if opts.initial == false then o.initial = nil end
  local sm = csm.new(o)
  p.sm = sm
  log.providers = p
  sm:add_listener(function(from, to, event)
    log.transitions[#log.transitions + 1] = from .. " -" .. event .. "-> " .. to
  end)
  return sm, world, log
end

local SEED_STATES = { "loading", "collecting", "liveness_check", "proving", "publishing",
                      "voting", "finalizing", "verifying", "stopping" }

--- Every seed state with its behaviour switched off, so only send_event and
-- timers move a machine; the states in extra are merged over it.
function support.quiet_states(extra)
  local states = {}
  for name in pairs(csm.states) do states[name] = { behavior = false } end
  for name, cfg in pairs(extra or {}) do states[name] = cfg end
  return states
end

--- support.machine with every behaviour off (opts.states merged over).
function support.quiet(opts)
  opts = opts or {}
  opts.states = support.quiet_states(opts.states)
  return support.machine(opts)
end

--- Sends each event (each must be queued), then runs what is due now.
function support.drive(sm, world, ...)
  for _, event in ipairs { ... } do assert(sm:send_event(event)) end
  world:run("nowait")
end

--- Records "time from -event-> to" for every transition of sm.
function support.timeline(sm, world)
  local list = {}
  sm:add_listener(function(from, to, event)
    list[#list + 1] = string.format("%g %s -%s-> %s", world:now(), from, event, to)
  end)
  return list
end

--- A machine (support.machine) whose start goes straight to state, with
-- every other state's behaviour switched off so that a run stops where it
-- is asserted. opts: support.machine's, plus keep = {state = true} (keep
-- those behaviours) and setup = fn(sm, world, log) run before start.
-- log.timeline is support.timeline's list.
function support.enter(state, opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do
    if k ~= "keep" and k ~= "setup" then o[k] = v end
  end
  o.states = o.states or {}
  for _, name in ipairs(SEED_STATES) do
    if name ~= state and not (opts.keep and opts.keep[name]) and o.states[name] == nil then
      o.states[name] = { behavior = false }
    end
  end
  o.transitions = { { from = "stopped", event = "start", to = state } }
  local sm, world, log = support.machine(o)
  log.timeline = support.timeline(sm, world)
  if opts.setup then opts.setup(sm, world, log) end
  assert(sm:start())
  return sm, world, log
end

--- A second machine on world that finalizes one rank per virtual second,
-- to show that it goes on while another is stuck or closed.
function support.bystander(world)
  return support.machine {
    loop = world, id = "b1",
    overrides = { leader = { prove_next_state = function(_, prior, _, ctx)
      ctx:sleep(1)
      return csm.value("b" .. (prior:rank() + 1), prior:rank() + 1)
    end } },
  }
end

--- Index of the first entry of list equal to x, or nil.
function support.find(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
end

--- Two full collections, after LuaJIT's compiled traces are flushed: a
-- trace may hold an object it was recorded with as a constant, so an
-- object nothing else refers to can outlive a collection until its traces
-- go.
function support.full_gc()
  if rawget(_G, "jit") then jit.flush() end
  collectgarbage("collect")
  collectgarbage("collect")
end

return support
