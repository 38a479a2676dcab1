--- Provider calls and their results: sm:call runs a provider method with
-- the behaviour's ctx last and checks what it returned against the
-- method's shape. A result of the wrong type is a bug (it raises, and the
-- machine closes); an error result, or nil where a value is required, is a
-- failure the behaviour handles (nil, err).
-- @module csm.results

local core = require "csm.core"
local check = require "csm.check"
local machine = require "csm.machine"

local type, ipairs, select = type, ipairs, select
local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local is_value = core.is_value
local fields_of = machine.fields
local Machine = machine.metatable.__index

local results = {}

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
  return (type(x) == "string" and #x > 0) or is_value(x)
end

local function are_peers(x)
  if type(x) ~= "table" then return false end
  for _, p in ipairs(x) do if not is_peer(p) then return false end end
  return true
end

-- Per kind of result: the test of a present one (nil: anything goes), and
-- whether it may be absent.
local TESTS = { boolean = function(x) return type(x) == "boolean" end, value = is_value,
  ["state?"] = is_value, peer = is_peer, ["peer?"] = is_peer, peers = are_peers }
local OPTIONAL = { any = true, ["state?"] = true, ["peer?"] = true }

-- The checker of one method's results r1, r2 (and r3, where an error may
-- sit after two results), made once per method from its shape: an error
-- result, or nil where a value is required, returns nil, err; a result of
-- the wrong type raises.
local function checker(provider, method, shape)
  local function missing(i)
    return string.format("%s:%s returned no result #%d", provider, method, i)
  end
  local function wrong(i, want, got)
    check.fail("%s:%s returned a %s as result #%d (%s expected)", provider, method, type(got), i,
      (want:gsub("%?$", "")))
  end
  local w1, w2 = shape[1], shape[2]
  local t1, t2 = TESTS[w1], TESTS[w2]
  local o1, o2 = OPTIONAL[w1], OPTIONAL[w2]
  local missing1, missing2 = missing(1), missing(2)
  if w2 == nil then
    return function(r1, r2)
      if r2 ~= nil then return nil, r2 end
      if r1 == nil then
        if o1 then return nil end
        return nil, missing1
      end
      if t1 and not t1(r1) then wrong(1, w1, r1) end
      return r1
    end
  end
  return function(r1, r2, r3)
    if r1 == nil and r2 ~= nil then return nil, r2 end
    if r3 ~= nil then return nil, r3 end
    if r1 == nil then
      if not o1 then return nil, missing1 end
    elseif t1 and not t1(r1) then
      wrong(1, w1, r1)
    end
    if r2 == nil then
      if not o2 then return nil, missing2 end
    elseif t2 and not t2(r2) then
      wrong(2, w2, r2)
    end
    return r1, r2
  end
end

local CHECKERS = {}
for provider, methods in pairs(RESULTS) do
  CHECKERS[provider] = {}
  for method, shape in pairs(methods) do CHECKERS[provider][method] = checker(provider, method, shape) end
end

--- Calls a provider method the way the built-in behaviours do:
-- `sm:call(ctx, "voting", "is_quorum", votes)`. Results are checked: a wrong
-- type raises (a bug: the machine closes); an error result, or nil where a
-- value is required, returns nil, err.
function Machine:call(ctx, provider, method, ...)
  local p = fields_of(self, "sm:call").providers[provider]
  local checks = CHECKERS[provider]
  local checked = checks and checks[method]
  if checked == nil then check.fail("sm:call: unknown provider method '%s:%s'", provider, method) end
  if p == nil then check.fail("csm: no %s provider (%s:%s needed)", provider, provider, method) end
  local fn = p[method]
  if type(fn) ~= "function" then check.fail("csm: %s provider has no method '%s'", provider, method) end
  local nargs = select("#", ...)
  if nargs == 0 then
    return checked(fn(p, ctx))
  elseif nargs == 1 then
    local a = ...
    return checked(fn(p, a, ctx))
  elseif nargs == 2 then
    local a, b = ...
    return checked(fn(p, a, b, ctx))
  end
  local args = pack(...)
  args[nargs + 1] = ctx
  return checked(fn(p, unpack(args, 1, nargs + 1)))
end

--- The shape of each provider method's results, by provider and method.
results.shapes = RESULTS

return results
