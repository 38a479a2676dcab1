--- The driver: runs a machine's queued events through its hooks, one
-- transition at a time (guard, on_exit, the switch of state, listeners,
-- on_enter, then the new state's behaviour as a task). The core calls it
-- whenever a machine has events or a wake waiting.
-- @module csm.driver

local machine = require "csm.machine"
local internal = require("csm.internal").machine
local tasks = require "csm.ctx"

local ipairs, xpcall = ipairs, xpcall
local traceback = debug.traceback
local fields_of = machine.fields
local new_ctx, start, cancel = tasks.new, tasks.start, tasks.cancel
local set_waiting_in_core, enter, next_transition = internal.set_waiting, internal.enter, internal.next
local drop, take_wake = internal.drop, internal.take_wake

local BATCH = 64 -- events per turn, so one busy machine cannot starve the rest

-- Tells the core whether a behaviour may wait for messages, when that changes.
local function set_waiting(sm, fields, waiting)
  if fields.waiting ~= waiting then
    fields.waiting = waiting
    set_waiting_in_core(sm, waiting)
  end
end

local function start_behavior(sm, fields, config, data)
  local ctx = new_ctx(sm, fields.loop, config.behavior, data)
  fields.ctx = ctx
  set_waiting(sm, fields, true)
  start(ctx)
end

-- fields.closed is set by sm:close(), the only way a machine closes while it runs.
-- entered: the core already switched state (no on_exit hook to run first).
local function transition(sm, fields, from, to, event, data, entered)
  local ctx = fields.ctx
  if ctx then
    fields.ctx = nil
    cancel(ctx)
  end
  local configs, names, ev = fields.configs, fields.state_names, fields.event_names[event + 1]
  if not entered then
    local exit = configs[from + 1].on_exit
    if exit then
      exit(sm, ev, data)
      if fields.closed then return end
    end
    enter(sm, to, event)
  end
  local listeners = fields.listeners
  if listeners[1] then
    local from_name, to_name = names[from + 1], names[to + 1]
    for _, h in ipairs(listeners) do h.fn(from_name, to_name, ev) end
    if fields.closed then return end
  end
  local config = configs[to + 1]
  if config.on_enter then
    config.on_enter(sm, ev, data)
    if fields.closed then return end
  end
  if config.behavior then
    start_behavior(sm, fields, config, data)
  else
    set_waiting(sm, fields, false)
  end
end

local function run_events(sm, fields)
  for _ = 1, BATCH do
    local event, to, guarded, from, data, entered = next_transition(sm)
    if event == nil then break end
    if not guarded then
      transition(sm, fields, from, to, event, data, entered)
    elseif fields.guards[from * fields.nevents + event](sm) then
      transition(sm, fields, from, to, event, sm:active_state(), false)
    else
      drop(sm)
    end
    if fields.closed then return end
  end
  if take_wake(sm) and fields.ctx then fields.ctx:_wake() end
end

internal.set_drive(function(sm)
  local ok, err = xpcall(run_events, traceback, sm, fields_of(sm))
  if not ok then machine.fatal(sm, err) end
end)

return {}
