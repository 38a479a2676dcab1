--- The machine's methods written in Lua: close, listeners, the round's
-- data (active and next state, collected, provers), timing, trace,
-- transitions and inspect. The C binding (src/machine.c) provides the
-- rest, on the same method table: receives, the ledger, send_event, state.
-- @module csm.machine

local core = require "csm.core"
local check = require "csm.check"
local tasks = require "csm.ctx"
local internal = require("csm.internal").machine

local type, ipairs, pcall, tostring, getmetatable = type, ipairs, pcall, tostring, getmetatable
local is_value = core.is_value

local machine = {}

local MACHINE = internal.metatable()
local Machine = MACHINE.__index

--- Whether x is a csm machine.
-- @local
function machine.is_machine(x)
  return getmetatable(x) == MACHINE
end

-- machine -> its Lua fields, so methods need no C call to reach them. Weak
-- both ways: the fields refer back to the machine.
local lua_fields = setmetatable({}, { __mode = "kv" })

--- The Lua fields of machine self (its loop, id, providers, layout,
-- listeners, the ctx of the behaviour running...), after checking self.
-- @local
function machine.fields(self, fname)
  local fields = lua_fields[self]
  if fields then return fields end
  if getmetatable(self) ~= MACHINE then check.selferror(fname, "csm machine expected", self) end
  fields = internal.data(self)
  lua_fields[self] = fields
  return fields
end

local fields_of = machine.fields

--- Whether x is a machine (csm.new's).
function machine.is_machine(x)
  return getmetatable(x) == MACHINE
end

local function notify(fields, message, err)
  if err == nil then
    if fields.on_trace then fields.on_trace(message) end
  elseif fields.on_error then
    fields.on_error(message, err)
  end
end

--- Closes a machine after a bug (a provider or hook raised): the error is
-- kept for sm:error() and reported to trace.error.
-- @local
function machine.fatal(sm, err)
  local fields = internal.data(sm)
  if fields.error == nil then fields.error = err end
  pcall(notify, fields, "fatal error encountered", err)
  sm:close()
end

tasks.fatal = machine.fatal

--- A machine, as csm.new makes it: `local sm = csm.new{...}`. These methods
-- are written in Lua; the others (receives, the ledger, send_event, state)
-- are the C binding's, on the same method table.
-- @type Machine

-- sm:send_event(event) is C (src/machine.c): it is the hottest call.

--- Cancels everything at once: the machine is left stopped, listeners are
-- not told, and start is refused from now on. Its behaviour's waits return
-- nil, "canceled" once, so it can clean up; a wait after that never
-- returns, so nothing of the machine's is left running and it is collected
-- once unreferenced.
function Machine:close()
  local fields = fields_of(self, "sm:close")
  local ctx = internal.take_ctx(self)
  fields.closed = true
  internal.close(self)
  if ctx then tasks.abandon(ctx) end
end

--- The fatal error that closed the machine, if any.
function Machine:error()
  return fields_of(self, "sm:error").error
end

--- Adds a listener: fn(from, to, event), or an object whose
-- on_transition(self, from, to, event) is called.
-- @return a handle for remove_listener
function Machine:add_listener(listener)
  local fields = fields_of(self, "sm:add_listener")
  local fn
  if type(listener) == "function" then
    fn = listener
  elseif type(listener) == "table" and type(listener.on_transition) == "function" then
    fn = function(from, to, event) return listener:on_transition(from, to, event) end
  else
    check.argerror("sm:add_listener", 1, "listener", "function or table with on_transition expected",
      listener)
  end
  local handle = { fn = fn, listener = listener }
  local list = {}
  for i, h in ipairs(fields.listeners) do list[i] = h end
  list[#list + 1] = handle
  fields.listeners = list
  internal.set_listened(self, true)
  return handle
end

--- Removes a listener added by add_listener.
-- @return true if it was there
function Machine:remove_listener(handle)
  local fields = fields_of(self, "sm:remove_listener")
  local list, found = {}, false
  for _, h in ipairs(fields.listeners) do
    if h == handle or h.listener == handle then found = true else list[#list + 1] = h end
  end
  fields.listeners = list
  internal.set_listened(self, list[1] ~= nil)
  return found
end

function Machine:id() return fields_of(self, "sm:id").id end
function Machine:loop() return fields_of(self, "sm:loop").loop end

--- The provider table given to csm.new under name, or nil.
function Machine:provider(name) return fields_of(self, "sm:provider").providers[name] end
function Machine:next_state() return fields_of(self, "sm:next_state").next_state end
function Machine:collected() return fields_of(self, "sm:collected").collected end
-- A copy of a list of peers.
local function copy(list)
  local out = {}
  for i = 1, #list do out[i] = list[i] end
  return out
end

--- The next provers: a new list of peer values each call.
function Machine:next_provers() return copy(fields_of(self, "sm:next_provers").next_provers) end

--- The chosen proposer, a peer value, or nil.
function Machine:chosen_proposer() return fields_of(self, "sm:chosen_proposer").chosen_proposer end
function Machine:emit_on_send() return fields_of(self, "sm:emit_on_send").emit end

local function optional_value(fname, v, name)
  if v ~= nil and not is_value(v) then check.argerror(fname, 1, name, "csm value or nil expected", v) end
end

-- A closed machine refuses every change, as it refuses receives.
local CLOSED = "machine is closed"

-- A peer as the machine keeps it: a value (a string is wrapped), or nil.
local function as_peer(p)
  if type(p) == "string" and p ~= "" then return core.peer(p) end
  if is_value(p) then return p end
end

--- Sets the next state. Returns true, or nil, message, "closed".
function Machine:set_next_state(v)
  local fields = fields_of(self, "sm:set_next_state")
  optional_value("sm:set_next_state", v, "state")
  if self:closed() then return nil, CLOSED, "closed" end
  fields.next_state = v
  return true
end

--- Sets what was collected. Returns true, or nil, message, "closed".
function Machine:set_collected(v)
  local fields = fields_of(self, "sm:set_collected")
  optional_value("sm:set_collected", v, "collected")
  if self:closed() then return nil, CLOSED, "closed" end
  fields.collected = v
  return true
end

--- Sets the next provers from a list of peers (values or non-empty
-- strings, which are wrapped); the list is copied. Returns true, or nil,
-- message, "closed".
function Machine:set_next_provers(list)
  local fields = fields_of(self, "sm:set_next_provers")
  if list ~= nil and type(list) ~= "table" then
    check.argerror("sm:set_next_provers", 1, "list", "table or nil expected", list)
  end
  local provers = {}
  for i = 1, list and #list or 0 do
    local p = as_peer(list[i])
    if p == nil then
      check.fail("sm:set_next_provers: bad argument #1 'list' (item %d is %s, a peer expected)", i,
        check.show(list[i]))
    end
    provers[i] = p
  end
  if self:closed() then return nil, CLOSED, "closed" end
  fields.next_provers = provers
  return true
end

--- Sets the chosen proposer (a value or a non-empty string, which is
-- wrapped; nil for none). Returns true, or nil, message, "closed".
function Machine:set_chosen_proposer(p)
  local fields = fields_of(self, "sm:set_chosen_proposer")
  local peer = as_peer(p)
  if p ~= nil and peer == nil then
    check.argerror("sm:set_chosen_proposer", 1, "peer", "csm value, non-empty string or nil expected", p)
  end
  if self:closed() then return nil, CLOSED, "closed" end
  fields.chosen_proposer = peer
  return true
end

--- The minimum number of provers (calls the function form).
function Machine:minimum_provers()
  local m = fields_of(self, "sm:minimum_provers").minimum_provers
  if type(m) == "function" then
    local n = m()
    if not (check.is_integer(n) and n >= 0) then
      check.fail("minimum_provers: function returned %s, expected an integer >= 0", tostring(n))
    end
    return n
  end
  return m
end

--- A timeout or interval in seconds, scaled; proving_grace is a count.
function Machine:timing(name)
  local t = fields_of(self, "sm:timing").timing[name]
  if t == nil then
    if type(name) ~= "string" then check.argerror("sm:timing", 1, "name", "string expected", name) end
    check.fail("sm:timing: unknown timing '%s'", name)
  end
  return t
end

function Machine:trace(message)
  notify(fields_of(self, "sm:trace"), message)
end

function Machine:trace_error(message, err)
  notify(fields_of(self, "sm:trace_error"), message, err == nil and "error" or err)
end

--- The transition table: { {from=, event=, to=, guarded=, taken=}, ... },
-- taken counting how often each edge was followed.
function Machine:transitions()
  local fields, out = fields_of(self, "sm:transitions"), {}
  for _, t in ipairs(fields.transition_list) do
    local edge = fields.state_ids[t.from] * fields.nevents + fields.event_ids[t.event]
    out[#out + 1] = { from = t.from, event = t.event, to = t.to, guarded = t.guarded,
                      taken = internal.taken(self, edge) }
  end
  return out
end

--- The state names this machine knows, in id order.
function Machine:states()
  local out = {}
  for i, name in ipairs(fields_of(self, "sm:states").state_names) do out[i] = name end
  return out
end

local KINDS = { "liveness", "proposals", "votes", "confirmations" }

--- A snapshot of the machine: state, data, counters and map sizes.
function Machine:inspect()
  local fields = fields_of(self, "sm:inspect")
  local counters = internal.counters(self)
  local maps = {}
  for _, kind in ipairs(KINDS) do
    local ranks = {}
    for _, rank in ipairs(internal.ranks(self, kind)) do ranks[rank] = self:count(kind, rank) end
    maps[kind] = ranks
  end
  return {
    id = fields.id, state = self:state(), state_time = self:state_time(),
    transition_count = self:transition_count(), closed = self:closed(), error = fields.error,
    active_state = self:active_state(), next_state = fields.next_state, collected = fields.collected,
    next_provers = copy(fields.next_provers), chosen_proposer = fields.chosen_proposer,
    minimum_provers = self:minimum_provers(), emit_on_send = fields.emit,
    transitions_made = counters.transitions, events_dropped = counters.dropped,
    receives_refused = counters.refused, messages_received = counters.received,
    events_queued = counters.queued, ranks_held = counters.ranks, entries_held = counters.entries,
    sizes = { liveness = counters.liveness, proposals = counters.proposals,
              votes = counters.votes, confirmations = counters.confirmations },
    maps = maps,
  }
end

-- csm.machine("n01", voting), closed machines so marked.
MACHINE.__tostring = function(sm)
  local fields = lua_fields[sm] or internal.data(sm)
  local names = fields.state_names
  local state = type(names) == "table" and sm:state() or "?"
  return string.format("csm.machine(%q, %s%s)", fields.id and fields.id:identity() or "?", state,
    sm:closed() and ", closed" or "")
end

-- Lua 5.4: `local sm <close> = csm.new{...}` closes it at scope end.
MACHINE.__close = function(sm) sm:close() end

--- The machine metatable; its __index is the method table.
machine.metatable = MACHINE

return machine
