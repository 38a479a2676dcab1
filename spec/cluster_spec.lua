-- csm.cluster: a small honest N-node cluster on one loop.
local csm = require "csm"
local cluster = require "csm.cluster"

-- A cluster on a fresh sim world whose every transition is recorded, per
-- node, as "time from -event-> to" (time with full precision).
local function recorded(options)
  local o = { loop = csm.sim { seed = options.seed or 1 } }
  for k, v in pairs(options) do
    if k ~= "seed" then o[k] = v end
  end
  local c = cluster.new(o)
  local log = {}
  for _, node in ipairs(c.nodes) do
    local list = {}
    log[node.id] = list
    node.sm:add_listener(function(from, to, event)
      list[#list + 1] = string.format("%.17g %s -%s-> %s", c.loop:now(), from, event, to)
    end)
  end
  return c, log
end

local function run_to(c, ranks, timeout)
  c:start()
  local ok = c.loop:run_until(function() return c:min_finalized() >= ranks end, timeout)
  c:stop()
  return ok
end

-- The identity each node finalized at rank, for ranks 1..n.
local function finalized(c, n)
  local out = {}
  for _, node in ipairs(c.nodes) do
    local list = {}
    for rank = 1, n do list[rank] = node.finalized[rank] end
    out[node.id] = list
  end
  return out
end

describe("csm.cluster", function()
  describe("new", function()
    it("builds N machines on one loop with a 2f+1 quorum", function()
      local c = cluster.new { nodes = 7 }
      assert.are.equal(7, #c.nodes)
      assert.are.equal(5, c.quorum)
      assert.are.same({ "node-1", "node-2", "node-3", "node-4", "node-5", "node-6", "node-7" }, c.ids)
      for _, node in ipairs(c.nodes) do
        assert.are.equal(node.id, node.sm:id():identity())
        assert.are.equal(5, node.sm:minimum_provers())
        assert.are.equal("stopped", node.sm:state())
        assert.are.equal("genesis", node.sm:active_state():identity())
      end
      assert.are.equal(3, cluster.new {}.quorum)
    end)
  end)

  describe("a 4-node honest cluster on a sim world", function()
    it("finalizes 100 ranks, every node the same identity at each rank", function()
      local c = recorded { nodes = 4 }
      assert.is_true(run_to(c, 100, 3600))
      assert.is_true(c:agreement())
      for _, node in ipairs(c.nodes) do
        assert.is_true(node.count >= 100)
        assert.is_nil(node.sm:error())
        for rank = 1, 100 do
          -- the top leader of each rank is live, so its proposal wins
          assert.are.equal(string.format("%d/%s", rank, c.ids[rank % 4 + 1]), node.finalized[rank])
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
      assert.is_true(#alog["node-1"] > 30 * 6)
      assert.are.equal(a.loop:now(), b.loop:now())
      assert.are.equal(a.delivered, b.delivered)
    end)

    it("with latency, each round takes its message hops in virtual time", function()
      local c, log = recorded { nodes = 4, latency = 0.05 }
      assert.is_true(run_to(c, 100, 3600))
      assert.is_true(c:agreement())
      -- starting's 1 s, then per round: liveness, proposal, votes (3 hops of 0.05 s)
      assert.is_true(math.abs(c.loop:now() - (1 + 100 * 3 * 0.05)) < 1e-9)
      local times = {}
      for _, line in ipairs(log["node-3"]) do
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
          if i ~= 2 then least = math.min(least, node.count) end
        end
        return least >= 8
      end, 3600)
      c:stop()
      assert.is_true(ok)
      assert.is_true(c:agreement())
      assert.are.equal(0, c.nodes[2].count)
      -- rank 1's top leader (node-2) is down: the next leader's proposal wins
      assert.are.equal("1/node-3", c.nodes[1].finalized[1])
      assert.are.equal("2/node-3", c.nodes[1].finalized[2])
    end)
  end)

  describe("agreement", function()
    it("names the rank and the nodes that disagree", function()
      local c = cluster.new { nodes = 3 }
      c.nodes[1].finalized[5] = "5/node-1"
      c.nodes[3].finalized[5] = "5/node-2"
      assert.are.same({ nil, "rank 5: node-1 finalized 5/node-1, node-3 finalized 5/node-2" },
        { c:agreement() })
      c.nodes[3].finalized[5] = "5/node-1"
      assert.is_true(c:agreement())
    end)
  end)
end)
