--- The driver's Lua half. The core (src/machine.c) runs a machine's queued
-- events itself: it cancels the ctx of the state left, switches state and
-- starts the new state's behaviour on a pooled coroutine. A transition
-- with a guard to ask, an on_exit or on_enter hook, or listeners to tell
-- comes here first (slow), for everything up to the behaviour's start.
-- @module csm.driver

local machine = require "csm.machine"
local internal = require("csm.internal").machine
local tasks = require "csm.ctx"

local ipairs = ipairs
local fields_of = machine.fields
local cancel = tasks.cancel
local enter, drop, take_ctx = internal.enter, internal.drop, internal.take_ctx

-- The transition from --event--> to through its guard and hooks, in
-- order: the guard, the cancel of the state left, on_exit, the switch of
-- state, listeners, on_enter. Returns true and the data for the behaviour
-- (the active state), or false when the guard refused or a hook closed
-- the machine (fields.closed, set by sm:close()).
local function slow(sm, event, to, guarded, from)
  local fields = fields_of(sm)
  if guarded and not fields.guards[from * fields.nevents + event](sm) then
    drop(sm)
    return false
  end
  if fields.closed then return false end
  local data = sm:active_state()
  local ctx = take_ctx(sm)
  if ctx then cancel(ctx) end
  local configs, ev = fields.configs, fields.event_names[event + 1]
  local exit = configs[from + 1].on_exit
  if exit then
    exit(sm, ev, data)
    if fields.closed then return false end
  end
  enter(sm, to, event)
  local listeners = fields.listeners
  if listeners[1] then
    local names = fields.state_names
    local from_name, to_name = names[from + 1], names[to + 1]
    for _, h in ipairs(listeners) do h.fn(from_name, to_name, ev) end
    if fields.closed then return false end
  end
  local on_enter = configs[to + 1].on_enter
  if on_enter then
    on_enter(sm, ev, data)
    if fields.closed then return false end
  end
  return true, data
end

local kit = {}
for i, x in ipairs(tasks.kit) do kit[i] = x end
kit[#kit + 1] = slow
kit[#kit + 1] = machine.fatal
internal.set_drive(kit)

return {}
