-- Shared by the specs: error capture, a recording machine on a sim world,
-- and providers whose every method can be replaced per test.
local csm = require "csm"

local support = {}

--- The message fn raised (position prefix removed), or nil if it did not.
function support.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then return nil end
  return (tostring(err):gsub("^[^\n]-:%d+: ", ""))
end

--- Whether we run on Lua 5.4 (as opposed to LuaJIT).
support.lua54 = _VERSION == "Lua 5.4" and not rawget(_G, "jit")

--- Providers for one node: a one-node protocol that finalizes every rank
-- with its own proposal. Pass overrides as { voting = { is_quorum = fn } }.
-- Every call is recorded in p.calls as "provider.method".
function support.providers(id, overrides)
  overrides = overrides or {}
  local p = { calls = {} }
  local function record(name) p.calls[#p.calls + 1] = name end
  local base = {
    sync = {
      synchronize = function(_, existing) return existing end,
    },
    leader = {
      get_next_leaders = function() return { id } end,
      prove_next_state = function(_, prior)
        return csm.value("p" .. (prior:rank() + 1), prior:rank() + 1)
      end,
    },
    liveness = {
      collect = function()
        local active = p.sm and p.sm:active_state()
        return csm.value("live-" .. id, active and active:rank() + 1 or 1)
      end,
      send_liveness = function() return true end,
    },
    voting = {
      send_proposal = function() return true end,
      decide_and_send_vote = function(_, proposals)
        local _, proposal = next(proposals)
        return id, csm.value(proposal:identity(), proposal:rank())
      end,
      send_vote = function() return id end,
      is_quorum = function(_, votes) return next(votes) ~= nil end,
      finalize_votes = function(_, proposals)
        local peer, proposal = next(proposals)
        return proposal, peer
      end,
      send_confirmation = function() return true end,
    },
  }
  for name, methods in pairs(base) do
    local provider = {}
    for method, fn in pairs(methods) do
      local chosen = (overrides[name] and overrides[name][method]) or fn
      provider[method] = function(...)
        record(name .. "." .. method)
        return chosen(...)
      end
    end
    p[name] = provider
  end
  return p
end

--- A machine on a sim world with the providers above and fast timings;
-- opts are passed to csm.new over these defaults. Returns sm, world, log
-- where log.transitions lists "from -event-> to" and log.errors the
-- trace.error calls as "message: err".
function support.machine(opts)
  opts = opts or {}
  local world = opts.loop or csm.sim { seed = 1 }
  local id = opts.id or "n1"
  local p = support.providers(id, opts.overrides)
  local log = { transitions = {}, errors = {}, traces = {} }
  local o = {
    id = id, loop = world, initial = csm.value("genesis", 0), emit_on_send = true,
    minimum_provers = 1,
    sync = p.sync, voting = p.voting, leader = p.leader, liveness = p.liveness,
    trace = {
      trace = function(msg) log.traces[#log.traces + 1] = msg end,
      error = function(msg, err) log.errors[#log.errors + 1] = msg .. ": " .. tostring(err) end,
    },
  }
  for k, v in pairs(opts) do
    if k ~= "overrides" and k ~= "loop" then o[k] = v end
  end
  if opts.initial == false then o.initial = nil end
  local sm = csm.new(o)
  p.sm = sm
  log.providers = p
  sm:add_listener(function(from, to, event)
    log.transitions[#log.transitions + 1] = from .. " -" .. event .. "-> " .. to
  end)
  return sm, world, log
end

--- Index of the first entry of list equal to x, or nil.
function support.find(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
end

return support
