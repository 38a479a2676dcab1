--- A small honest cluster: N machines on one loop, simple providers and
-- in-process delivery. It is the quickest way to watch csm finalize rounds.
--
--     local cluster = require "csm.cluster"
--     local c = cluster.new{ nodes = 4, loop = csm.sim{ seed = 1 } }
--     c:start()
--     c.loop:run_until(function() return c:min_finalized() >= 100 end, 3600)
--
-- The protocol: leaders are every node, rotated by rank; the top leader
-- proves at once, the i-th after a back-off; each node votes for the
-- highest-priority proposal it holds (vote identity = proposal identity);
-- quorum is 2f+1 votes for one identity; that proposal is finalized.
-- @module csm.cluster

local csm = require "csm"

local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local cluster = {}
local Cluster = {}
Cluster.__index = Cluster

-- The providers of one node. `node` carries its machine, the cluster and
-- the finalized log.
local function providers(node)
  local c = node.cluster
  local id = node.id

  local function broadcast(method, ...)
    local args = pack(...)
    for _, other in ipairs(c.nodes) do
      if other ~= node then
        c:deliver(function() other.sm[method](other.sm, unpack(args, 1, args.n)) end)
      end
    end
  end

  local sync = {}
  function sync:synchronize(existing) return existing end

  local leader = {}
  -- every node, rotated so that priority moves with the rank
  function leader:get_next_leaders(prior)
    local n, out = #c.ids, {}
    local first = (prior:rank() + 1) % n
    for i = 0, n - 1 do out[i + 1] = c.ids[(first + i) % n + 1] end
    return out
  end

  function leader:prove_next_state(prior, _, ctx)
    local leaders = self:get_next_leaders(prior)
    for i, l in ipairs(leaders) do
      if l == id and i > 1 then
        -- back off so a live higher-priority leader's proposal wins
        local ok = ctx:sleep(node.sm:timing("proving_poll") * (node.sm:timing("proving_grace") + i))
        if not ok then return nil, "canceled" end
      end
    end
    local rank = prior:rank() + 1
    return csm.value(string.format("%d/%s", rank, id), rank, { parent = prior:identity() })
  end

  local liveness = {}
  function liveness:collect()
    local active = node.sm:active_state()
    return csm.value("live/" .. id, active and active:rank() + 1 or 0)
  end
  function liveness:send_liveness(_, collected)
    broadcast("receive_liveness_check", id, collected)
  end

  local voting = {}
  function voting:send_proposal(proposal)
    broadcast("receive_proposal", id, proposal)
  end
  function voting:decide_and_send_vote(proposals)
    local active = node.sm:active_state()
    for _, l in ipairs(leader:get_next_leaders(active)) do
      local p = proposals[l]
      if p then
        local vote = csm.value(p:identity(), p:rank())
        broadcast("receive_vote", l, id, vote)
        return l, vote
      end
    end
    return nil, "no proposal from a leader"
  end
  function voting:send_vote(vote)
    broadcast("receive_vote", id, id, vote)
    return id
  end
  local function winner(votes)
    local tally = {}
    for _, v in pairs(votes) do
      local k = v:identity()
      tally[k] = (tally[k] or 0) + 1
      if tally[k] >= c.quorum then return k end
    end
  end
  function voting:is_quorum(votes)
    return winner(votes) ~= nil
  end
  function voting:finalize_votes(proposals, votes)
    local identity = winner(votes)
    for peer, p in pairs(proposals) do
      if p:identity() == identity then return p, peer end
    end
    return nil, "no proposal matches the quorum"
  end
  function voting:send_confirmation(finalized)
    node.finalized[finalized:rank()] = finalized:identity()
    node.count = node.count + 1
    broadcast("receive_confirmation", id, finalized)
  end

  return { sync = sync, leader = leader, liveness = liveness, voting = voting }
end

--- Builds a cluster.
-- options: nodes (default 4), loop (default a new sim world, seed 1),
-- latency (seconds per message, default 0), timing (passed to csm.new).
function cluster.new(options)
  options = options or {}
  local n = options.nodes or 4
  local c = setmetatable({
    loop = options.loop or csm.sim { seed = 1 },
    latency = options.latency or 0,
    nodes = {}, ids = {},
    quorum = 2 * math.floor((n - 1) / 3) + 1,
    delivered = 0,
  }, Cluster)
  local genesis = csm.value("genesis", 0)
  for i = 1, n do c.ids[i] = "node-" .. i end
  for i = 1, n do
    local node = { id = c.ids[i], cluster = c, finalized = {}, count = 0 }
    local p = providers(node)
    node.sm = csm.new {
      id = node.id, initial = genesis, loop = c.loop, emit_on_send = true,
      minimum_provers = c.quorum, timing = options.timing,
      sync = p.sync, leader = p.leader, liveness = p.liveness, voting = p.voting,
      trace = options.trace,
    }
    c.nodes[i] = node
  end
  return c
end

--- Hands a message to the loop, to be delivered after the latency.
function Cluster:deliver(fn)
  self.delivered = self.delivered + 1
  self.loop:after(self.latency, fn)
end

function Cluster:start()
  for _, node in ipairs(self.nodes) do node.sm:start() end
end

function Cluster:stop()
  for _, node in ipairs(self.nodes) do node.sm:close() end
end

--- The fewest ranks any node has finalized.
function Cluster:min_finalized()
  local least = math.huge
  for _, node in ipairs(self.nodes) do least = math.min(least, node.count) end
  return least
end

--- Checks that every node finalized the same identity at each rank.
-- @return true, or nil and a message naming the rank and nodes
function Cluster:agreement()
  local first = self.nodes[1]
  for _, node in ipairs(self.nodes) do
    for rank, identity in pairs(node.finalized) do
      local other = first.finalized[rank]
      if other ~= nil and other ~= identity then
        return nil, string.format("rank %d: %s finalized %s, %s finalized %s", rank, first.id,
          other, node.id, identity)
      end
    end
  end
  return true
end

return cluster
