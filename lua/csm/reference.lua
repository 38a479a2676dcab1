--- Reference providers: a small BFT protocol on the seed's interfaces, for
-- n nodes of which f = floor((n - 1) / 3) may be byzantine, on a csm.net
-- network.
--
-- A rank may take several attempts (Tendermint's rounds). In attempt a of
-- rank R the leaders are every node, rotated by R + a; the top leader
-- proves at once, the i-th after a back-off. Each node prevotes once per
-- attempt; once q = n - f nodes prevoted one proposal in an attempt (a
-- polka) a node votes for it there (the machine's vote, identity = the
-- proposal voted for) and is locked on it. Quorum is q votes for one
-- identity in one attempt; that proposal is finalized and confirmed.
-- Every node, voted or not, moves to the next attempt after `view_timeout`,
-- or when f + 1 peers are already there. In a new attempt a node prevotes
-- the latest polka it knows of, unless it is locked on something by a vote
-- in a later attempt (then its lock), and otherwise the highest-priority
-- proposal; a leader that knows a polka offers that proposal again. So once
-- q nodes voted for a proposal in an attempt, at least f + 1 honest nodes
-- are locked on it and no later attempt has a polka, or a quorum, for
-- anything else; and a vote split across attempts by lost messages or a
-- partition resolves as the polkas become known. Nodes re-send their recent
-- prevotes and votes. A node that sees f + 1 peers ahead of it syncs: it
-- adopts, rank by rank, the states f + 1 peers report as finalized,
-- skipping the ranks its peers no longer keep (they keep 64).
-- Attempt numbers come from peers: a message for an attempt more than
-- `reference.attempt_slack` past this node's is refused, so what a peer can
-- add to a rank's maps grows only with the time the rank lasts.
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
-- (the longest a sync waits for peers' answers, default 2 x timing.scale),
-- sync (start with a network sync), on_finalize(node, rank, state), trace
-- (for csm.new). node.count is the highest rank the node finalized or
-- adopted; node.finalized[rank] and node.finalized_at[rank] are what and when
-- (nil for a rank a sync skipped).
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
    sync_wait = options.sync_wait or 2 * scale,
    needs_sync = options.sync == true,
    on_finalize = options.on_finalize,
    finalized = {}, finalized_at = {}, chain = {}, progress = {}, cast = {},
    refused = 0, refusals = {}, count = 0, rotations = {}, reasons = {}, nreasons = 0, ranks = {},
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

-- ---- ranks and attempts ----

-- What a node knows of one rank: per attempt, who prevoted and voted what
-- (tally), its own prevotes and votes, the proposals offered, and how far
-- each peer has got.
local function rank_record()
  return { tally = {}, prevoted = {}, voted = {}, offers = {}, seen = {} }
end

--- The rank being decided; starts its first attempt when it changed. What
-- arrived early for it (the next rank is recorded too) is kept.
function Node:round()
  local active = self.sm:active_state()
  local rank = active and active:rank() + 1 or 1
  if self.rank ~= rank then
    local ranks = self.ranks
    local record = ranks[rank] or rank_record()
    self.ranks = { [rank] = record, [rank + 1] = ranks[rank + 1] }
    self.rank = rank
    self.attempt = 0
    self.attempt_start = self.world:now()
    self.tally, self.prevoted, self.voted = record.tally, record.prevoted, record.voted
    self.offers, self.seen_attempt = record.offers, record.seen
    self.lock = nil        -- { id =, attempt = } of this node's latest vote at this rank
  end
  return rank
end

function Node:move_to(attempt)
  self.attempt = attempt
  self.attempt_start = self.world:now()
end

-- The record of rank if a message about attempt of it is taken: the rank
-- being decided or the next, and an attempt at most ATTEMPT_SLACK past this
-- node's (0 for the next rank). Peers choose attempt numbers: the bound
-- keeps what one peer can add to a rank's maps proportional to how long
-- the rank has lasted. Otherwise nil and why; no reason for a rank already
-- decided, which the machine refuses itself.
local ATTEMPT_SLACK = 16
reference.attempt_slack = ATTEMPT_SLACK

function Node:record_for(rank, attempt)
  if type(rank) ~= "number" then return nil end
  local base
  if rank == self.rank then
    base = self.attempt
  elseif rank == self.rank + 1 then
    base = 0
  elseif rank > self.rank then
    return nil, "rank beyond the next"
  else
    return nil
  end
  if type(attempt) ~= "number" or attempt < 0 or attempt % 1 ~= 0 or attempt > base + ATTEMPT_SLACK then
    return nil, "attempt out of range"
  end
  local record = self.ranks[rank]
  if record == nil then
    record = rank_record()
    self.ranks[rank] = record
  end
  return record
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

-- Moves to the next attempt when this one's view_timeout has passed, or to
-- the one f + 1 peers have reached; returns why, or nil.
function Node:advance()
  local target = self:jump_target()
  if target or self.world:now() >= self.attempt_start + self.view_timeout then
    self:move_to(target or self.attempt + 1)
    return "attempt " .. self.attempt
  end
end

-- "name@attempt", the key of name's vote in attempt (cached for small
-- attempts: one string per message otherwise).
local at_keys = {}

local function at_key(name, attempt)
  if attempt > 64 then return name .. "@" .. attempt end
  local keys = at_keys[name]
  if keys == nil then
    keys = {}
    at_keys[name] = keys
  end
  local key = keys[attempt]
  if key == nil then
    key = name .. "@" .. attempt
    keys[attempt] = key
  end
  return key
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
  -- until every peer answered, or sync_wait passed
  local deadline = self.world:now() + self.sync_wait
  while #responses < self.n - 1 do
    local left = deadline - self.world:now()
    if left <= 0 then break end
    if self:pause(ctx, left) == nil then
      self.sync_responses = nil
      return nil, "canceled"
    end
  end
  self.sync_responses = nil
  -- adopt, in order, every rank above base whose state f + 1 peers agree was
  -- finalized: peers answer from the oldest rank they still keep, so ranks
  -- they all forgot are skipped
  local ranks, listed = {}, {}
  for _, r in ipairs(responses) do
    for rank in pairs(r.chain) do
      if type(rank) == "number" and rank > base and not listed[rank] then
        listed[rank] = true
        ranks[#ranks + 1] = rank
      end
    end
  end
  table.sort(ranks)
  local adopted = nil
  for _, rank in ipairs(ranks) do
    local tally, chosen = {}, nil
    for _, r in ipairs(responses) do
      local state = r.chain[rank]
      if csm.is_value(state) and state:rank() == rank then
        local id = state:identity()
        tally[id] = (tally[id] or 0) + 1
        if tally[id] == self.f + 1 then chosen = state end
      end
    end
    if chosen then
      adopted = chosen
      self:record(rank, chosen)
    end
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

-- The proposal of identity id held at the current rank, if any: the
-- earliest offer, by leader order (copies differ in their offer attempt).
function Node:held(id)
  local offers = self.offers
  for attempt = 0, self.attempt + ATTEMPT_SLACK do
    local by = offers[attempt]
    if by then
      for _, name in ipairs(self.names) do
        local p = by[name]
        if p and p:identity() == id then return p end
      end
    end
  end
end

-- A proposal offered in attempt: the value, with offer = attempt.
local function offer(id, rank, parent, attempt, proposer, offered)
  return csm.value(id, rank, { parent = parent, attempt = attempt, proposer = proposer, offer = offered })
end

function Node:prove(prior, ctx)
  local rank = self:round()
  local attempt = self.attempt
  local leaders = self:leaders(rank)
  for i, name in ipairs(leaders) do
    if name == self.name and i > 1 then
      -- back off so that a live higher-priority leader's proposal wins
      local poll, grace = self.sm:timing("proving_poll"), self.sm:timing("proving_grace")
      if not ctx:sleep(poll * (grace + i)) then return nil, "canceled" end
      if self.attempt ~= attempt then return nil, "attempt changed" end
    end
  end
  -- a leader that knows a polka offers its proposal again: nodes locked on
  -- it prevote nothing else until they learn of a later polka
  local id = self:valid()
  local held = id and self:held(id)
  if held then return offer(id, rank, held.parent, held.attempt, held.proposer, attempt) end
  return offer(string.format("%d.%d:%s", rank, attempt, self.name), rank, prior:identity(), attempt,
    self.name, attempt)
end

-- Records proposal p that peer offered in attempt of record.
local function note_offer(record, peer, attempt, p)
  local by = record.offers[attempt]
  if by == nil then
    by = {}
    record.offers[attempt] = by
  end
  by[peer] = p
end

function Node:send_proposal(proposal)
  local attempt = proposal.offer or 0
  local record = self:record_for(proposal:rank(), attempt)
  if record then note_offer(record, self.name, attempt, proposal) end
  if self.role == "equivocate" then
    -- a different proposal to every other peer
    local k = 0
    for _, to in ipairs(self.names) do
      if to ~= self.name then
        k = k + 1
        local variant = proposal
        if k % 2 == 0 then
          variant = offer(proposal:identity() .. "'", proposal:rank(), proposal.parent, proposal.attempt,
            self.name, attempt)
        end
        self:send(to, { kind = "proposal", value = variant })
      end
    end
    return true
  end
  self:publish { kind = "proposal", value = proposal }
  return true
end

-- The highest-priority proposal offered in the current attempt.
function Node:candidate(rank)
  local by = self.offers[self.attempt]
  if by == nil then return nil end
  for _, leader in ipairs(self:leaders(rank)) do
    local p = by[leader]
    if p then return p end
  end
end

-- The identity with a polka in attempt tally t: q prevotes, or f + 1 votes
-- (one of them honest, and an honest node votes only on a polka).
function Node:polka_in(t)
  if t == nil then return nil end
  for id, c in pairs(t.count) do
    if c >= self.q then return id end
  end
  for id, c in pairs(t.votes) do
    if c > self.f then return id end
  end
end

--- The latest polka this node knows of at the current rank: identity and
-- attempt.
function Node:valid()
  local best, at = nil, -1
  for attempt, t in pairs(self.tally) do
    if attempt > at and attempt <= self.attempt then
      local id = self:polka_in(t)
      if id then best, at = id, attempt end
    end
  end
  return best, best and at
end

--- The identity q nodes voted for in one attempt of the current rank, and
-- that attempt: the rank's decision.
function Node:decision()
  for attempt, t in pairs(self.tally) do
    for id, c in pairs(t.votes) do
      if c >= self.q then return id, attempt end
    end
  end
end

local function attempt_tally(record, attempt)
  local t = record.tally[attempt]
  if t == nil then
    t = { by = {}, count = {}, voted = {}, votes = {} }
    record.tally[attempt] = t
  end
  return t
end

-- Counts id in count once per voter (by: what each voter counted for).
local function count_once(by, count, voter, id)
  if by[voter] then return end
  by[voter] = id
  count[id] = (count[id] or 0) + 1
end

-- Counts voter's prevote for id in attempt; one per voter and attempt.
local function note_prevote(record, voter, attempt, id)
  local t = attempt_tally(record, attempt)
  count_once(t.by, t.count, voter, id)
end

-- Counts voter's vote for id in attempt, and as its prevote there (a vote
-- only follows a polka for id); one of each per voter and attempt.
local function note_vote(record, voter, attempt, id)
  local t = attempt_tally(record, attempt)
  count_once(t.voted, t.votes, voter, id)
  count_once(t.by, t.count, voter, id)
end

local function saw(record, from, attempt)
  if attempt > (record.seen[from] or -1) then record.seen[from] = attempt end
end

-- What this node prevotes in the current attempt: the latest polka it knows
-- of, unless it is locked on an identity by a vote in a later attempt (then
-- that identity); otherwise the highest-priority proposal of the attempt.
-- A locked node prevotes for something else only after a polka later than
-- its lock, which is what keeps two attempts from deciding differently.
function Node:choose(rank)
  local id, at = self:valid()
  local lock = self.lock
  if lock and not (id and at > lock.attempt) then return lock.id end
  if id then return id end
  local p = self:candidate(rank)
  return p and p:identity()
end

function Node:prevote(rank, id)
  local attempt = self.attempt
  local record = self.ranks[rank]
  self.prevoted[attempt] = id
  note_prevote(record, self.name, attempt, id)
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

local function proposer_of(id)
  local proposer = id:match("^%d+%.%d+:(.*)$") or id
  return (proposer:gsub("'$", ""))
end

-- Votes for id in the current attempt (it has a polka there) and locks on
-- it; the vote is stored under "name@attempt", as peers' votes are.
function Node:cast_vote(rank, id)
  local attempt = self.attempt
  local proposer = proposer_of(id)
  local vote = csm.value(id, rank, { attempt = attempt, proposer = proposer })
  local msg = { kind = "vote", proposer = proposer, attempt = attempt, value = vote }
  self.voted[attempt] = msg
  self.lock = { id = id, attempt = attempt }
  local record = self.ranks[rank]
  note_vote(record, self.name, attempt, id)
  -- a full map (peers filled it) leaves the vote to this node's own tally
  self.sm:store("votes", rank, at_key(self.name, attempt), vote)
  if self.role == "double_vote" then
    -- conflicting votes: the real one to half the peers, another to the
    -- rest, then a second vote to everyone
    for k, to in ipairs(self.names) do
      if to ~= self.name then
        self:send(to, k % 2 == 0 and msg or { kind = "vote", proposer = proposer, attempt = attempt,
          value = csm.value(id .. "~", rank, { attempt = attempt }) })
      end
    end
    self:publish { kind = "vote", proposer = proposer, attempt = attempt,
                   value = csm.value(id .. "*", rank, { attempt = attempt }) }
  else
    self:publish(msg)
  end
  return proposer, vote
end

-- Re-sends this node's prevotes and votes of the last attempts and of its
-- lock, and a leader's proposal of the current attempt: a peer that lost
-- them could not see a polka, or the vote that decides.
local RESEND_ATTEMPTS = 8

function Node:resend(rank)
  if self.role == "silent" then return end
  local low = self.attempt - RESEND_ATTEMPTS
  local lock = self.lock and self.lock.attempt
  for attempt, id in pairs(self.prevoted) do
    if attempt >= low or attempt == lock then
      self:publish { kind = "prevote", rank = rank, attempt = attempt, id = id }
    end
  end
  for attempt, msg in pairs(self.voted) do
    if attempt >= low or attempt == lock then self:publish(msg) end
  end
  local by = self.offers[self.attempt]
  local own = by and by[self.name]
  if own and self.prevoted[self.attempt] == own:identity() then self:send_proposal(own) end
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

-- Attempt by attempt (Tendermint's rounds): prevote, vote once q nodes
-- prevoted one proposal in the attempt, or move on after view_timeout.
-- Returns this node's vote; if the rank is already decided, a vote for the
-- decision that is not sent (this node may have no polka to vote on).
function Node:decide(ctx)
  local rank = self:round()
  local resend = self.sm:timing("vote_resend")
  local next_resend = self.world:now() + resend
  while true do
    local decided, at = self:decision()
    if decided then
      local mine = self.voted[at]
      if mine and mine.value:identity() == decided then return mine.proposer, mine.value end
      local proposer = proposer_of(decided)
      return proposer, csm.value(decided, rank, { attempt = at, proposer = proposer })
    end
    local mine = self.voted[self.attempt]
    if mine then return mine.proposer, mine.value end
    local id = self:polka_in(self.tally[self.attempt])
    if id then return self:cast_vote(rank, id) end
    if self:is_behind() then return nil, "behind" end
    local moved = self:advance()
    if moved then return nil, moved end
    if not self.prevoted[self.attempt] then
      local choice = self:choose(rank)
      if choice then self:prevote(rank, choice) end
    end
    local now = self.world:now()
    if now >= next_resend then
      next_resend = now + resend
      self:resend(rank)
    end
    -- a deadline that has passed is handled above, so the wait is never 0
    local deadline = self.attempt_start + self.view_timeout
    local wake = next_resend
    if deadline > now and deadline < wake then wake = deadline end
    local why = self:pause(ctx, wake - now)
    if why == nil then return nil, "canceled" end
  end
end

function Node:send_vote()
  self:resend(self:round())
  return self.name
end

-- Vote keys are "voter@attempt" (the machine keeps its own vote under the
-- node's name too; that copy is not counted): the attempt of each key met
-- lately (the cache starts over when full, as peers choose the attempts).
local attempt_of, nkeys = {}, 0

local function key_attempt(key)
  local a = attempt_of[key]
  if a == nil then
    if nkeys >= 4096 then attempt_of, nkeys = {}, 0 end
    a = key:match("@(%d+)$") or false
    attempt_of[key] = a
    nkeys = nkeys + 1
  end
  return a
end

-- The identity q voters voted for in one attempt, if any, and the attempt.
-- A voter has one key per attempt, and the machine refuses a second,
-- different vote under a key.
local function quorum(votes, q)
  local tally = {}
  for key, vote in pairs(votes) do
    local a = key_attempt(key)
    if a then
      local t = tally[a]
      if t == nil then
        t = {}
        tally[a] = t
      end
      local id = vote:identity()
      local c = (t[id] or 0) + 1
      t[id] = c
      if c >= q then return id, tonumber(a) end
    end
  end
end

function Node:is_quorum(votes)
  self:round()
  if quorum(votes, self.q) or self:decision() then return true end
  if self:is_behind() then return nil, "behind" end
  -- a node that voted moves on too; its lock keeps it on what it voted for
  local moved = self:advance()
  if moved then return nil, moved end
  return false
end

function Node:finalize_votes(proposals, votes)
  self:round()
  local id, at = quorum(votes, self.q)
  if id == nil then id, at = self:decision() end
  if id then
    self.decided = { id = id, attempt = at }
    for _, name in ipairs(self.names) do
      local p = proposals[name]
      if p and p:identity() == id then return p, name end
    end
    -- the machine keeps a peer's first proposal of a rank; later attempts'
    -- are in this node's offers
    local held = self:held(id)
    if held then return held, held.proposer end
  end
  self.needs_sync = true
  return nil, "the proposal with a quorum is missing"
end

function Node:record(rank, state)
  if self.finalized[rank] then return end
  self.finalized[rank] = state:identity()
  self.finalized_at[rank] = self.world:now()
  if rank > self.count then self.count = rank end
  keep_recent(self.chain, rank, state)
  if self.on_finalize then self.on_finalize(self, rank, state) end
end

function Node:confirm(finalized)
  local rank = finalized:rank()
  -- this node's vote in the deciding attempt answers peers that lost it
  local decided = self.decided
  local mine = decided and rank == self.rank and self.voted[decided.attempt]
  if mine and mine.value:identity() == finalized:identity() then keep_recent(self.cast, rank, mine) end
  self:record(rank, finalized)
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
    local attempt = p.offer or 0
    local record, why = self:record_for(r, attempt)
    if why then
      ok, err = nil, why
    else
      ok, err = sm:receive_proposal(from, p)
      if ok and record then
        note_offer(record, from, attempt, p)
        saw(record, from, attempt)
      end
    end
  elseif kind == "prevote" then
    local record = type(msg.id) == "string" and self:record_for(r, msg.attempt)
    if record then
      note_prevote(record, from, msg.attempt, msg.id)
      saw(record, from, msg.attempt)
    end
  elseif kind == "vote" then
    local attempt = msg.attempt
    local record, why = self:record_for(r, attempt)
    if why then
      ok, err = nil, why
    else
      local key = record and at_key(from, attempt) or from .. "@" .. tostring(attempt)
      ok, err = sm:receive_vote(msg.proposer or from, key, msg.value)
      if ok and record then
        local id = msg.value:identity()
        saw(record, from, attempt)
        note_vote(record, from, attempt, id)
      end
    end
  elseif kind == "confirmation" then
    ok, err = sm:receive_confirmation(from, msg.value)
  elseif kind == "sync_request" then
    if type(msg.rank) == "number" then
      -- 32 ranks from the one asked for, or from the oldest still kept
      local first = math.max(msg.rank + 1, self.chain.low or 0)
      local chain = {}
      for k = first, first + 31 do chain[k] = self.chain[k] end
      self:send(from, { kind = "sync_response", chain = chain })
    end
  elseif kind == "sync_response" then
    local list = self.sync_responses
    if list and type(msg.chain) == "table" then
      list[#list + 1] = { from = from, chain = msg.chain }
      if self.poke then self.poke() end
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
