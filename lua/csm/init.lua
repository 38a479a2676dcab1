--- csm: a round-based consensus state machine for Lua.
-- The C module `csm.core` owns loops, timers, the event queue and the
-- per-rank ledger; the engine's Lua half is split by part: `csm.ctx` (tasks
-- and ctx), `csm.machine` (the machine's Lua methods), `csm.results`
-- (provider calls and their checks), `csm.driver` (events through hooks),
-- `csm.layout` (states, transitions and timing, checked and shared). This
-- file holds the exports and `csm.new`.
-- @module csm

local core = require "csm.core"
local internal = require("csm.internal").machine
local check = require "csm.check"
local layout = require "csm.layout"
local machine = require "csm.machine"
require "csm.results"
require "csm.driver"

local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring
local fail, sorted_keys = check.fail, layout.sorted_keys

local csm = { _VERSION = "csm 0.1.0" }

--- A value: an identity and a rank, held in C, and an optional payload.
-- @function value
-- @tparam string identity non-empty, any bytes
-- @tparam integer rank >= 0 (up to 2^53 on LuaJIT)
-- @param[opt] payload any Lua value; a table's fields read as value.field
-- @treturn value
csm.value = core.value

--- A peer: a value of rank 0.
-- @function peer
-- @tparam string identity
-- @treturn value
csm.peer = core.peer

--- Whether x is a csm value.
-- @function is_value
-- @param x
-- @treturn boolean
csm.is_value = core.is_value

--- Whether x is a csm machine.
-- @function is_machine
-- @param x
-- @treturn boolean
csm.is_machine = machine.is_machine

local KEY_ORDER = { number = 1, string = 2, boolean = 3 }

local function key_less(a, b)
  local ta, tb = KEY_ORDER[type(a)], KEY_ORDER[type(b)]
  if ta ~= tb then return ta < tb end
  if ta == 3 then return (not a) and b end
  return a < b
end

--- Iterates t in a fixed order, the same in every process: number keys
-- ascending, then string keys in byte order, then false, true. `pairs`
-- order over string (or table) keys changes from one process to the next,
-- so a protocol that sends or decides in `pairs` order is not a function
-- of its seed. Raises on a key of another type, which has no such order.
-- @function sorted_pairs
-- @tparam table t
-- @return an iterator: key, value
function csm.sorted_pairs(t)
  if type(t) ~= "table" then check.argerror("csm.sorted_pairs", 1, "t", "table expected", t) end
  local keys = {}
  for k in pairs(t) do
    if KEY_ORDER[type(k)] == nil then
      check.fail("csm.sorted_pairs: a key of type %s has no fixed order", type(k))
    end
    keys[#keys + 1] = k
  end
  table.sort(keys, key_less)
  local i = 0
  return function()
    i = i + 1
    local k = keys[i]
    if k ~= nil then return k, t[k] end
  end
end

--- The real loop, on luv's loop (one per Lua state; loads luv).
-- @function loop
-- @treturn loop
csm.loop = core.loop

--- A new virtual-time world: time moves only when nothing is runnable, and
-- every random number comes from the seed.
-- @function sim
-- @tparam[opt] table options `{ seed = integer }` (default 0)
-- @treturn loop
csm.sim = core.sim

--- Runs the real loop: `csm.loop():run(...)`.
function csm.run(...)
  return core.loop():run(...)
end

--- State names: `csm.states.voting == "voting"`.
csm.states = {}
for _, name in ipairs(layout.builtin.states) do csm.states[name] = name end

--- Event names: `csm.events.quorum_reached == "quorum_reached"`.
csm.events = {}
for _, name in ipairs(layout.builtin.events) do csm.events[name] = name end

--- The defaults: timeouts and intervals in seconds, limits.
csm.defaults = layout.defaults

-- Each provider's methods, in name order.
local METHODS = {}
for name, shapes in pairs(require("csm.results").shapes) do
  METHODS[name] = layout.sorted_keys(shapes)
end

local OPTIONS = {
  id = true, initial = true, emit_on_send = true, minimum_provers = true, sync = true,
  voting = true, leader = true, liveness = true, trace = true, timing = true, limits = true,
  states = true, transitions = true, loop = true,
}

--- Builds a machine (not yet started). docs/guide.md describes each option.
-- @tparam table opts
--   `id` (a peer value or string, required), `initial` (the active state,
--   a value), `emit_on_send` (record its own liveness and votes),
--   `minimum_provers` (an integer or a function), the providers `sync`,
--   `voting`, `leader` and `liveness`, `trace = { trace = fn, error = fn }`,
--   `timing` (timeouts and intervals in seconds, and `scale`), `limits`
--   (`rank_window`, `peers_per_rank`, `identity_bytes`, `queue`), `states`
--   and `transitions` (scripted hooks and rows), `loop` (default the real
--   loop)
-- @treturn Machine
function csm.new(opts)
  check.options("csm.new", opts, OPTIONS)
  local id = opts.id
  if type(id) == "string" and #id > 0 then
    id = core.peer(id)
  elseif not core.is_value(id) then
    fail("csm.new: option 'id' must be a csm value or a non-empty string (got %s)", type(id))
  end
  if opts.initial ~= nil and not core.is_value(opts.initial) then
    fail("csm.new: option 'initial' must be a csm value or nil (got %s)", type(opts.initial))
  end
  if opts.emit_on_send ~= nil and type(opts.emit_on_send) ~= "boolean" then
    fail("csm.new: option 'emit_on_send' must be a boolean (got %s)", type(opts.emit_on_send))
  end
  local minimum = opts.minimum_provers
  if minimum == nil then
    minimum = 1
  elseif type(minimum) ~= "function" and not (check.is_integer(minimum) and minimum >= 0) then
    fail("csm.new: option 'minimum_provers' must be an integer >= 0 or a function (got %s)",
      tostring(minimum))
  end
  local providers = {}
  for _, name in ipairs { "sync", "voting", "leader", "liveness" } do
    local p = opts[name]
    providers[name] = p
    if p ~= nil and type(p) ~= "table" then
      fail("csm.new: option '%s' must be a provider table (got %s)", name, type(p))
    end
    -- its methods, where it has them, must be functions (a provider may
    -- hold other fields of its own)
    for _, method in ipairs(METHODS[name]) do
      local fn = p and p[method]
      if fn ~= nil and type(fn) ~= "function" then
        fail("csm.new: %s.%s must be a function (got %s)", name, method, type(fn))
      end
    end
  end
  local trace = layout.check_table("trace", opts.trace)
  for _, k in ipairs(sorted_keys(trace)) do
    if k ~= "trace" and k ~= "error" then fail("csm.new: trace: unknown field '%s'", tostring(k)) end
  end
  layout.check_function("trace.trace", trace.trace)
  layout.check_function("trace.error", trace.error)
  local limits = layout.check_table("limits", opts.limits)
  for _, k in ipairs(sorted_keys(limits)) do
    if layout.defaults.limits[k] == nil then fail("csm.new: unknown limit '%s'", tostring(k)) end
  end
  -- the machine stores its own entries under its id: one it would refuse
  -- from a peer would make it refuse itself, round after round
  local most = limits.identity_bytes
  if type(most) ~= "number" then most = layout.defaults.limits.identity_bytes end
  if #id:identity() > most then
    fail("csm.new: option 'id' is %d bytes, more than limits.identity_bytes (%d)", #id:identity(), most)
  end
  local loop = opts.loop or core.loop()
  if not check.is_world(loop, true) then
    fail("csm.new: option 'loop' must be a csm loop (got %s)", type(loop))
  end

  local shape = layout.of(opts.states, opts.transitions, opts.timing)

  -- the core's half of the layout, made once per shape and shared by its machines
  local core_layout = shape.core
  if core_layout == nil then
    core_layout = internal.layout(#shape.state_names, shape.nevents)
    for _, row in ipairs(shape.rows) do
      internal.set_transition(core_layout, row[1], row[2], row[3], row[4])
    end
    for i, t in ipairs(shape.timeouts) do internal.set_timeout(core_layout, i - 1, t[1], t[2]) end
    for i, config in ipairs(shape.configs) do
      internal.set_state(core_layout, i - 1, config.on_exit ~= nil, config.on_enter ~= nil,
        config.behavior or false)
    end
    shape.core = core_layout
  end
  local sm = internal.machine(loop, core_layout, opts.limits)
  local fields = internal.data(sm)
  fields.loop = loop
  fields.id = id
  fields.emit = opts.emit_on_send == true
  fields.minimum_provers = minimum
  fields.providers = providers
  fields.on_trace, fields.on_error = trace.trace, trace.error
  fields.timing = shape.timing
  fields.state_names, fields.state_ids = shape.state_names, shape.state_ids
  fields.event_names, fields.event_ids = shape.event_names, shape.event_ids
  internal.set_events(sm, shape.event_ids)
  fields.nevents = shape.nevents
  fields.guards = shape.guards
  fields.transition_list = shape.transition_list
  fields.configs = shape.configs
  fields.listeners = {}
  fields.next_provers = {}

  if opts.initial ~= nil then sm:set_active_state(opts.initial) end
  return sm
end

--- The built-in behaviours (`csm.behaviors.voting`, ...).
csm.behaviors = require "csm.behaviors"
--- Diagrams and summaries of a machine.
csm.viz = require "csm.viz"

return csm
