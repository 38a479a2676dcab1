--- A protocol whose runs are not a function of the seed, to see what
-- `csm experiment --check-determinism` says: the minimal protocol, plus a
-- node that, at each rank it finalizes, greets its peers in `pairs` order
-- over a set of their names, which changes from one process to the next
-- (on Lua 5.4 and on LuaJIT). csm.sorted_pairs(peers) would fix it.
--
--   bin/csm experiment --protocol examples/protocols/unordered.lua --check-determinism
local minimal = require "csm.protocols.minimal"

local unordered = { name = "unordered" }

function unordered.node(options)
  local peers = {}
  for _, name in ipairs(options.names) do
    if name ~= options.name then peers[name] = true end
  end
  local endpoint
  local network = setmetatable({
    join = function(_, name, handler)
      endpoint = options.network:join(name, handler)
      return endpoint
    end,
  }, { __index = options.network })
  local copy = {}
  for k, v in pairs(options) do copy[k] = v end
  copy.network = network
  local on_finalize = options.on_finalize
  copy.on_finalize = function(node, rank, state)
    for peer in pairs(peers) do endpoint:send(peer, { kind = "hello", rank = rank }) end
    if on_finalize then on_finalize(node, rank, state) end
  end
  return minimal.node(copy)
end

return unordered
