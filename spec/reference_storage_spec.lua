-- A reference node whose store fails: it stops before it sends what the
-- failed sync guarded, and never retries the sync; the others go on.
local csm = require "csm"
local net = require "csm.lab.net"
local signer = require "csm.lab.signer"
local store = require "csm.lab.store"
local checker = require "csm.lab.checker"
local reference = require "csm.protocols.reference"

-- Four nodes; n01's store fails its fail_at-th sync. Returns the nodes and
-- what n01 sent after the failure, and how many syncs it asked for.
local function run(fail_at)
  local world = csm.sim { seed = 1 }
  local network = net.new(world, { latency = 0.01 })
  local names = net.names(4)
  local keyring = signer.keyring(0, names)
  local failed, after, syncs = false, 0, 0
  network.observer = function(what, from)
    if what == "send" and from == "n01" and failed then after = after + 1 end
  end
  local nodes = {}
  for i, name in ipairs(names) do
    local s = store.sim()
    if i == 1 then
      local sync = s.sync
      s.sync = function(st, done)
        syncs = syncs + 1
        if failed or syncs >= fail_at then
          failed = true
          return done(nil, "EIO: input/output error", "io")
        end
        return sync(st, done)
      end
    end
    nodes[i] = reference.node { name = name, names = names, world = world, network = network,
      initial = csm.value("genesis", 0), signer = keyring:signer(name), store = s }
  end
  for _, node in ipairs(nodes) do node:start() end
  world:run_until(function() return checker.reached({ nodes[2], nodes[3], nodes[4] }, 10) end, 600)
  return nodes, after, syncs
end

describe("csm.protocols.reference", function()
  describe("a failed sync", function()
    it("stops the node before the guarded send, at every sync it could fail", function()
      for fail_at = 1, 15 do
        local nodes, after, syncs = run(fail_at)
        assert.equal(0, after, "a message sent after sync " .. fail_at .. " failed")
        assert.equal("EIO: input/output error", nodes[1].storage_error)
        assert.equal(fail_at, syncs, "the sync was retried")
        assert.is_true(checker.reached({ nodes[2], nodes[3], nodes[4] }, 10))
      end
    end)
  end)
end)
