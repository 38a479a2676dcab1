--- csm: a round-based consensus state machine for Lua.
-- The C module `csm.core` owns loops, timers, the event queue and the
-- per-rank ledger; this file adds machine construction, the driver that
-- runs state hooks and behaviours as coroutines, `ctx`, and the Lua half
-- of the machine's methods.
-- @module csm

local core = require "csm.core"

local coroutine_create, coroutine_resume, coroutine_yield =
  coroutine.create, coroutine.resume, coroutine.yield
local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local type, select, error, pairs, ipairs, tostring = type, select, error, pairs, ipairs, tostring
local traceback = debug.traceback

local csm = { _VERSION = "csm 0.1.0" }

csm.value = core.value
csm.peer = core.peer
csm.is_value = core.is_value
csm.loop = core.loop
csm.sim = core.sim

--- Runs the real loop: `csm.loop():run(...)`.
function csm.run(...)
  return core.loop():run(...)
end

local seed = core.builtin()

--- State names: `csm.states.voting == "voting"`.
csm.states = {}
for _, name in ipairs(seed.states) do csm.states[name] = name end

--- Event names: `csm.events.quorum_reached == "quorum_reached"`.
csm.events = {}
for _, name in ipairs(seed.events) do csm.events[name] = name end

local NSEED_STATES = #seed.states

--- The seed's defaults: timeouts and intervals in seconds, limits.
csm.defaults = {
  timing = {
    sync_retry = 10, liveness_resend = 1, proving_poll = 1, proving_grace = 10,
    vote_resend = 1, scale = 1,
  },
  limits = seed.limits,
}
for state, seconds in pairs(seed.timeouts) do csm.defaults.timing[state] = seconds end

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

local function argerror(fname, n, name, expected, got)
  fail("%s: bad argument #%d '%s' (%s, got %s)", fname, n, name, expected, type(got))
end

-------------------------------------------------------------------------------
-- Tasks: coroutines that run behaviours, and what they wait on.
-------------------------------------------------------------------------------

-- A ctx is also the task that runs its behaviour (the main task), so a
-- behaviour run makes one table. Tasks it spawns point to it with .ctx.
-- Task fields: co, fn, data (main) or args (spawned), token, blocked,
-- timer, finished, results; absent ones read as the class defaults below.
local Ctx = { cancelled_ = false, wake_pending = false, token = 0, finished = false }
Ctx.__index = Ctx
local Task = { token = 0, finished = false }
Task.__index = Task

local current -- the task whose coroutine is running, if any

local fatal -- forward: closes a machine after a bug

local function ctx_of(task)
  return task.ctx or task
end

-- Tasks run on pooled coroutines: a coroutine whose job returned yields
-- DONE and waits for the next task, so a behaviour run costs no new thread.
local DONE = {}
local idle, nidle = {}, 0
local IDLE_MAX = 32

local function run_task(task)
  local args = task.args
  if args then
    task.results = pack(task.fn(unpack(args, 1, args.n)))
  else
    task.fn(task.sm, task, task.data)
  end
end

-- The body of a pooled coroutine. task is cleared before the yield so an
-- idle coroutine holds on to nothing of the job it ran.
local function body(task)
  repeat
    run_task(task)
    task = nil -- luacheck: ignore 311
    task = coroutine_yield(DONE)
  until false
end

-- The text of an error value, even one whose __tostring fails.
local function error_text(err)
  local ok, text = pcall(tostring, err)
  if ok and type(text) == "string" then return text end
  return string.format("a %s error value (tostring failed: %s)", type(err),
    ok and "not a string" or type(text) == "string" and text or type(text))
end

local function finish(task, ok, first)
  if not ok then
    task.finished = true
    fatal(ctx_of(task).sm, traceback(task.co, error_text(first)))
    return
  end
  if first == DONE then
    task.finished = true
    if nidle < IDLE_MAX then
      nidle = nidle + 1
      idle[nidle] = task.co
    end
    task.co = false
    local ctx = task.ctx
    if ctx and not ctx.cancelled_ then ctx:_wake() end
  end
end

local function resume(task, ...)
  local prev = current
  current = task
  if task.blocked then task.blocked = nil end
  finish(task, coroutine_resume(task.co, ...))
  current = prev
end

-- Runs task until it first blocks or returns.
local function start(task)
  local co
  if nidle > 0 then
    co = idle[nidle]
    idle[nidle] = nil
    nidle = nidle - 1
  else
    co = coroutine_create(body)
  end
  task.co = co
  resume(task, task)
end

-- Appends item to the list owner[key], making the list on first use.
local function append(owner, key, item)
  local list = owner[key]
  if list == nil then
    list = {}
    owner[key] = list
  end
  list[#list + 1] = item
end

--- Whether the task's function has returned.
function Task:done()
  return self.finished == true
end

--- What the task's function returned, or nil, "not done".
function Task:result()
  if not self.finished or not self.results then return nil, "not done" end
  return unpack(self.results, 1, self.results.n)
end

-- Marks task as blocked on kind and returns a token that later wake-ups
-- must present, so a stale one (an old timer, a second resolve) is ignored.
local function block(task, kind)
  local token = task.token + 1
  task.token = token
  task.blocked = kind
  return token
end

local function running_task(ctx, fname)
  local task = current
  if task == nil or ctx_of(task) ~= ctx or coroutine.running() ~= task.co then
    fail("%s: called outside a behaviour of this ctx", fname)
  end
  return task
end

local function check_seconds(fname, seconds)
  if type(seconds) ~= "number" or not (seconds >= 0) then
    argerror(fname, 1, "seconds", "number >= 0 expected", seconds)
  end
end

-- The ctx of one behaviour run: fn(sm, ctx, data) is its main task.
local function new_ctx(sm, d, fn, data)
  return setmetatable({ sm = sm, d = d, fn = fn, data = data, co = false }, Ctx)
end

--- Whether the state this ctx belongs to has been left.
function Ctx:cancelled()
  return self.cancelled_
end

--- Suspends the calling behaviour for seconds.
-- @return true, or nil, "canceled"
function Ctx:sleep(seconds)
  check_seconds("ctx:sleep", seconds)
  local task = running_task(self, "ctx:sleep")
  if self.cancelled_ then return nil, "canceled" end
  local token = block(task, "sleep")
  task.timer = self.d.loop:after(seconds, function()
    if task.token == token and task.blocked == "sleep" then
      task.timer = nil
      resume(task, true)
    end
  end)
  return coroutine_yield()
end

--- Waits for a callback: fn(resolve) is called, and await returns what
-- resolve gets. A second resolve, or one after cancellation, is ignored.
function Ctx:await(fn)
  if type(fn) ~= "function" then argerror("ctx:await", 1, "fn", "function expected", fn) end
  local task = running_task(self, "ctx:await")
  if self.cancelled_ then return nil, "canceled" end
  local token = task.token + 1
  task.token = token
  local resolved = false
  local loop = self.d.loop
  local function resolve(...)
    if resolved then return end
    resolved = true
    local args = pack(...)
    loop:_post(function()
      if task.token == token and task.blocked == "await" then
        resume(task, unpack(args, 1, args.n))
      end
    end)
  end
  fn(resolve)
  if task.token == token then task.blocked = "await" end
  return coroutine_yield()
end

--- Waits up to seconds, returning early when the machine receives a message
-- or a spawned task finishes.
-- @return "timeout" | "wake" | nil, "canceled"
function Ctx:wait(seconds)
  check_seconds("ctx:wait", seconds)
  local task = running_task(self, "ctx:wait")
  if self.cancelled_ then return nil, "canceled" end
  if self.wake_pending then
    self.wake_pending = false
    return "wake"
  end
  local token = block(task, "wait")
  append(self, "waiters", task)
  task.timer = self.d.loop:after(seconds, function()
    if task.token == token and task.blocked == "wait" then
      task.timer = nil
      local list = self.waiters or {}
      for i = #list, 1, -1 do
        if list[i] == task then table.remove(list, i) end
      end
      resume(task, "timeout")
    end
  end)
  return coroutine_yield()
end

-- A message arrived or a spawned task finished: wake the waiters (in the
-- order they began waiting), or remember it for the next wait.
function Ctx:_wake()
  local list = self.waiters
  if list == nil or #list == 0 then
    self.wake_pending = true
    return
  end
  self.waiters = nil
  for _, task in ipairs(list) do
    if task.blocked == "wait" then
      if task.timer then task.timer:cancel(); task.timer = nil end
      resume(task, "wake")
    end
  end
end

--- Queues event on the machine unless this ctx is cancelled.
-- @return true, or nil, err
function Ctx:send_event(event)
  if self.cancelled_ then return nil, "canceled" end
  return self.sm:send_event(event)
end

--- Runs fn(...) in a new task that shares this ctx.
function Ctx:spawn(fn, ...)
  if type(fn) ~= "function" then argerror("ctx:spawn", 1, "fn", "function expected", fn) end
  local task = setmetatable({ ctx = self, fn = fn, args = pack(...), co = false }, Task)
  append(self, "spawned", task)
  if self.cancelled_ then
    task.finished = true
    return task
  end
  start(task)
  return task
end

-- Leaves the state: every blocked task resumes with nil, "canceled".
local function cancel_task(loop, task)
  if task.blocked then
    if task.timer then task.timer:cancel(); task.timer = nil end
    block(task, "canceled")
    loop:_post(function() resume(task, nil, "canceled") end)
  end
end

local function cancel(ctx)
  ctx.cancelled_ = true
  local loop = ctx.d.loop
  if ctx.blocked then cancel_task(loop, ctx) end
  local spawned = ctx.spawned
  if spawned then
    for _, task in ipairs(spawned) do cancel_task(loop, task) end
  end
  if ctx.waiters then ctx.waiters = nil end
end

-------------------------------------------------------------------------------
-- The machine's Lua methods.
-------------------------------------------------------------------------------

local MACHINE = core.metatable("csm.machine")
local Machine = MACHINE.__index

-- machine -> its Lua half, so methods need no C call to reach it. Weak
-- both ways: the Lua half refers back to the machine.
local datas = setmetatable({}, { __mode = "kv" })

-- The Lua half of the machine's state, after checking self.
local function data_of(self, fname)
  local d = datas[self]
  if d then return d end
  if getmetatable(self) ~= MACHINE then
    fail("%s: bad self (csm machine expected, got %s)", fname, type(self))
  end
  d = self:_data()
  datas[self] = d
  return d
end

local function notify(d, message, err)
  if err == nil then
    if d.on_trace then d.on_trace(message) end
  elseif d.on_error then
    d.on_error(message, err)
  end
end

fatal = function(sm, err)
  local d = sm:_data()
  if d.error == nil then d.error = err end
  pcall(notify, d, "fatal error encountered", err)
  sm:close()
end

-- sm:send_event(event) is C (src/machine.c): it is the hottest call.

--- Cancels everything at once: the machine is left stopped, listeners are
-- not told, and start is refused from now on.
function Machine:close()
  local d = data_of(self, "sm:close")
  local ctx = d.ctx
  d.closed = true
  self:_close()
  if ctx then
    d.ctx = nil
    cancel(ctx)
  end
end

--- The fatal error that closed the machine, if any.
function Machine:error()
  return data_of(self, "sm:error").error
end

--- Adds a listener: fn(from, to, event), or an object whose
-- on_transition(self, from, to, event) is called.
-- @return a handle for remove_listener
function Machine:add_listener(listener)
  local d = data_of(self, "sm:add_listener")
  local fn
  if type(listener) == "function" then
    fn = listener
  elseif type(listener) == "table" and type(listener.on_transition) == "function" then
    fn = function(from, to, event) return listener:on_transition(from, to, event) end
  else
    argerror("sm:add_listener", 1, "listener", "function or table with on_transition expected",
      listener)
  end
  local handle = { fn = fn, listener = listener }
  local list = {}
  for i, h in ipairs(d.listeners) do list[i] = h end
  list[#list + 1] = handle
  d.listeners = list
  return handle
end

--- Removes a listener added by add_listener.
-- @return true if it was there
function Machine:remove_listener(handle)
  local d = data_of(self, "sm:remove_listener")
  local list, found = {}, false
  for _, h in ipairs(d.listeners) do
    if h == handle or h.listener == handle then found = true else list[#list + 1] = h end
  end
  d.listeners = list
  return found
end

function Machine:id() return data_of(self, "sm:id").id end
function Machine:loop() return data_of(self, "sm:loop").loop end

--- The provider table given to csm.new under name, or nil.
function Machine:provider(name) return data_of(self, "sm:provider").providers[name] end
function Machine:next_state() return data_of(self, "sm:next_state").next_state end
function Machine:collected() return data_of(self, "sm:collected").collected end
function Machine:next_provers() return data_of(self, "sm:next_provers").next_provers end
function Machine:chosen_proposer() return data_of(self, "sm:chosen_proposer").chosen_proposer end
function Machine:emit_on_send() return data_of(self, "sm:emit_on_send").emit end

local function optional_value(fname, v, name)
  if v ~= nil and not csm.is_value(v) then argerror(fname, 1, name, "csm value or nil expected", v) end
end

function Machine:set_next_state(v)
  local d = data_of(self, "sm:set_next_state")
  optional_value("sm:set_next_state", v, "state")
  d.next_state = v
end

function Machine:set_collected(v)
  local d = data_of(self, "sm:set_collected")
  optional_value("sm:set_collected", v, "collected")
  d.collected = v
end

function Machine:set_next_provers(list)
  local d = data_of(self, "sm:set_next_provers")
  if list ~= nil and type(list) ~= "table" then
    argerror("sm:set_next_provers", 1, "list", "table or nil expected", list)
  end
  d.next_provers = list or {}
end

function Machine:set_chosen_proposer(p)
  local d = data_of(self, "sm:set_chosen_proposer")
  if p ~= nil and type(p) ~= "string" and not csm.is_value(p) then
    argerror("sm:set_chosen_proposer", 1, "peer", "csm value, string or nil expected", p)
  end
  d.chosen_proposer = p
end

--- The minimum number of provers (calls the function form).
function Machine:minimum_provers()
  local m = data_of(self, "sm:minimum_provers").minimum_provers
  if type(m) == "function" then
    local n = m()
    if type(n) ~= "number" or n < 0 or n % 1 ~= 0 then
      fail("minimum_provers: function returned %s, expected an integer >= 0", tostring(n))
    end
    return n
  end
  return m
end

--- A timeout or interval in seconds, scaled; proving_grace is a count.
function Machine:timing(name)
  local t = data_of(self, "sm:timing").timing[name]
  if t == nil then
    if type(name) ~= "string" then argerror("sm:timing", 1, "name", "string expected", name) end
    fail("sm:timing: unknown timing '%s'", name)
  end
  return t
end

function Machine:trace(message)
  notify(data_of(self, "sm:trace"), message)
end

function Machine:trace_error(message, err)
  notify(data_of(self, "sm:trace_error"), message, err == nil and "error" or err)
end

--- The transition table: { {from=, event=, to=, guarded=, taken=}, ... },
-- taken counting how often each edge was followed.
function Machine:transitions()
  local d, out = data_of(self, "sm:transitions"), {}
  for _, t in ipairs(d.transition_list) do
    local edge = d.state_ids[t.from] * d.nevents + d.event_ids[t.event]
    out[#out + 1] = { from = t.from, event = t.event, to = t.to, guarded = t.guarded,
                      taken = self:_taken(edge) }
  end
  return out
end

--- The state names this machine knows, in id order.
function Machine:states()
  local out = {}
  for i, name in ipairs(data_of(self, "sm:states").state_names) do out[i] = name end
  return out
end

local KINDS = { "liveness", "proposals", "votes", "confirmations" }

--- A snapshot of the machine: state, data, counters and map sizes.
function Machine:inspect()
  local d = data_of(self, "sm:inspect")
  local counters = self:_counters()
  local maps = {}
  for _, kind in ipairs(KINDS) do
    local ranks = {}
    for _, rank in ipairs(self:_ranks(kind)) do ranks[rank] = self:count(kind, rank) end
    maps[kind] = ranks
  end
  return {
    id = d.id, state = self:state(), state_time = self:state_time(),
    transition_count = self:transition_count(), closed = self:closed(), error = d.error,
    active_state = self:active_state(), next_state = d.next_state, collected = d.collected,
    next_provers = d.next_provers, chosen_proposer = d.chosen_proposer,
    minimum_provers = self:minimum_provers(), emit_on_send = d.emit,
    transitions_made = counters.transitions, events_dropped = counters.dropped,
    receives_refused = counters.refused, messages_received = counters.received,
    events_queued = counters.queued, ranks_held = counters.ranks, entries_held = counters.entries,
    sizes = { liveness = counters.liveness, proposals = counters.proposals,
              votes = counters.votes, confirmations = counters.confirmations },
    maps = maps,
  }
end

-- The shape of each provider method's results: what is required and what
-- type each has. A result past these, or nil then a non-nil, is the error.
local RESULTS = {
  sync = { synchronize = { "state?" } },
  voting = {
    send_proposal = { "any" }, decide_and_send_vote = { "peer", "value" },
    send_vote = { "peer?" }, is_quorum = { "boolean" }, finalize_votes = { "value", "peer?" },
    send_confirmation = { "any" },
  },
  leader = { get_next_leaders = { "peers" }, prove_next_state = { "value" } },
  liveness = { collect = { "value" }, send_liveness = { "any" } },
}

local function is_peer(x)
  return (type(x) == "string" and #x > 0) or csm.is_value(x)
end

local function check_result(provider, method, i, want, got)
  local ok
  if want == "any" then ok = true
  elseif want == "boolean" then ok = type(got) == "boolean"
  elseif want == "value" or want == "state?" then ok = csm.is_value(got)
  elseif want == "peer" or want == "peer?" then ok = is_peer(got)
  elseif want == "peers" then
    ok = type(got) == "table"
    if ok then
      for _, p in ipairs(got) do if not is_peer(p) then ok = false end end
    end
  end
  if not ok then
    fail("%s:%s returned a %s as result #%d (%s expected)", provider, method, type(got), i,
      (want:gsub("%?$", "")))
  end
end

-- Checks the results r1, r2 (and r3, where an error may sit) of a call
-- against shape (one or two expected results).
local function checked(provider, method, shape, r1, r2, r3)
  local n = #shape
  if r1 == nil and r2 ~= nil then return nil, r2 end
  if n == 1 then
    if r2 ~= nil then return nil, r2 end
  elseif r3 ~= nil then
    return nil, r3
  end
  for i = 1, n do
    local want, got = shape[i], r2
    if i == 1 then got = r1 end
    if got == nil then
      if want ~= "any" and want ~= "state?" and want ~= "peer?" then
        return nil, string.format("%s:%s returned no result #%d", provider, method, i)
      end
    elseif want ~= "any" then
      check_result(provider, method, i, want, got)
    end
  end
  if n == 1 then return r1 end
  return r1, r2
end

--- Calls a provider method the way the built-in behaviours do:
-- `sm:call(ctx, "voting", "is_quorum", votes)`. Results are checked: a wrong
-- type raises (a bug: the machine closes); an error result, or nil where a
-- value is required, returns nil, err.
function Machine:call(ctx, provider, method, ...)
  local d = data_of(self, "sm:call")
  local p = d.providers[provider]
  local shape = RESULTS[provider] and RESULTS[provider][method]
  if shape == nil then fail("sm:call: unknown provider method '%s:%s'", provider, method) end
  if p == nil then fail("csm: no %s provider (%s:%s needed)", provider, provider, method) end
  local fn = p[method]
  if type(fn) ~= "function" then fail("csm: %s provider has no method '%s'", provider, method) end
  local nargs = select("#", ...)
  if nargs == 0 then
    return checked(provider, method, shape, fn(p, ctx))
  elseif nargs == 1 then
    local a = ...
    return checked(provider, method, shape, fn(p, a, ctx))
  elseif nargs == 2 then
    local a, b = ...
    return checked(provider, method, shape, fn(p, a, b, ctx))
  end
  local args = pack(...)
  args[nargs + 1] = ctx
  return checked(provider, method, shape, fn(p, unpack(args, 1, nargs + 1)))
end

-------------------------------------------------------------------------------
-- The driver: runs queued events through the hooks, one transition at a time.
-------------------------------------------------------------------------------

local BATCH = 64 -- events per turn, so one busy machine cannot starve the rest

-- Tells the core whether a behaviour may wait for messages, when that changes.
local function set_waiting(sm, d, waiting)
  if d.waiting ~= waiting then
    d.waiting = waiting
    sm:_set_waiting(waiting)
  end
end

local function start_behavior(sm, d, config, data)
  local ctx = new_ctx(sm, d, config.behavior, data)
  d.ctx = ctx
  set_waiting(sm, d, true)
  start(ctx)
end

-- d.closed is set by sm:close(), the only way a machine closes while it runs.
-- entered: the core already switched state (no on_exit hook to run first).
local function transition(sm, d, from, to, event, data, entered)
  local ctx = d.ctx
  if ctx then
    d.ctx = nil
    cancel(ctx)
  end
  local configs, names, ev = d.configs, d.state_names, d.event_names[event + 1]
  if not entered then
    local exit = configs[from + 1].on_exit
    if exit then
      exit(sm, ev, data)
      if d.closed then return end
    end
    sm:_enter(to, event)
  end
  local listeners = d.listeners
  if listeners[1] then
    local from_name, to_name = names[from + 1], names[to + 1]
    for _, h in ipairs(listeners) do h.fn(from_name, to_name, ev) end
    if d.closed then return end
  end
  local config = configs[to + 1]
  if config.on_enter then
    config.on_enter(sm, ev, data)
    if d.closed then return end
  end
  if config.behavior then
    start_behavior(sm, d, config, data)
  else
    set_waiting(sm, d, false)
  end
end

local function run_events(sm, d)
  for _ = 1, BATCH do
    local event, to, guarded, from, data, entered = sm:_next()
    if event == nil then break end
    if not guarded then
      transition(sm, d, from, to, event, data, entered)
    elseif d.guards[from * d.nevents + event](sm) then
      transition(sm, d, from, to, event, sm:active_state(), false)
    else
      sm:_drop()
    end
    if d.closed then return end
  end
  if sm:_take_wake() and d.ctx then d.ctx:_wake() end
end

core.set_drive(function(sm)
  local d = data_of(sm)
  local ok, err = xpcall(run_events, traceback, sm, d)
  if not ok then fatal(sm, err) end
end)

-------------------------------------------------------------------------------
-- csm.new
-------------------------------------------------------------------------------

local OPTIONS = {
  id = true, initial = true, emit_on_send = true, minimum_provers = true, sync = true,
  voting = true, leader = true, liveness = true, trace = true, timing = true, limits = true,
  states = true, transitions = true, loop = true,
}
local STATE_FIELDS = { behavior = true, on_enter = true, on_exit = true, timeout = true,
                       on_timeout = true }
local TRANSITION_FIELDS = { from = true, event = true, to = true, guard = true }

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function check_table(name, t)
  if t ~= nil and type(t) ~= "table" then
    fail("csm.new: option '%s' must be a table (got %s)", name, type(t))
  end
  return t or {}
end

local function check_function(where, f)
  if f ~= nil and type(f) ~= "function" then
    fail("csm.new: %s must be a function (got %s)", where, type(f))
  end
end

local function resolve_timing(timing)
  timing = check_table("timing", timing)
  local defaults = csm.defaults.timing
  for _, k in ipairs(sorted_keys(timing)) do
    if defaults[k] == nil then fail("csm.new: unknown timing '%s'", tostring(k)) end
    local v = timing[k]
    if type(v) ~= "number" or not (v >= 0) then
      fail("csm.new: timing.%s must be a number >= 0 (got %s)", k, tostring(v))
    end
  end
  local scale = timing.scale or 1
  local out = {}
  for k, v in pairs(defaults) do
    local t = timing[k] or v
    if k ~= "scale" and k ~= "proving_grace" then t = t * scale end
    out[k] = t
  end
  out.scale = scale
  return out
end

-- What machines built from the same states, transitions and timing share:
-- names, ids, the transition list, guards, configs, and the C table rows
-- and timeouts to apply. Read-only once built.
local function build_layout(states, transitions, timing)
  local layout = { timing = timing }
  -- states: the seed's, then custom ones in name order
  local state_names, state_ids = {}, {}
  for i, name in ipairs(seed.states) do state_names[i] = name; state_ids[name] = i - 1 end
  for _, name in ipairs(sorted_keys(states)) do
    if type(name) ~= "string" or name == "" then
      fail("csm.new: state names must be non-empty strings (got %s)", type(name))
    end
    local cfg = states[name]
    if type(cfg) ~= "table" then fail("csm.new: states.%s must be a table (got %s)", name, type(cfg)) end
    for _, k in ipairs(sorted_keys(cfg)) do
      if not STATE_FIELDS[k] then fail("csm.new: states.%s: unknown field '%s'", name, tostring(k)) end
    end
    if cfg.behavior ~= false then check_function("states." .. name .. ".behavior", cfg.behavior) end
    check_function("states." .. name .. ".on_enter", cfg.on_enter)
    check_function("states." .. name .. ".on_exit", cfg.on_exit)
    if cfg.timeout ~= nil and (type(cfg.timeout) ~= "number" or not (cfg.timeout >= 0)) then
      fail("csm.new: states.%s.timeout must be a number >= 0", name)
    end
    if cfg.on_timeout ~= nil and (type(cfg.on_timeout) ~= "string" or cfg.on_timeout == "") then
      fail("csm.new: states.%s.on_timeout must be an event name", name)
    end
    if state_ids[name] == nil then
      state_names[#state_names + 1] = name
      state_ids[name] = #state_names - 1
    end
  end

  -- events: the seed's, then new names from transitions and on_timeout
  local event_names, event_ids = {}, {}
  for i, name in ipairs(seed.events) do event_names[i] = name; event_ids[name] = i - 1 end
  local function add_event(name)
    if event_ids[name] == nil then
      event_names[#event_names + 1] = name
      event_ids[name] = #event_names - 1
    end
    return event_ids[name]
  end
  for i, t in ipairs(transitions) do
    if type(t) ~= "table" then fail("csm.new: transitions[%d] must be a table", i) end
    for _, k in ipairs(sorted_keys(t)) do
      if not TRANSITION_FIELDS[k] then
        fail("csm.new: transitions[%d]: unknown field '%s'", i, tostring(k))
      end
    end
    if state_ids[t.from] == nil then
      fail("csm.new: transitions[%d]: unknown state '%s'", i, tostring(t.from))
    end
    if t.to ~= false and state_ids[t.to] == nil then
      fail("csm.new: transitions[%d]: unknown state '%s'", i, tostring(t.to))
    end
    if type(t.event) ~= "string" or t.event == "" then
      fail("csm.new: transitions[%d]: event must be a non-empty string", i)
    end
    check_function(string.format("transitions[%d].guard", i), t.guard)
    add_event(t.event)
  end
  for _, name in ipairs(sorted_keys(states)) do
    if states[name].on_timeout then add_event(states[name].on_timeout) end
  end

  local nevents = #event_names
  layout.state_names, layout.state_ids = state_names, state_ids
  layout.event_names, layout.event_ids = event_names, event_ids
  layout.nevents = nevents
  layout.guards = {}
  layout.rows = {}     -- custom rows for the C table: {from, event, to or nil, guarded}
  layout.timeouts = {} -- per state: {seconds, event or nil}

  -- the transition table: the seed's, with the custom rows applied in order
  local list, index = {}, {}
  for _, t in ipairs(seed.transitions) do
    local row = { from = t.from, event = t.event, to = t.to, guarded = false }
    list[#list + 1] = row
    index[t.from .. "\0" .. t.event] = row
  end
  for _, t in ipairs(transitions) do
    local from, ev = state_ids[t.from], event_ids[t.event]
    local key = t.from .. "\0" .. t.event
    local row = index[key]
    if t.to == false then
      layout.rows[#layout.rows + 1] = { from, ev, nil, false }
      layout.guards[from * nevents + ev] = nil
      if row then row.removed = true end
    else
      layout.rows[#layout.rows + 1] = { from, ev, state_ids[t.to], t.guard ~= nil }
      layout.guards[from * nevents + ev] = t.guard
      if not row then
        row = { from = t.from, event = t.event }
        list[#list + 1] = row
        index[key] = row
      end
      row.to, row.guarded, row.removed = t.to, t.guard ~= nil, nil
    end
  end
  local rows = {}
  for _, row in ipairs(list) do if not row.removed then rows[#rows + 1] = row end end
  layout.transition_list = rows

  -- per-state hooks and timeouts
  local behaviors = csm.behaviors
  layout.configs = {}
  for i, name in ipairs(state_names) do
    local cfg = states[name] or {}
    local behavior = cfg.behavior
    if behavior == nil then behavior = behaviors[name] end
    layout.configs[i] = { behavior = behavior or nil, on_enter = cfg.on_enter, on_exit = cfg.on_exit }
    local seconds = cfg.timeout
    if seconds ~= nil then
      seconds = seconds * timing.scale
    elseif i <= NSEED_STATES then
      seconds = timing[name] or 0
    else
      seconds = 0
    end
    local event = cfg.on_timeout and event_ids[cfg.on_timeout]
    if event == nil and i <= NSEED_STATES and seed.timeout_events[name] then
      event = event_ids[seed.timeout_events[name]]
    end
    layout.timeouts[i] = { seconds, event }
  end

  return layout
end

local default_layout -- for machines without states, transitions or timing

--- Builds a machine (section 4 of the spec); see the README for options.
function csm.new(opts)
  if type(opts) ~= "table" then argerror("csm.new", 1, "options", "table expected", opts) end
  for _, k in ipairs(sorted_keys(opts)) do
    if not OPTIONS[k] then fail("csm.new: unknown option '%s'", tostring(k)) end
  end
  local id = opts.id
  if type(id) == "string" and #id > 0 then
    id = csm.peer(id)
  elseif not csm.is_value(id) then
    fail("csm.new: option 'id' must be a csm value or a non-empty string (got %s)", type(id))
  end
  if opts.initial ~= nil and not csm.is_value(opts.initial) then
    fail("csm.new: option 'initial' must be a csm value or nil (got %s)", type(opts.initial))
  end
  if opts.emit_on_send ~= nil and type(opts.emit_on_send) ~= "boolean" then
    fail("csm.new: option 'emit_on_send' must be a boolean (got %s)", type(opts.emit_on_send))
  end
  local minimum = opts.minimum_provers
  if minimum == nil then
    minimum = 1
  elseif type(minimum) ~= "function" and
    (type(minimum) ~= "number" or minimum < 0 or minimum % 1 ~= 0) then
    fail("csm.new: option 'minimum_provers' must be an integer >= 0 or a function (got %s)",
      tostring(minimum))
  end
  local providers = {}
  for _, name in ipairs { "sync", "voting", "leader", "liveness" } do
    providers[name] = opts[name]
    if opts[name] ~= nil and type(opts[name]) ~= "table" then
      fail("csm.new: option '%s' must be a provider table (got %s)", name, type(opts[name]))
    end
  end
  local trace = check_table("trace", opts.trace)
  check_function("trace.trace", trace.trace)
  check_function("trace.error", trace.error)
  local timing = resolve_timing(opts.timing)
  local limits = check_table("limits", opts.limits)
  for _, k in ipairs(sorted_keys(limits)) do
    if seed.limits[k] == nil then fail("csm.new: unknown limit '%s'", tostring(k)) end
  end
  local loop = opts.loop or core.loop()
  if type(loop) ~= "userdata" or not pcall(loop.is_sim, loop) then
    fail("csm.new: option 'loop' must be a csm loop (got %s)", type(loop))
  end

  local states = check_table("states", opts.states)
  local transitions = check_table("transitions", opts.transitions)
  local layout
  if opts.states == nil and opts.transitions == nil and opts.timing == nil then
    -- rebuilt should someone have replaced a built-in behaviour meanwhile
    local fresh = default_layout ~= nil
    for i = 1, fresh and NSEED_STATES or 0 do
      local name = seed.states[i]
      if default_layout.configs[i].behavior ~= (csm.behaviors[name] or nil) then fresh = false end
    end
    if not fresh then default_layout = build_layout(states, transitions, timing) end
    layout = default_layout
  else
    layout = build_layout(states, transitions, timing)
  end

  local sm = core.machine(loop, #layout.state_names, layout.nevents, opts.limits)
  for _, row in ipairs(layout.rows) do sm:_set_transition(row[1], row[2], row[3], row[4]) end
  for i, t in ipairs(layout.timeouts) do sm:_set_timeout(i - 1, t[1], t[2]) end
  for i, config in ipairs(layout.configs) do
    if config.on_exit then sm:_set_exit_hook(i - 1, true) end
  end
  local d = sm:_data()
  d.loop = loop
  d.id = id
  d.emit = opts.emit_on_send == true
  d.minimum_provers = minimum
  d.providers = providers
  d.on_trace, d.on_error = trace.trace, trace.error
  d.timing = layout.timing
  d.state_names, d.state_ids = layout.state_names, layout.state_ids
  d.event_names, d.event_ids = layout.event_names, layout.event_ids
  d.nevents = layout.nevents
  d.guards = layout.guards
  d.transition_list = layout.transition_list
  d.configs = layout.configs
  d.listeners = {}
  d.next_provers = {}

  if opts.initial ~= nil then sm:set_active_state(opts.initial) end
  return sm
end

-- Lua 5.4: `local sm <close> = csm.new{...}` closes it at scope end.
core.metatable("csm.machine").__close = function(sm) sm:close() end

csm.behaviors = require "csm.behaviors"
csm.viz = require "csm.viz"

return csm
