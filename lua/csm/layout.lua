--- Layouts: what machines built from the same states, transitions and
-- timing share (state and event names and ids, the transition list,
-- guards, per-state hooks and timeouts, and the rows the C table needs),
-- checked and built once. Also the defaults of timing and limits.
-- @module csm.layout

local core = require "csm.core"
local check = require "csm.check"
local behaviors = require "csm.behaviors"

local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring
local fail = check.fail

local builtin = core.builtin()
local NBUILTIN = #builtin.states

local layout = {}

--- The built-in states, events, transitions and timeouts (those of the
-- original machine).
layout.builtin = builtin

--- The defaults: timeouts and intervals in seconds, and limits.
layout.defaults = {
  timing = {
    sync_retry = 10, liveness_resend = 1, proving_poll = 1, proving_grace = 10,
    vote_resend = 1, scale = 1,
  },
  limits = builtin.limits,
}
for state, seconds in pairs(builtin.timeouts) do layout.defaults.timing[state] = seconds end

--- The keys of t, sorted by their text (so errors name the same one every run).
function layout.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local sorted_keys = layout.sorted_keys

local STATE_FIELDS = { behavior = true, on_enter = true, on_exit = true, timeout = true,
                       on_timeout = true }
local TRANSITION_FIELDS = { from = true, event = true, to = true, guard = true }

local check_table, check_function

--- t, checked to be a table or nil (then {}), for option name of csm.new.
function layout.check_table(name, t)
  if t ~= nil and type(t) ~= "table" then
    fail("csm.new: option '%s' must be a table (got %s)", name, type(t))
  end
  return t or {}
end
check_table = layout.check_table

--- Checks that f, the option at where, is a function or nil.
function layout.check_function(where, f)
  if f ~= nil and type(f) ~= "function" then
    fail("csm.new: %s must be a function (got %s)", where, type(f))
  end
end
check_function = layout.check_function

-- The intervals of re-sends and polls, and the scale: 0 would make a
-- behaviour repeat itself at one instant, for ever. (A timeout of 0 means
-- the state has none.)
local POSITIVE = { sync_retry = true, liveness_resend = true, proving_poll = true, vote_resend = true,
                   scale = true }

--- What is wrong with v as timing k, or nil: "unknown timing 'k'",
-- "timing.k must be ...". Every module that takes timing checks with it.
function layout.timing_problem(k, v)
  if layout.defaults.timing[k] == nil then return string.format("unknown timing '%s'", tostring(k)) end
  if type(v) ~= "number" or not (v >= 0) or v == math.huge then
    return string.format("timing.%s must be a finite number >= 0 (got %s)", k, tostring(v))
  end
  if POSITIVE[k] and v == 0 then return string.format("timing.%s must be > 0 (got 0)", k) end
  if k == "proving_grace" and v % 1 ~= 0 then
    return string.format("timing.proving_grace must be a whole number of polls (got %s)", tostring(v))
  end
end

--- The timing a machine runs with: the defaults, overridden by timing (a
-- table or nil, checked), every timeout and interval but proving_grace
-- multiplied by scale. A timeout of 0 is none; intervals and the scale
-- must be > 0.
function layout.timing(timing)
  timing = check_table("timing", timing)
  local defaults = layout.defaults.timing
  for _, k in ipairs(sorted_keys(timing)) do
    local problem = layout.timing_problem(k, timing[k])
    if problem then fail("csm.new: %s", problem) end
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
local function build(states, transitions, timing)
  local built = { timing = timing }
  -- states: the built-in ones, then custom ones in name order
  local state_names, state_ids = {}, {}
  for i, name in ipairs(builtin.states) do state_names[i] = name; state_ids[name] = i - 1 end
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

  -- events: the built-in ones, then new names from transitions and on_timeout
  local event_names, event_ids = {}, {}
  for i, name in ipairs(builtin.events) do event_names[i] = name; event_ids[name] = i - 1 end
  local function add_event(name)
    if event_ids[name] == nil then
      event_names[#event_names + 1] = name
      event_ids[name] = #event_names - 1
    end
    return event_ids[name]
  end
  for k in pairs(transitions) do
    if not (type(k) == "number" and k % 1 == 0 and k >= 1 and k <= #transitions) then
      fail("csm.new: option 'transitions' must be a list (key %s)", check.show(k))
    end
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
  built.state_names, built.state_ids = state_names, state_ids
  built.event_names, built.event_ids = event_names, event_ids
  built.nevents = nevents
  built.guards = {}
  built.rows = {}     -- custom rows for the C table: {from, event, to or nil, guarded}
  built.timeouts = {} -- per state: {seconds, event or nil}

  -- the transition table: the built-in one, with the custom rows applied in order
  local list, index = {}, {}
  for _, t in ipairs(builtin.transitions) do
    local row = { from = t.from, event = t.event, to = t.to, guarded = false }
    list[#list + 1] = row
    index[t.from .. "\0" .. t.event] = row
  end
  -- every custom state can stop, as the built-in ones can (a transition
  -- with to = false removes that)
  for i = NBUILTIN + 1, #state_names do
    local name = state_names[i]
    local row = { from = name, event = "stop", to = "stopping", guarded = false }
    list[#list + 1] = row
    index[name .. "\0stop"] = row
    built.rows[#built.rows + 1] = { i - 1, event_ids.stop, state_ids.stopping, false }
  end
  for _, t in ipairs(transitions) do
    local from, ev = state_ids[t.from], event_ids[t.event]
    local key = t.from .. "\0" .. t.event
    local row = index[key]
    if t.to == false then
      built.rows[#built.rows + 1] = { from, ev, nil, false }
      built.guards[from * nevents + ev] = nil
      if row then row.removed = true end
    else
      built.rows[#built.rows + 1] = { from, ev, state_ids[t.to], t.guard ~= nil }
      built.guards[from * nevents + ev] = t.guard
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
  built.transition_list = rows

  -- per-state hooks and timeouts
  built.configs = {}
  for i, name in ipairs(state_names) do
    local cfg = states[name] or {}
    local behavior = cfg.behavior
    if behavior == nil then behavior = behaviors[name] end
    built.configs[i] = { behavior = behavior or nil, on_enter = cfg.on_enter, on_exit = cfg.on_exit }
    local seconds = cfg.timeout
    if seconds ~= nil then
      seconds = seconds * timing.scale
    elseif i <= NBUILTIN then
      seconds = timing[name] or 0
    else
      seconds = 0
    end
    local event = cfg.on_timeout and event_ids[cfg.on_timeout]
    if event == nil and i <= NBUILTIN and builtin.timeout_events[name] then
      event = event_ids[builtin.timeout_events[name]]
    end
    built.timeouts[i] = { seconds, event }
  end

  return built
end

local default_layout -- for machines without states, transitions or timing

--- The layout of a machine built with states, transitions and timing (the
-- options of csm.new, checked here; any may be nil). Machines with none of
-- them share one layout, rebuilt should a built-in behaviour have been
-- replaced meanwhile.
function layout.of(states, transitions, timing)
  local resolved = layout.timing(timing)
  if states == nil and transitions == nil and timing == nil then
    local fresh = default_layout ~= nil
    for i = 1, fresh and NBUILTIN or 0 do
      local name = builtin.states[i]
      if default_layout.configs[i].behavior ~= (behaviors[name] or nil) then fresh = false end
    end
    if not fresh then default_layout = build({}, {}, resolved) end
    return default_layout
  end
  return build(check_table("states", states), check_table("transitions", transitions), resolved)
end

return layout
