--- The minimal protocol: N honest machines on one loop, simple providers
-- and in-process delivery. It is the quickest way to watch csm finalize
-- ranks, and what the real-loop benchmark runs.
--
--     local minimal = require "csm.protocols.minimal"
--     local c = minimal.cluster { nodes = 4, loop = csm.sim { seed = 1 } }
--     c:start()
--     c.loop:run_until(function() return c:lowest_height() >= 100 end, 3600)
--
-- The protocol: leaders are every node, rotated by rank; the top leader
-- proves at once, the i-th after a back-off; each node votes for the
-- highest-priority proposal it holds (vote identity = proposal identity);
-- quorum is 2f+1 votes for one identity; that proposal is finalized.
-- @module csm.protocols.minimal

local csm = require "csm"
local check = require "csm.check"

local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local minimal = {}
local Cluster = {}
Cluster.__index = Cluster

-- The providers of one node. `node` carries its machine, the cluster and
-- the finalized log.
local function providers(node)
  local c = node.cluster
  local name = node.name

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
    local n, out = #c.names, {}
    local first = (prior:rank() + 1) % n
    for i = 0, n - 1 do out[i + 1] = c.names[(first + i) % n + 1] end
    return out
  end

  function leader:prove_next_state(prior, _, ctx)
    local leaders = self:get_next_leaders(prior)
    for i, l in ipairs(leaders) do
      if l == name and i > 1 then
        -- back off so a live higher-priority leader's proposal wins
        local ok = ctx:sleep(node.sm:timing("proving_poll") * (node.sm:timing("proving_grace") + i))
        if not ok then return nil, "canceled" end
      end
    end
    local rank = prior:rank() + 1
    return csm.value(string.format("%d/%s", rank, name), rank, { parent = prior:identity() })
  end

  local liveness = {}
  function liveness:collect()
    local active = node.sm:active_state()
    return csm.value("live/" .. name, active and active:rank() + 1 or 0)
  end
  function liveness:send_liveness(_, collected)
    broadcast("receive_liveness_check", name, collected)
  end

  local voting = {}
  function voting:send_proposal(proposal)
    broadcast("receive_proposal", name, proposal)
  end
  function voting:decide_and_send_vote(proposals)
    local active = node.sm:active_state()
    for _, l in ipairs(leader:get_next_leaders(active)) do
      local p = proposals[l]
      if p then
        local vote = csm.value(p:identity(), p:rank())
        broadcast("receive_vote", l, name, vote)
        return l, vote
      end
    end
    return nil, "no proposal from a leader"
  end
  function voting:send_vote(vote)
    broadcast("receive_vote", name, name, vote)
    return name
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
    node.height = node.height + 1
    broadcast("receive_confirmation", name, finalized)
  end

  return { sync = sync, leader = leader, liveness = liveness, voting = voting }
end

local OPTIONS = { nodes = true, loop = true, latency = true, timing = true, trace = true }

--- Builds a cluster of the minimal protocol.
-- options: nodes (default 4), loop (default a new sim world, seed 1),
-- latency (seconds per message, default 0), timing and trace (passed to
-- csm.new). Nodes are named n01, n02, ...; each is { name, sm, finalized
-- (rank -> identity), height (the highest rank finalized) }.
function minimal.cluster(options)
  options = check.options("minimal.cluster", options, OPTIONS, true)
  local n = check.integer("minimal.cluster", "nodes", options.nodes or 4, 1, 9999)
  local loop = options.loop or csm.sim { seed = 1 }
  if not check.is_world(loop, true) then
    check.fail("minimal.cluster: option 'loop' must be a csm loop (got %s)", check.show(loop))
  end
  local c = setmetatable({
    loop = loop,
    latency = check.number("minimal.cluster", "latency", options.latency or 0, 0),
    nodes = {}, names = {},
    quorum = 2 * math.floor((n - 1) / 3) + 1,
    delivered = 0,
  }, Cluster)
  local genesis = csm.value("genesis", 0)
  local width = math.max(2, #string.format("%d", n))
  for i = 1, n do c.names[i] = string.format("n%0" .. width .. "d", i) end
  for i = 1, n do
    local node = { name = c.names[i], cluster = c, finalized = {}, height = 0 }
    local p = providers(node)
    node.sm = csm.new {
      id = node.name, initial = genesis, loop = c.loop, emit_on_send = true,
      minimum_provers = c.quorum, timing = options.timing,
      sync = p.sync, leader = p.leader, liveness = p.liveness, voting = p.voting,
      trace = options.trace,
    }
    c.nodes[i] = node
  end
  return c
end

--- A cluster (minimal.cluster).
-- @type Cluster

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

--- The lowest height of any node: the ranks every node has finalized.
function Cluster:lowest_height()
  local least = math.huge
  for _, node in ipairs(self.nodes) do least = math.min(least, node.height) end
  return least
end

return minimal
