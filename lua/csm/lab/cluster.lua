--- Clusters in the lab: n nodes of a protocol on one world and one lab
-- network, the quickest way to run a protocol in a spec, a benchmark or a
-- script.
--
--     local nodes, network = cluster.new { protocol = reference, n = 4, world = world }
--     for _, node in ipairs(nodes) do node:start() end
--     world:run_until(function() return checker.reached(nodes, 10) end, 3600)
-- @module csm.lab.cluster

local csm = require "csm"
local check = require "csm.check"
local net = require "csm.lab.net"
local signer = require "csm.lab.signer"
local store = require "csm.lab.store"

local cluster = {}

local OPTIONS = { protocol = true, n = true, world = true, network = true, params = true, initial = true,
                  timing = true }

--- n nodes of options.protocol (a module with node{name=, names=, world=,
-- network=, initial=, timing=}), named n01, n02, ..., on options.world,
-- joined to options.network (one is made with options.params when
-- absent), each starting from options.initial (default genesis, rank 0),
-- with a signer and a store of the lab's when the protocol needs them
-- (protocol.needs). Returns the nodes, not yet started, and the network.
function cluster.new(options)
  local fname = "cluster.new"
  check.options(fname, options, OPTIONS)
  local protocol = check.type(fname, "protocol", options.protocol, "table")
  check.type(fname, "protocol.node", protocol.node, "function")
  local n = check.integer(fname, "n", options.n, 1)
  local world = options.world
  if not check.is_world(world) then check.fail("%s: option 'world' must be a sim world (got %s)", fname,
    check.show(world)) end
  local network = options.network
  if network == nil then
    network = net.new(world, options.params or {})
  else
    check.network(fname, network)
  end
  local names = net.names(n)
  local needs = protocol.needs or {}
  local keyring = needs.signer and signer.keyring(0, names)
  local nodes = {}
  for i = 1, n do
    nodes[i] = protocol.node { name = names[i], names = names, world = world, network = network,
      initial = options.initial or csm.value("genesis", 0), timing = options.timing,
      signer = keyring and keyring:signer(names[i]), store = needs.store and store.sim() or nil }
  end
  return nodes, network
end

return cluster
