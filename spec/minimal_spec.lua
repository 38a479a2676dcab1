-- csm.protocols.minimal: a small honest N-node cluster on one loop.
local csm = require "csm"
local minimal = require "csm.protocols.minimal"
local checker = require "csm.lab.checker"
local support = require "support"

local function agree(c)
  return checker.logs_agree(c.nodes)
end

-- A cluster on a fresh sim world whose every transition is recorded, per
-- node, as "time from -event-> to" (time with full precision).
local function recorded(options)
  local o = { loop = csm.sim { seed = options.seed or 1 } }
  for k, v in pairs(options) do
    if k ~= "seed" then o[k] = v end
  end
  local c = minimal.cluster(o)
  local log = {}
  for _, node in ipairs(c.nodes) do
    local list = {}
    log[node.name] = list
    node.sm:add_listener(function(from, to, event)
      list[#list + 1] = string.format("%.17g %s -%s-> %s", c.loop:now(), from, event, to)
    end)
  end
  return c, log
end

local function run_to(c, ranks, timeout)
  c:start()
  local ok = c.loop:run_until(function() return c:lowest_height() >= ranks end, timeout)
  c:stop()
  return ok
end

-- The identity each node finalized at rank, for ranks 1..n.
local function finalized(c, n)
  local out = {}
  for _, node in ipairs(c.nodes) do
    local list = {}
    for rank = 1, n do list[rank] = node.finalized[rank] end
    out[node.name] = list
  end
  return out
end

describe("csm.protocols.minimal", function()
  describe("node", function()
    local net = require "csm.lab.net"

    it("runs over a lab network, each node a machine of its own, and finalizes in agreement", function()
      local world = csm.sim { seed = 4 }
      local network = net.new(world, { latency = 0.01 })
      local names, nodes, seen = net.names(4), {}, {}
      for i, name in ipairs(names) do
        nodes[i] = minimal.node { name = name, names = names, world = world, network = network,
          initial = csm.value("genesis", 0),
          on_finalize = function(node, rank, state)
            seen[#seen + 1] = { node.name, rank, state:identity() }
          end }
      end
      for _, node in ipairs(nodes) do node:start() end
      assert.is_true(world:run_until(function() return checker.reached(nodes, 5) end, 60))
      assert.is_true(checker.logs_agree(nodes))
      assert.is_true(#seen >= 20)
      assert.are.equal(3, nodes[1].sm:minimum_provers())
      world:close()
    end)

    it("refuses bad options, naming them", function()
      local world = csm.sim { seed = 1 }
      local network = net.new(world)
      local ok = { name = "a", names = { "a", "b" }, world = world, network = network }
      local function with(k, v)
        local o = {}
        for key, value in pairs(ok) do o[key] = value end
        o[k] = v
        return o
      end
      assert.are.equal("minimal.node: unknown option 'view_timeout'",
        support.error_of(minimal.node, with("view_timeout", 3)))
      assert.are.equal("minimal.node: option 'name' ('z') is not in 'names'",
        support.error_of(minimal.node, with("name", "z")))
      assert.are.equal("minimal.node: option 'network' must be a network (with join; got 5)",
        support.error_of(minimal.node, with("network", 5)))
      assert.are.equal("minimal.node: option 'quorum' must be an integer in [1, 2] (got 3)",
        support.error_of(minimal.node, with("quorum", 3)))
      assert.are.equal(1, minimal.node(with("quorum", 1)).quorum)
    end)
  end)

  describe("cluster", function()
    it("builds N machines on one loop with a 2f+1 quorum", function()
      local c = minimal.cluster { nodes = 7 }
      assert.are.equal(7, #c.nodes)
      assert.are.equal(5, c.quorum)
      assert.are.same({ "n01", "n02", "n03", "n04", "n05", "n06", "n07" }, c.names)
      for _, node in ipairs(c.nodes) do
        assert.are.equal(node.name, node.sm:id():identity())
        assert.are.equal(5, node.sm:minimum_provers())
        assert.are.equal("stopped", node.sm:state())
        assert.are.equal("genesis", node.sm:active_state():identity())
      end
      assert.are.equal(3, minimal.cluster {}.quorum)
    end)

    it("raises on bad options, naming them", function()
      assert.are.equal("minimal.cluster: unknown option 'node'",
        support.error_of(minimal.cluster, { node = 4 }))
      assert.are.equal("minimal.cluster: option 'nodes' must be an integer in [1, 9999] (got 0)",
        support.error_of(minimal.cluster, { nodes = 0 }))
      assert.are.equal("minimal.cluster: option 'nodes' must be an integer in [1, 9999] (got string \"4\")",
        support.error_of(minimal.cluster, { nodes = "4" }))
      assert.are.equal("minimal.cluster: option 'latency' must be a number >= 0 (got -1)",
        support.error_of(minimal.cluster, { latency = -1 }))
      assert.are.equal("minimal.cluster: option 'loop' must be a csm loop (got table)",
        support.error_of(minimal.cluster, { loop = {} }))
    end)
  end)

  describe("a 4-node honest cluster on a sim world", function()
    it("finalizes 100 ranks, every node the same identity at each rank", function()
      local c = recorded { nodes = 4 }
      assert.is_true(run_to(c, 100, 3600))
      assert.is_true(agree(c))
      for _, node in ipairs(c.nodes) do
        assert.is_true(node.height >= 100)
        assert.is_nil(node.sm:error())
        for rank = 1, 100 do
          -- the top leader of each rank is live, so its proposal wins
          assert.are.equal(string.format("%d/%s", rank, c.names[rank % 4 + 1]), node.finalized[rank])
        end
      end
      -- with instant delivery, rounds take no virtual time: all after starting's 1 s
      assert.are.equal(1, c.loop:now())
    end)

    it("gives identical finalized identities and transitions, at the same times, for one seed", function()
      local a, alog = recorded { nodes = 4, seed = 7, latency = 0.01 }
      local b, blog = recorded { nodes = 4, seed = 7, latency = 0.01 }
      assert.is_true(run_to(a, 30, 3600))
      assert.is_true(run_to(b, 30, 3600))
      assert.are.same(finalized(a, 30), finalized(b, 30))
      assert.are.same(alog, blog)
      assert.is_true(#alog["n01"] > 30 * 6)
      assert.are.equal(a.loop:now(), b.loop:now())
      assert.are.equal(a.delivered, b.delivered)
    end)

    it("with latency, each round takes its message hops in virtual time", function()
      local c, log = recorded { nodes = 4, latency = 0.05 }
      assert.is_true(run_to(c, 100, 3600))
      assert.is_true(agree(c))
      -- starting's 1 s, then per round: liveness, proposal, votes (3 hops of 0.05 s)
      assert.is_true(math.abs(c.loop:now() - (1 + 100 * 3 * 0.05)) < 1e-9)
      local times = {}
      for _, line in ipairs(log["n03"]) do
        if line:find("verifying -verification_done-> collecting", 1, true) then
          times[#times + 1] = tonumber(line:match("^(%S+)"))
        end
      end
      assert.is_true(#times >= 100)
      for i = 2, #times do
        assert.is_true(math.abs(times[i] - times[i - 1] - 0.15) < 1e-9)
      end
    end)

    it("still finalizes, in agreement, with one node closed", function()
      local c = recorded { nodes = 4, latency = 0.01 }
      c:start()
      c.nodes[2].sm:close()
      local ok = c.loop:run_until(function()
        local least = math.huge
        for i, node in ipairs(c.nodes) do
          if i ~= 2 then least = math.min(least, node.height) end
        end
        return least >= 8
      end, 3600)
      c:stop()
      assert.is_true(ok)
      assert.is_true(agree(c))
      assert.are.equal(0, c.nodes[2].height)
      -- rank 1's top leader (n02) is down: the next leader's proposal wins
      assert.are.equal("1/n03", c.nodes[1].finalized[1])
      assert.are.equal("2/n03", c.nodes[1].finalized[2])
    end)
  end)

  describe("agreement, checked by csm.lab.checker", function()
    it("names the rank and the nodes that disagree", function()
      local c = minimal.cluster { nodes = 3 }
      c.nodes[1].finalized[5] = "5/n01"
      c.nodes[3].finalized[5] = "5/n02"
      assert.are.same({ nil, "rank 5: n01 finalized 5/n01, n03 finalized 5/n02" }, { agree(c) })
      c.nodes[3].finalized[5] = "5/n01"
      assert.is_true(agree(c))
    end)
  end)
end)
