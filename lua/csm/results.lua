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

local function check_result(provider, method, i, want, got)
  local ok
  if want == "any" then ok = true
  elseif want == "boolean" then ok = type(got) == "boolean"
  elseif want == "value" or want == "state?" then ok = is_value(got)
  elseif want == "peer" or want == "peer?" then ok = is_peer(got)
  elseif want == "peers" then
    ok = type(got) == "table"
    if ok then
      for _, p in ipairs(got) do if not is_peer(p) then ok = false end end
    end
  end
  if not ok then
    check.fail("%s:%s returned a %s as result #%d (%s expected)", provider, method, type(got), i,
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
  local p = fields_of(self, "sm:call").providers[provider]
  local shape = RESULTS[provider] and RESULTS[provider][method]
  if shape == nil then check.fail("sm:call: unknown provider method '%s:%s'", provider, method) end
  if p == nil then check.fail("csm: no %s provider (%s:%s needed)", provider, provider, method) end
  local fn = p[method]
  if type(fn) ~= "function" then check.fail("csm: %s provider has no method '%s'", provider, method) end
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

--- The shape of each provider method's results, by provider and method.
results.shapes = RESULTS

return results
