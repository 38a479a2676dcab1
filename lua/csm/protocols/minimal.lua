--- The minimal protocol: N honest machines on one loop, simple providers
-- and in-process delivery (minimal.cluster), or one node over a lab
-- network (minimal.node, as the harness runs it). The cluster is the
-- quickest way to watch csm finalize ranks, and what the real-loop
-- benchmark runs.
--
--     local minimal = require "csm.protocols.minimal"
--     local c = minimal.cluster { nodes = 4, loop = csm.sim { seed = 1 } }
--     c:start()
--     c.loop:run_until(function() return c:lowest_height() >= 100 end, 3600)
--
-- The protocol: leaders are every node, rotated by rank; the top leader
-- proves at once, the i-th after a back-off; each node votes for the
-- highest-priority proposal it holds (vote identity = proposal identity);
-- quorum is 2f+1 votes for one identity; that proposal is finalized. It
-- re-sends only its votes (the machine's vote_resend): a lost proposal or
-- confirmation is not asked for again, so it runs on a network without
-- loss; the reference protocol is the one that recovers.
-- @module csm.protocols.minimal

local csm = require "csm"
local check = require "csm.check"

local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local minimal = {}
local Cluster = {}
Cluster.__index = Cluster

-- The providers of node: { name, names, quorum, finalized, height, sm,
-- broadcast = fn(method, ...) calling sm[method](sm, ...) at every other
-- node, on_finalize = fn or nil }.
local function providers(node)
  local name, names = node.name, node.names
  local function broadcast(...) node.broadcast(...) end

  -- nothing to fetch: a node keeps what it has; but a rank it comes back to
  -- (a quorum of votes for a proposal it never got sends it here) waits a
  -- poll first, or the machine would go round at one instant for ever
  local sync = {}
  function sync:synchronize(existing, ctx)
    local rank = existing and existing:rank() or -1
    if node.synced == rank then
      local ok = ctx:sleep(node.sm:timing("proving_poll"))
      if not ok then return nil, "canceled" end
    end
    node.synced = rank
    return existing
  end

  local leader = {}
  -- every node, rotated so that priority moves with the rank
  function leader:get_next_leaders(prior)
    local n, out = #names, {}
    local first = (prior:rank() + 1) % n
    for i = 0, n - 1 do out[i + 1] = names[(first + i) % n + 1] end
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
  -- in voter order: with a quorum too small (examples/protocols/
  -- broken_quorum.lua), two identities may reach it, and pairs order,
  -- which differs between processes, must not choose
  local function winner(votes)
    local tally = {}
    for _, v in csm.sorted_pairs(votes) do
      local k = v:identity()
      tally[k] = (tally[k] or 0) + 1
      if tally[k] >= node.quorum then return k end
    end
  end
  function voting:is_quorum(votes)
    return winner(votes) ~= nil
  end
  function voting:finalize_votes(proposals, votes)
    local identity = winner(votes)
    for peer, p in csm.sorted_pairs(proposals) do
      if p:identity() == identity then return p, peer end
    end
    return nil, "no proposal matches the quorum"
  end
  function voting:send_confirmation(finalized)
    node.finalized[finalized:rank()] = finalized:identity()
    node.height = node.height + 1
    if node.on_finalize then node.on_finalize(node, finalized:rank(), finalized) end
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
    local node = { name = c.names[i], names = c.names, quorum = c.quorum, finalized = {}, height = 0 }
    node.broadcast = function(method, ...)
      local args = pack(...)
      for _, other in ipairs(c.nodes) do
        if other ~= node then
          c:deliver(function() other.sm[method](other.sm, unpack(args, 1, args.n)) end)
        end
      end
    end
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

-- ---- one node over a network (the lab's protocol interface) ----

--- The protocol's name, for reports and traces.
minimal.name = "minimal"

-- How a machine's receive becomes a message, and back.
local KIND_OF = { receive_liveness_check = "liveness", receive_proposal = "proposal",
                  receive_vote = "vote", receive_confirmation = "confirmation" }

local NODE_OPTIONS = { name = true, names = true, world = true, network = true, initial = true,
                       timing = true, on_finalize = true, sync = true, trace = true, quorum = true,
                       note = true, lab = true }

--- One node over a network with the lab network's interface (join returns
-- an endpoint with publish): options name, names (every node, in order),
-- world, network, initial, timing, on_finalize(node, rank, state), trace,
-- quorum (the votes that finalize, and the liveness a round needs: 2f + 1
-- unless told; less is unsafe, which is what a planted bug may want);
-- sync, note and lab are accepted and ignored (a minimal node keeps nothing through a
-- crash and does not sync: it follows its peers' next rank). Returns { name,
-- sm, height, finalized, refused, start = fn }.
function minimal.node(options)
  local fname = "minimal.node"
  options = check.options(fname, options, NODE_OPTIONS)
  check.node_options(fname, options)
  local network = options.network
  check.type(fname, "on_finalize", options.on_finalize, "function", true)
  local n = #options.names
  check.integer(fname, "quorum", options.quorum, 1, n, true)
  local node = { name = options.name, names = options.names,
                 quorum = options.quorum or 2 * math.floor((n - 1) / 3) + 1,
                 finalized = {}, height = 0, refused = 0, on_finalize = options.on_finalize }
  local endpoint
  node.broadcast = function(method, peer_or_proposer, a, b)
    local kind = KIND_OF[method]
    if kind == "vote" then
      endpoint:publish { kind = kind, proposer = peer_or_proposer, value = b }
    else
      endpoint:publish { kind = kind, value = a }
    end
  end
  local p = providers(node)
  node.sm = csm.new {
    id = node.name, initial = options.initial, loop = options.world, emit_on_send = true,
    minimum_provers = node.quorum, timing = options.timing,
    sync = p.sync, leader = p.leader, liveness = p.liveness, voting = p.voting,
    trace = options.trace,
  }
  endpoint = network:join(node.name, function(from, msg)
    local sm, kind, ok = node.sm, type(msg) == "table" and msg.kind, nil
    local value = type(msg) == "table" and msg.value
    if not csm.is_value(value) then
      ok = nil
    elseif kind == "liveness" then ok = sm:receive_liveness_check(from, value)
    elseif kind == "proposal" then ok = sm:receive_proposal(from, value)
    elseif kind == "vote" and type(msg.proposer) == "string" and msg.proposer ~= "" then
      ok = sm:receive_vote(msg.proposer, from, value)
    elseif kind == "confirmation" then ok = sm:receive_confirmation(from, value)
    end
    if not ok then node.refused = node.refused + 1 end
  end)
  function node.start() node.sm:start() end
  return node
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
