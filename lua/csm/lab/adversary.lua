--- Adversaries in Lua: a module that sees every message in flight and
-- decides its fate, speaks for the nodes it controls, and may wrap them.
--
--     local adversary = {
--       name = "slow_votes",
--       message = function(a, m)           -- every copy, before the network's faults
--         if m.kind == "vote" then return { delay = 0.5 } end
--       end,
--       node = function(a, node, options) return node end,   -- each controlled node, once built
--       start = function(a) end,           -- once, when the nodes have started
--     }
--     harness.run { adversary = adversary, byzantine = { adversary = 1 } }
--
-- m is { id, from, to, msg, kind, rank, attempt, controlled } (controlled:
-- the sender is one of the adversary's nodes). A decision is nil or
-- "pass", "drop", or a table with any of delay (extra seconds), duplicate
-- (extra copies), replay (one more copy, so many seconds later) and replace
-- (another message: only for a controlled sender, or on a network of
-- unauthenticated channels; a node's signature-less message from an honest
-- node cannot be forged). Every decision other than pass is traced. The
-- handle a offers the run's names, the controlled nodes, the world's
-- generator (a:random) and clock (a:now, a:after), a:send and a:publish as
-- a controlled node, a:signer(name) and a:seal(name, msg) (a controlled
-- node's signer, and msg signed by it: a protocol that signs refuses what
-- is not), and a:note for the trace.
-- @module csm.lab.adversary

local check = require "csm.check"

local fail = check.fail
local type, pairs, ipairs = type, pairs, ipairs

local adversary = {}

local FUNCTIONS = { "message", "node", "start" }

--- Raises, naming fname, unless mod is an adversary module; returns it.
function adversary.check(fname, mod)
  if type(mod) ~= "table" then
    fail("%s: option 'adversary' must be a module table (got %s)", fname, check.show(mod))
  end
  if mod.name ~= nil and type(mod.name) ~= "string" then
    fail("%s: option 'adversary': field 'name' must be a string (got %s)", fname, check.show(mod.name))
  end
  for _, k in ipairs(FUNCTIONS) do
    if mod[k] ~= nil and type(mod[k]) ~= "function" then
      fail("%s: option 'adversary': field '%s' must be a function (got %s)", fname, k, check.show(mod[k]))
    end
  end
  return mod
end

local Handle = {}
Handle.__index = Handle

--- A handle for mod in a run: o = { world, network, names, controlled (a
-- list of names), classify = fn(msg), log = trace or nil,
-- unauthenticated = boolean, keyring = the run's signers (csm.lab.signer)
-- or nil, seal = the protocol's seal(msg, signer) or nil }. handle:intercept() is the network's
-- interceptor; handle:wrap_network() the network a controlled node joins
-- through.
function adversary.handle(mod, o)
  local controlled = {}
  for _, name in ipairs(o.controlled) do controlled[name] = true end
  local n = #o.names
  return setmetatable({
    mod = mod, world = o.world, network = o.network, log = o.log, classify = o.classify,
    names = o.names, controlled = o.controlled, is = controlled, endpoints = {},
    n = n, f = math.floor((n - 1) / 3), unauthenticated = o.unauthenticated == true, deciding = false,
    keyring = o.keyring, sealer = o.seal,
  }, Handle)
end

--- The signer of controlled node name: it signs as that node only.
function Handle:signer(name)
  if not self.is[name] then
    fail("adversary:signer: '%s' is not a node this adversary controls", tostring(name))
  end
  if self.keyring == nil then fail("adversary:signer: this run's protocol signs nothing") end
  return self.keyring:signer(name)
end

--- msg signed as controlled node name, by the protocol's seal; returns msg.
function Handle:seal(name, msg)
  local s = self:signer(name)
  if self.sealer == nil then fail("adversary:seal: this run's protocol has no seal") end
  return self.sealer(msg, s)
end

--- An adversary's handle (adversary.handle).
-- @type Handle

--- Whether name is one of the adversary's nodes.
function Handle:is_controlled(name)
  return self.is[name] == true
end

--- The world's generator: random() in [0, 1), random(m) and random(m, n)
-- integers, as loop:random.
function Handle:random(...)
  return self.world:random(...)
end

--- Virtual seconds now.
function Handle:now()
  return self.world:now()
end

--- Runs fn after seconds of virtual time (loop:after).
function Handle:after(seconds, fn)
  return self.world:after(seconds, fn)
end

--- A trace line of kind "adversary" with the note's fields.
function Handle:note(what, fields)
  if self.log then
    local out = { note = what }
    for k, v in pairs(fields or {}) do out[k] = v end
    self.log:event("adversary", out)
  end
end

local function endpoint_of(self, fname, from)
  if not self.is[from] then
    fail("%s: '%s' is not one of the adversary's nodes (it may speak only for %s)", fname,
      tostring(from), #self.controlled > 0 and table.concat(self.controlled, ", ") or "none")
  end
  local endpoint = self.endpoints[from]
  if endpoint == nil then fail("%s: node '%s' has not joined the network", fname, from) end
  return endpoint
end

-- Runs fn now, or, while a message's fate is being decided, as soon as
-- this instant's other work allows (a send inside a send would reorder
-- the copies the network is handing out).
local function soon(self, fn)
  if self.deciding then self.world:after(0, fn) else fn() end
end

--- Sends msg to node to as from, one of the adversary's nodes.
function Handle:send(from, to, msg)
  local endpoint = endpoint_of(self, "adversary:send", from)
  soon(self, function() endpoint:send(to, msg) end)
end

--- Publishes msg to every other node as from, one of the adversary's nodes.
function Handle:publish(from, msg)
  local endpoint = endpoint_of(self, "adversary:publish", from)
  soon(self, function() endpoint:publish(msg) end)
end

--- The network a controlled node joins through: the same network, its
-- endpoint kept for a:send and a:publish.
function Handle:wrap_network()
  local handle, network = self, self.network
  return setmetatable({
    join = function(_, joined, handler)
      local endpoint = network:join(joined, handler)
      handle.endpoints[joined] = endpoint
      return endpoint
    end,
  }, { __index = network })
end

local ACTIONS = { "delay", "duplicate", "replay", "replace" }

-- Checks a decision for message m; returns what the network takes, and
-- what the trace says.
local function decide(self, m, decision)
  if decision == nil or decision == "pass" then return nil end
  -- after the gst the network is the network: only the adversary's own
  -- nodes' messages are still its to change
  if self.gst and not m.controlled then return nil end
  if decision == "drop" then return "drop", { id = m.id, action = "drop" } end
  if type(decision) ~= "table" then
    fail("adversary '%s': decision must be nil, \"pass\", \"drop\" or a table (got %s)",
      self.mod.name or "?", check.show(decision))
  end
  for k in pairs(decision) do
    local known = false
    for _, a in ipairs(ACTIONS) do known = known or a == k end
    if not known then
      fail("adversary '%s': unknown action '%s' (actions: %s)", self.mod.name or "?", tostring(k),
        table.concat(ACTIONS, ", "))
    end
  end
  if decision.replace ~= nil and not (m.controlled or self.unauthenticated) then
    fail("adversary '%s': cannot replace message %d from honest node '%s' (channels are authenticated; "
      .. "it may delay, drop or duplicate it)", self.mod.name or "?", m.id, m.from)
  end
  local out = { delay = decision.delay, duplicate = decision.duplicate, replace = decision.replace }
  local said = { id = m.id, action = "change" }
  for _, a in ipairs(ACTIONS) do
    if decision[a] ~= nil then said[a] = a == "replace" and true or decision[a] end
  end
  local replay = decision.replay
  if replay ~= nil then
    if type(replay) ~= "number" or not (replay >= 0) or replay == math.huge then
      fail("adversary '%s': replay must be a finite number of seconds >= 0 (got %s)", self.mod.name or "?",
        check.show(replay))
    end
    local network, id, from, to, msg = self.network, m.id, m.from, m.to, m.msg
    self.world:after(replay, function() network:replay(id, from, to, msg) end)
  end
  return out, said
end

--- The network's interceptor: asks the module's message function. An
-- error there (or a decision that is none) is the adversary's, not the
-- sending node's: it is kept in handle.failure, the world stops, and the
-- message is dropped; the harness raises it.
function Handle:intercept()
  local mod, classify = self.mod, self.classify
  return function(id, from, to, msg)
    if self.failure then return "drop" end
    local kind, rank, attempt = classify(msg)
    local m = { id = id, from = from, to = to, msg = msg, kind = kind, rank = rank, attempt = attempt,
                controlled = self.is[from] == true }
    self.deciding = true
    local ok, out, said = pcall(function() return decide(self, m, mod.message(self, m)) end)
    self.deciding = false
    if not ok then
      self.failure = tostring(out)
      self.world:stop()
      return "drop"
    end
    if said and self.log then self.log:event("adversary", said) end
    return out
  end
end

return adversary
