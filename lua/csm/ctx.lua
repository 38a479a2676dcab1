--- Tasks and ctx: the coroutines that run state behaviours and what they
-- wait on. A behaviour run is one ctx, which is also the task that runs
-- its behaviour; ctx:spawn adds tasks sharing it. Tasks run on pooled
-- coroutines, so a behaviour run costs no new thread. The core's driver
-- (src/machine.c) makes each behaviour's ctx and first resumes it itself,
-- with what `tasks.kit` hands it; every later resume is here.
-- @module csm.ctx

local check = require "csm.check"
local internal_loop = require("csm.internal").loop
local post, after_for = internal_loop.post, internal_loop.after_for

local coroutine_create, coroutine_resume, coroutine_yield, coroutine_running =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running
local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local type, ipairs, tostring, pcall, getmetatable = type, ipairs, tostring, pcall, getmetatable
local traceback = debug.traceback

local tasks = {
  -- fatal(sm, err): closes a machine whose behaviour raised (set by
  -- csm.machine)
  fatal = nil,
}

-- A ctx is also the task that runs its behaviour (the main task), so a
-- behaviour run makes one table, { sm, co }, as the core's driver makes
-- it: its machine, its coroutine and, once its state is left, whether it
-- is cancelled sit in the table's array part (cheaper to make than keys).
-- Tasks it spawns point to it with .ctx. Task fields: [CO], fn and args
-- (spawned), token, blocked, timer, finished, results; absent ones read as
-- the class defaults below.
local SM, CO, CANCELLED = 1, 2, 3
local Ctx = { [CANCELLED] = false, wake_pending = false, token = 0, finished = false }
Ctx.__index = Ctx
local Task = { token = 0, finished = false }
Task.__index = Task

local function ctx_of(task)
  return task.ctx or task
end

local function loop_of(ctx)
  return ctx[SM]:loop()
end

-- Tasks run on pooled coroutines: a coroutine whose job returned yields
-- DONE and waits for the next task, so a behaviour run costs no new thread.
-- The core's driver takes from and gives back to the same pool.
local DONE = {}
local idle = {}
local IDLE_MAX = 32

local function run_spawned(task)
  local args = task.args
  task.results = pack(task.fn(unpack(args, 1, args.n)))
end

-- The body of a pooled coroutine: a behaviour, behavior(sm, ctx, data)
-- (the core's driver resumes it so), or a spawned task (task alone).
-- Everything is cleared before the yield so an idle coroutine holds on to
-- nothing of the job it ran.
local function body(task, behavior, sm, data)
  repeat
    if behavior then behavior(sm, task, data) else run_spawned(task) end
    task, behavior, sm, data = nil, nil, nil, nil -- luacheck: ignore 311
    task, behavior, sm, data = coroutine_yield(DONE)
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
    local err = traceback(task[CO], error_text(first))
    task.failure = err
    tasks.fatal(ctx_of(task)[SM], err)
    return
  end
  if first == DONE then
    task.finished = true
    local n = #idle
    if n < IDLE_MAX then idle[n + 1] = task[CO] end
    task[CO] = false
    local ctx = task.ctx
    if ctx and not ctx[CANCELLED] then ctx:_wake() end
  elseif not task.blocked then
    -- every wait of ctx's marks the task blocked before it yields: this
    -- yield came from elsewhere, and nothing would ever resume it
    task.finished = true
    local err = traceback(task[CO], "a provider or behaviour yielded outside ctx (coroutine.yield): "
      .. "wait with ctx:sleep, ctx:wait or ctx:await")
    task.failure = err
    tasks.fatal(ctx_of(task)[SM], err)
  end
end

local function resume(task, ...)
  if task.blocked then task.blocked = nil end
  finish(task, coroutine_resume(task[CO], ...))
end

-- Runs a spawned task until it first blocks or returns.
local function start(task)
  local n = #idle
  local co = idle[n]
  if co then
    idle[n] = nil
  else
    co = coroutine_create(body)
  end
  task[CO] = co
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

-- Marks task as blocked on kind and returns a token that later wake-ups
-- must present, so a stale one (an old timer, a second resolve) is ignored.
local function block(task, kind)
  local token = task.token + 1
  task.token = token
  task.blocked = kind
  return token
end

-- Raises unless ctx is a ctx (a method called with a dot, say).
local function check_ctx(ctx, fname)
  if getmetatable(ctx) ~= Ctx then check.selferror(fname, "csm ctx expected", ctx) end
end

-- The task of ctx whose coroutine is running (the innermost one running).
local function running_task(ctx, fname)
  if getmetatable(ctx) == Ctx then
    local co = coroutine_running()
    if co and ctx[CO] == co then return ctx end
    local spawned = ctx.spawned
    if co and spawned then
      for i = 1, #spawned do
        if spawned[i][CO] == co then return spawned[i] end
      end
    end
  end
  check_ctx(ctx, fname)
  check.fail("%s: called outside a behaviour of this ctx", fname)
end

-- Checks the seconds of ctx's method fname (a bad self is named first: a
-- method called with a dot shifts its arguments).
local function check_seconds(ctx, fname, seconds)
  if type(seconds) ~= "number" or not (seconds >= 0) then
    check_ctx(ctx, fname)
    check.argerror(fname, 1, "seconds", "number >= 0 expected", seconds)
  end
end

-- Leaves the state: every blocked task resumes with nil, "canceled".
local function cancel_task(loop, task)
  if task.blocked then
    if task.timer then task.timer:cancel(); task.timer = nil end
    block(task, "canceled")
    post(loop, function() resume(task, nil, "canceled") end)
  end
end

--- Cancels ctx: the state it belongs to has been left.
-- @local
function tasks.cancel(ctx)
  ctx[CANCELLED] = true
  local loop = loop_of(ctx)
  if ctx.blocked then cancel_task(loop, ctx) end
  local spawned = ctx.spawned
  if spawned then
    for _, task in ipairs(spawned) do cancel_task(loop, task) end
  end
  if ctx.waiters then ctx.waiters = nil end
end

--- Abandons ctx: its machine was closed. Its blocked tasks resume once
-- with nil, "canceled", as when a state is left, so they can clean up; any
-- wait of theirs after that never returns. Nothing is left running, and the
-- machine is collected once unreferenced, whatever its behaviour does.
-- @local
function tasks.abandon(ctx)
  tasks.cancel(ctx)
  ctx.abandoned = true
end

-- A wait of an abandoned ctx's: the task blocks for good.
local function park(task)
  block(task, "abandoned")
  return coroutine_yield()
end


--- A task that ctx:spawn started.
-- @type Task

--- Whether the task's function has returned.
function Task:done()
  return self.finished == true
end

--- What the task's function returned; nil, "not done" while it runs; nil
-- and its error (with a traceback) if it raised.
function Task:result()
  if self.failure then return nil, self.failure end
  if not self.finished or not self.results then return nil, "not done" end
  return unpack(self.results, 1, self.results.n)
end

--- The ctx of one behaviour run (and the task that runs it), the last
-- argument of every provider call; cancelled when its state is left.
-- @type Ctx

--- Whether the state this ctx belongs to has been left.
function Ctx:cancelled()
  check_ctx(self, "ctx:cancelled")
  return self[CANCELLED]
end

--- Suspends the calling behaviour for seconds.
-- @return true, or nil, "canceled"
function Ctx:sleep(seconds)
  check_seconds(self, "ctx:sleep", seconds)
  local task = running_task(self, "ctx:sleep")
  if self.abandoned then return park(task) end
  if self[CANCELLED] then return nil, "canceled" end
  local token = block(task, "sleep")
  task.timer = after_for(loop_of(self), seconds, function()
    if task.token == token and task.blocked == "sleep" then
      task.timer = nil
      resume(task, true)
    end
  end, self[SM])
  return coroutine_yield()
end

--- Waits for a callback: fn(resolve) is called, and await returns what
-- resolve gets. A second resolve, or one after cancellation, is ignored.
function Ctx:await(fn)
  if type(fn) ~= "function" then
    check_ctx(self, "ctx:await")
    check.argerror("ctx:await", 1, "fn", "function expected", fn)
  end
  local task = running_task(self, "ctx:await")
  if self.abandoned then return park(task) end
  if self[CANCELLED] then return nil, "canceled" end
  local token = task.token + 1
  task.token = token
  local resolved = false
  local loop = loop_of(self)
  local function resolve(...)
    if resolved then return end
    resolved = true
    local args = pack(...)
    post(loop, function()
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
  check_seconds(self, "ctx:wait", seconds)
  local task = running_task(self, "ctx:wait")
  if self.abandoned then return park(task) end
  if self[CANCELLED] then return nil, "canceled" end
  if self.wake_pending then
    self.wake_pending = false
    return "wake"
  end
  local token = block(task, "wait")
  append(self, "waiters", task)
  task.timer = after_for(loop_of(self), seconds, function()
    if task.token == token and task.blocked == "wait" then
      task.timer = nil
      local list = self.waiters or {}
      for i = #list, 1, -1 do
        if list[i] == task then table.remove(list, i) end
      end
      resume(task, "timeout")
    end
  end, self[SM])
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
  check_ctx(self, "ctx:send_event")
  if self[CANCELLED] then return nil, "canceled" end
  return self[SM]:send_event(event)
end

--- Runs fn(...) in a new task that shares this ctx.
function Ctx:spawn(fn, ...)
  check_ctx(self, "ctx:spawn")
  if type(fn) ~= "function" then check.argerror("ctx:spawn", 1, "fn", "function expected", fn) end
  local task = setmetatable({ [CO] = false, ctx = self, fn = fn, args = pack(...) }, Task)
  append(self, "spawned", task)
  if self[CANCELLED] then
    task.finished = true
    return task
  end
  start(task)
  return task
end

--- What the core's driver needs to start behaviours: [1] the ctx
-- metatable, [2] DONE, [3] the pool of idle coroutines, [4] the pooled
-- coroutines' body, [5] finish(task, ok, first) for a first resume that
-- did not end in DONE, [6] cancel(ctx), [7] wake(ctx).
-- @local
tasks.kit = { Ctx, DONE, idle, body, finish, tasks.cancel, Ctx._wake }

return tasks
