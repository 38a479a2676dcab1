--- Reference providers: a small BFT protocol on the seed's interfaces, for
-- n nodes of which f = floor((n - 1) / 3) may be byzantine, on a csm.net
-- network.
--
-- A rank may take several attempts. In attempt a of rank R the leaders are
-- every node, rotated by R + a; the top leader proves at once, the i-th
-- after a back-off. Each node prevotes for the highest-priority proposal
-- of the attempt it holds; a node sends its vote (the machine's vote,
-- identity = the proposal voted for) only for a proposal that q = n - f
-- nodes prevoted (a polka), so two proposals can never both gather votes in
-- one attempt. A node that has not voted moves to the next attempt after
-- `view_timeout`, or when f + 1 peers are already there; a node that voted
-- never moves, which keeps a second attempt from deciding anything else.
-- Quorum is q votes for one identity; that proposal is finalized and
-- confirmed. A node that sees f + 1 peers ahead of it syncs: it adopts, rank
-- by rank, the states f + 1 peers report as finalized.
--
-- Byzantine variants (`role`): "equivocate" sends different proposals to
-- different peers; "double_vote" sends conflicting prevotes and votes and
-- votes twice; "silent" never sends.
-- @module csm.reference

local csm = require "csm"

local reference = {}
local Node = {}
Node.__index = Node

local ROLES = { honest = true, equivocate = true, double_vote = true, silent = true }
reference.roles = ROLES

--- The largest number of byzantine nodes n tolerates, and the quorum.
function reference.thresholds(n)
  local f = math.floor((n - 1) / 3)
  return f, n - f
end

--- A node. options: name, names (every node, in order), world, network,
-- role ("honest"), initial (genesis state), timing (for csm.new),
-- view_timeout (virtual seconds, default 8 x timing.scale), sync_wait
-- (default 0.5 x timing.scale), sync (start with a network sync),
-- on_finalize(node, rank, state), trace (for csm.new).
function reference.node(options)
  local role = options.role or "honest"
  if not ROLES[role] then error("reference.node: unknown role '" .. tostring(role) .. "'", 2) end
  local n = #options.names
  local f, q = reference.thresholds(n)
  local scale = options.timing and options.timing.scale or 1
  local self = setmetatable({
    name = options.name, names = options.names, n = n, f = f, q = q,
    world = options.world, network = options.network, role = role,
    view_timeout = options.view_timeout or 8 * scale,
    sync_wait = options.sync_wait or 0.5 * scale,
    needs_sync = options.sync == true,
    on_finalize = options.on_finalize,
    finalized = {}, finalized_at = {}, chain = {}, progress = {}, cast = {},
    refused = 0, refusals = {}, count = 0, rotations = {}, reasons = {}, nreasons = 0,
  }, Node)
  for i, name in ipairs(self.names) do
    if name == self.name then self.index = i end
  end
  self.providers = {
    sync = { synchronize = function(_, existing, ctx) return self:synchronize(existing, ctx) end },
    leader = {
      get_next_leaders = function(_, prior) return self:leaders(prior:rank() + 1) end,
      prove_next_state = function(_, prior, _, ctx) return self:prove(prior, ctx) end,
    },
    liveness = {
      collect = function() return self:collect() end,
      send_liveness = function(_, _, collected) return self:send_liveness(collected) end,
    },
    voting = {
      send_proposal = function(_, proposal) return self:send_proposal(proposal) end,
      decide_and_send_vote = function(_, _, ctx) return self:decide(ctx) end,
      send_vote = function(_, vote) return self:send_vote(vote) end,
      is_quorum = function(_, votes) return self:is_quorum(votes) end,
      finalize_votes = function(_, proposals, votes) return self:finalize_votes(proposals, votes) end,
      send_confirmation = function(_, finalized) return self:confirm(finalized) end,
    },
  }
  self.sm = csm.new {
    id = self.name, initial = options.initial, loop = self.world, emit_on_send = true,
    minimum_provers = q, timing = options.timing, trace = options.trace,
    sync = self.providers.sync, leader = self.providers.leader,
    liveness = self.providers.liveness, voting = self.providers.voting,
  }
  self.network:join(self.name, function(from, msg) self:deliver(from, msg) end)
  return self
end

-- Sets list[rank] = value and forgets the ranks 64 or more below it: the
-- list is a window of recent ranks (list.low is its first), however ranks
-- were skipped.
local function keep_recent(list, rank, value)
  list[rank] = value
  local low = math.min(list.low or rank, rank)
  local floor = rank - 63
  if floor - low > 64 then
    for r in pairs(list) do
      if r ~= "low" and r < floor then list[r] = nil end
    end
  else
    for r = low, floor - 1 do list[r] = nil end
  end
  list.low = math.max(low, floor)
end

-- ---- rounds and attempts ----

--- The rank being decided; resets the attempt when it changed.
function Node:round()
  local active = self.sm:active_state()
  local rank = active and active:rank() + 1 or 1
  if self.rank ~= rank then
    self.rank = rank
    self.attempt = 0
    self.attempt_start = self.world:now()
    self.tally = {}        -- attempt -> { by = {voter -> identity}, count = {identity -> n} }
    self.voted_in = {}     -- attempt -> true once anyone's vote for it arrived
    self.prevoted = {}     -- attempt -> identity this node prevoted
    self.my_vote = nil
    self.seen_attempt = {} -- peer -> highest attempt seen at this rank
  end
  return rank
end

function Node:move_to(attempt)
  self.attempt = attempt
  self.attempt_start = self.world:now()
end

--- The leaders of rank in the current attempt: every node, rotated. The
-- list is shared until the rotation changes: callers must not change it.
function Node:leaders(rank)
  local attempt = rank == self.rank and self.attempt or 0
  local n = self.n
  local first = (rank + attempt) % n
  local out = self.rotations[first]
  if out == nil then
    out = {}
    for i = 0, n - 1 do out[i + 1] = self.names[(first + i) % n + 1] end
    self.rotations[first] = out
  end
  return out
end

--- Whether f + 1 peers have moved past the rank this node is deciding.
function Node:is_behind()
  local rank, ahead = self:round(), 0
  for _, name in ipairs(self.names) do
    if (self.progress[name] or 0) > rank then ahead = ahead + 1 end
  end
  return ahead > self.f
end

-- The attempt f + 1 peers have reached, if above this node's.
function Node:jump_target()
  local attempts = {}
  for _, name in ipairs(self.names) do
    local a = self.seen_attempt[name]
    if a and a > self.attempt then attempts[#attempts + 1] = a end
  end
  if #attempts <= self.f then return nil end
  table.sort(attempts, function(x, y) return x > y end)
  return attempts[self.f + 1]
end

-- ---- sending ----

function Node:publish(msg)
  if self.role ~= "silent" then self.network:publish(self.name, msg) end
end

function Node:send(to, msg)
  if self.role ~= "silent" then self.network:send(self.name, to, msg) end
end

-- ---- providers ----

function Node:synchronize(existing, ctx)
  self:round()
  if not (self.needs_sync or self:is_behind()) then return existing end
  self.needs_sync = false
  local base = existing and existing:rank() or 0
  local responses = {}
  self.sync_responses = responses
  self:publish { kind = "sync_request", rank = base }
  local ok = ctx:sleep(self.sync_wait)
  self.sync_responses = nil
  if not ok then return nil, "canceled" end
  -- adopt, rank by rank, what f + 1 peers agree was finalized
  local adopted = nil
  for rank = base + 1, base + 64 do
    local tally, chosen = {}, nil
    for _, r in ipairs(responses) do
      local state = r.chain[rank]
      if state then
        local id = state:identity()
        tally[id] = (tally[id] or 0) + 1
        if tally[id] == self.f + 1 then chosen = state end
      end
    end
    if chosen == nil then break end
    adopted = chosen
    self:record(rank, chosen)
  end
  if adopted == nil then
    -- peers that did not answer cannot help: forget how far they claimed to
    -- be, or a crashed one would keep this node "behind", syncing, forever
    local answered = {}
    for _, r in ipairs(responses) do answered[r.from] = true end
    for name in pairs(self.progress) do
      if not answered[name] then self.progress[name] = nil end
    end
  end
  return adopted or existing
end

function Node:collect()
  return csm.value("live:" .. self.name, self:round())
end

function Node:send_liveness(collected)
  if self:is_behind() then return nil, "behind" end
  -- a re-announcement asks peers to answer with theirs: those that moved
  -- on announce no more, and a node that lost their first ones would wait
  local again = self.announced == collected:rank()
  self.announced = collected:rank()
  self:publish { kind = "liveness", value = collected, again = again or nil }
  return true
end

-- Before a later attempt's proposal from peer replaces the one held at
-- rank, keeps that one under "peer@attempt": votes may already be on it,
-- and finalizing needs the proposal they chose.
local function keep_held(sm, rank, peer)
  local held = sm:get("proposals", rank, peer)
  if held then sm:store("proposals", rank, peer .. "@" .. tostring(held.attempt or 0), held) end
  return held
end

function Node:prove(prior, ctx)
  local rank = self:round()
  local attempt = self.attempt
  keep_held(self.sm, rank, self.name)
  local leaders = self:leaders(rank)
  for i, name in ipairs(leaders) do
    if name == self.name and i > 1 then
      -- back off so that a live higher-priority leader's proposal wins
      local poll, grace = self.sm:timing("proving_poll"), self.sm:timing("proving_grace")
      if not ctx:sleep(poll * (grace + i)) then return nil, "canceled" end
      if self.attempt ~= attempt then return nil, "attempt changed" end
    end
  end
  return csm.value(string.format("%d.%d:%s", rank, attempt, self.name), rank,
    { parent = prior:identity(), attempt = attempt, proposer = self.name })
end

function Node:send_proposal(proposal)
  if self.role == "equivocate" then
    -- a different proposal to every other peer
    local k = 0
    for _, to in ipairs(self.names) do
      if to ~= self.name then
        k = k + 1
        local variant = proposal
        if k % 2 == 0 then
          variant = csm.value(proposal:identity() .. "'", proposal:rank(), {
            parent = proposal.parent, attempt = proposal.attempt, proposer = self.name })
        end
        self:send(to, { kind = "proposal", value = variant })
      end
    end
    return true
  end
  self:publish { kind = "proposal", value = proposal }
  return true
end

-- The highest-priority proposal of the current attempt this node holds.
function Node:candidate(rank)
  local sm = self.sm
  for _, leader in ipairs(self:leaders(rank)) do
    local p = sm:get("proposals", rank, leader)
    if p and p.attempt == self.attempt and p.proposer == leader then return p, leader end
  end
end

-- The identity q nodes prevoted (or voted) for in the current attempt or,
-- failing that, in the latest earlier one that has such a polka; and that
-- attempt. Voters of an earlier attempt never move, so a node that missed
-- their polka (a partition, say) must be able to join it; each node still
-- votes once per rank, which is what keeps two quorums apart.
-- f + 1 votes for one identity in an attempt count as its polka too: one of
-- them is honest and saw q prevotes (a voter's own earlier prevote may have
-- been for another proposal, so its vote alone does not show in count).
function Node:polka()
  for attempt = self.attempt, 0, -1 do
    local t = self.tally[attempt]
    if t then
      for id, c in pairs(t.count) do
        if c >= self.q then return id, attempt end
      end
      for id, c in pairs(t.votes) do
        if c > self.f then return id, attempt end
      end
    end
  end
end

function Node:attempt_tally(attempt)
  local t = self.tally[attempt]
  if t == nil then
    t = { by = {}, count = {}, voted = {}, votes = {} }
    self.tally[attempt] = t
  end
  return t
end

-- Counts voter's vote for id in attempt of the current rank; one per voter.
function Node:note_vote(voter, rank, attempt, id)
  if rank ~= self.rank or attempt > self.attempt + self.n then return end
  local t = self:attempt_tally(attempt)
  if t.voted[voter] then return end
  t.voted[voter] = id
  t.votes[id] = (t.votes[id] or 0) + 1
end

-- Counts voter's prevote (or vote: a vote implies the prevote) for id in
-- attempt of the current rank; one per voter per attempt.
function Node:note_prevote(voter, rank, attempt, id)
  if rank ~= self.rank or attempt > self.attempt + self.n then return end
  local t = self:attempt_tally(attempt)
  if t.by[voter] then return end
  t.by[voter] = id
  t.count[id] = (t.count[id] or 0) + 1
end

-- Whether anyone voted in the current attempt: then its polka may still
-- complete here, and leaving would strand the voters.
function Node:votes_seen()
  return self.voted_in[self.attempt] == true
end

function Node:prevote(rank, id)
  local attempt = self.attempt
  self.prevoted[attempt] = id
  self:note_prevote(self.name, rank, attempt, id)
  if self.role == "double_vote" then
    for k, to in ipairs(self.names) do
      if to ~= self.name then
        self:send(to, { kind = "prevote", rank = rank, attempt = attempt,
                        id = k % 2 == 0 and id or id .. "*" })
      end
    end
    return
  end
  self:publish { kind = "prevote", rank = rank, attempt = attempt, id = id }
end


-- Suspends until a message arrives or seconds pass.
function Node:pause(ctx, seconds)
  return ctx:await(function(resolve)
    local timer = self.world:after(seconds, function() resolve("timeout") end)
    self.poke = function()
      self.poke = nil
      timer:cancel()
      resolve("message")
    end
  end)
end

function Node:decide(ctx)
  local rank = self:round()
  if self.my_vote then
    -- voted already at this rank: never anything else
    return self.my_vote.proposer, self.my_vote
  end
  local resend = self.sm:timing("vote_resend")
  local next_resend = self.world:now() + resend
  while true do
    local id, attempt = self:polka()
    if id then
      local proposer = id:match("^%d+%.%d+:(.*)$") or id
      proposer = proposer:gsub("'$", "")
      local vote = csm.value(id, rank, { attempt = attempt, proposer = proposer })
      self.my_vote = vote
      self.voted_in[attempt] = true
      self:send_vote(vote)
      if self.role == "double_vote" then
        self:publish { kind = "vote", proposer = proposer, attempt = attempt,
                       value = csm.value(id .. "*", rank, { attempt = attempt }) }
      end
      return proposer, vote
    end
    if self:is_behind() then return nil, "behind" end
    local target = self:jump_target()
    local now = self.world:now()
    local deadline = self.attempt_start + self.view_timeout
    if (target or now >= deadline) and not self:votes_seen() then
      self:move_to(target or self.attempt + 1)
      return nil, "attempt " .. self.attempt
    end
    local p = self:candidate(rank)
    if p and not self.prevoted[self.attempt] then self:prevote(rank, p:identity()) end
    if now >= next_resend then
      next_resend = now + resend
      local mine = self.prevoted[self.attempt]
      if mine then
        self:publish { kind = "prevote", rank = rank, attempt = self.attempt, id = mine }
        -- a leader re-sends its proposal too: a peer that lost it cannot prevote
        local own = self.sm:get("proposals", rank, self.name)
        if own and own:identity() == mine then self:send_proposal(own) end
      end
    end
    -- a deadline that passed while votes were seen no longer wakes this
    -- node: waking for it again at once would spin without time passing
    local wake = next_resend
    if deadline > now and deadline < wake then wake = deadline end
    local why = self:pause(ctx, wake - now)
    if why == nil then return nil, "canceled" end
  end
end

function Node:send_vote(vote)
  local msg = { kind = "vote", proposer = vote.proposer, attempt = vote.attempt, value = vote }
  keep_recent(self.cast, vote:rank(), msg)
  if self.role == "double_vote" then
    -- conflicting votes: the real one to half the peers, another to the rest
    for k, to in ipairs(self.names) do
      if to ~= self.name then
        self:send(to, k % 2 == 0 and msg or { kind = "vote", proposer = vote.proposer,
          attempt = vote.attempt, value = csm.value(vote:identity() .. "~", vote:rank(),
            { attempt = vote.attempt }) })
      end
    end
    return self.name
  end
  self:publish(msg)
  return self.name
end

-- Vote keys are "voter@attempt": the voter of each key met lately (the
-- cache starts over when full, as peers choose the attempts).
local voter_of, nvoters = {}, 0

local function voter(key)
  local v = voter_of[key]
  if v == nil then
    if nvoters >= 4096 then voter_of, nvoters = {}, 0 end
    v = key:match("^(.-)@") or key
    voter_of[key] = v
    nvoters = nvoters + 1
  end
  return v
end

-- The identity q distinct nodes voted for, if any.
local function quorum(votes, q)
  local tally, seen = {}, {}
  for key, vote in pairs(votes) do
    local who, id = voter(key), vote:identity()
    -- one vote per voter and identity: a voter's first identity is kept
    -- in seen[who], any other (a double voter's) under a pair key
    local first = seen[who]
    local new = first == nil
    if not new and first ~= id then
      local k = who .. "\0" .. id
      new = not seen[k]
      seen[k] = true
    end
    if first == nil then seen[who] = id end
    if new then
      local c = (tally[id] or 0) + 1
      tally[id] = c
      if c >= q then return id end
    end
  end
end

function Node:is_quorum(votes)
  if quorum(votes, self.q) then return true end
  if self:is_behind() then return nil, "behind" end
  return false
end

function Node:finalize_votes(proposals, votes)
  local id = quorum(votes, self.q)
  if id then
    for _, name in ipairs(self.names) do
      local p = proposals[name]
      if p and p:identity() == id then return p, name end
    end
    -- the chosen proposal was replaced by a later attempt's: it is kept
    -- under "leader@attempt"
    for key, p in pairs(proposals) do
      if p:identity() == id then return p, (key:match("^(.-)@") or key) end
    end
  end
  self.needs_sync = true
  return nil, "the proposal with a quorum is missing"
end

function Node:record(rank, state)
  if self.finalized[rank] then return end
  self.finalized[rank] = state:identity()
  self.finalized_at[rank] = self.world:now()
  self.count = self.count + 1
  keep_recent(self.chain, rank, state)
  if self.on_finalize then self.on_finalize(self, rank, state) end
end

function Node:confirm(finalized)
  self:record(finalized:rank(), finalized)
  self:publish { kind = "confirmation", value = finalized }
  return true
end

-- ---- receiving ----

local function message_rank(msg)
  if msg.rank then return msg.rank end
  if msg.value then return msg.value:rank() end
end

function Node:deliver(from, msg)
  local sm = self.sm
  if sm:closed() or self.role == "silent" then return end
  local kind = msg.kind
  local rank = self:round()
  local r = message_rank(msg)
  if r then
    -- a confirmation of rank r means its sender works on r + 1
    local progress = kind == "confirmation" and r + 1 or r
    if kind ~= "sync_request" and progress > (self.progress[from] or 0) then
      self.progress[from] = progress
    end
  end
  -- a peer still deciding, a re-send later, a rank this node has left may
  -- have lost this node's vote, which nobody re-sends any more: answer with
  -- it (never to an answer, or two nodes past the rank would echo forever)
  local cast = r and r < rank and self.cast[r]
  if cast and (kind == "prevote" or (kind == "vote" and not msg.answer))
    and self.world:now() - (self.finalized_at[r] or -math.huge) >= self.sm:timing("vote_resend") / 2 then
    self:send(from, { kind = "vote", proposer = cast.proposer, attempt = cast.attempt,
                      value = cast.value, answer = true })
  end
  local ok, err = true, nil
  if kind == "liveness" then
    ok, err = sm:receive_liveness_check(from, msg.value)
    local mine = msg.again and sm:get("liveness", msg.value:rank(), self.name)
    if mine then self:send(from, { kind = "liveness", value = mine }) end
  elseif kind == "proposal" then
    local p = msg.value
    local held = sm:get("proposals", p:rank(), from)
    if held and (held.attempt or 0) < (p.attempt or 0) then
      keep_held(sm, p:rank(), from)
      ok, err = sm:store("proposals", p:rank(), from, p)
    end
    if ok then ok, err = sm:receive_proposal(from, p) end
    if p:rank() == rank then self:saw_attempt(from, p.attempt or 0) end
  elseif kind == "prevote" then
    self:note_prevote(from, msg.rank, msg.attempt, msg.id)
    if msg.rank == rank then self:saw_attempt(from, msg.attempt) end
  elseif kind == "vote" then
    ok, err = sm:receive_vote(msg.proposer or from, from .. "@" .. tostring(msg.attempt), msg.value)
    if ok and msg.value:rank() == rank then
      local attempt = msg.attempt or 0
      self:saw_attempt(from, attempt)
      self.voted_in[attempt] = true
      self:note_prevote(from, rank, attempt, msg.value:identity())
      self:note_vote(from, rank, attempt, msg.value:identity())
    end
  elseif kind == "confirmation" then
    ok, err = sm:receive_confirmation(from, msg.value)
  elseif kind == "sync_request" then
    local chain = {}
    for k = msg.rank + 1, msg.rank + 32 do chain[k] = self.chain[k] end
    self:send(from, { kind = "sync_response", chain = chain })
  elseif kind == "sync_response" then
    if self.sync_responses then
      local list = self.sync_responses
      list[#list + 1] = { from = from, chain = msg.chain }
    end
  end
  if not ok then
    self.refused = self.refused + 1
    self.last_refusal = err
    -- by reason, numbers elided: "vote: stale rank N (active rank N)"
    local raw = kind .. ": " .. tostring(err)
    local reason = self.reasons[raw]
    if reason == nil then
      if self.nreasons >= 256 then self.reasons, self.nreasons = {}, 0 end
      reason = raw:gsub("%d+", "N")
      self.reasons[raw] = reason
      self.nreasons = self.nreasons + 1
    end
    self.refusals[reason] = (self.refusals[reason] or 0) + 1
  end
  if self.poke and (kind == "prevote" or kind == "vote" or kind == "proposal") then self.poke() end
end

function Node:saw_attempt(from, attempt)
  if attempt > (self.seen_attempt[from] or -1) then self.seen_attempt[from] = attempt end
end

--- n honest nodes named n001, n002, ... on options.world, joined to
-- options.network (one is made with options.params when absent), each
-- starting from options.initial (default genesis, rank 0). Returns the
-- nodes, not yet started, and the network.
function reference.cluster(options)
  local world = options.world
  local network = options.network or require("csm.net").new(world, options.params or {})
  local names = {}
  for i = 1, options.n do names[i] = string.format("n%03d", i) end
  local nodes = {}
  for i = 1, options.n do
    nodes[i] = reference.node { name = names[i], names = names, world = world, network = network,
      initial = options.initial or csm.value("genesis", 0) }
  end
  return nodes, network
end

--- Whether every node has finalized at least ranks ranks.
function reference.reached(nodes, ranks)
  for _, node in ipairs(nodes) do
    if node.count < ranks then return false end
  end
  return true
end

--- Starts the machine (a silent node never does).
function Node:start()
  if self.role ~= "silent" then self.sm:start() end
end

return reference
