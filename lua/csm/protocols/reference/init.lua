--- The reference protocol: a small BFT protocol on the machine's provider
-- interfaces, for n nodes of which f = floor((n - 1) / 3) may be byzantine,
-- over a network with the lab network's interface (join, publish, send).
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
-- prevotes and votes. A node that sees f + 1 peers ahead of it syncs
-- (csm.protocols.reference.sync). Attempt numbers come from peers: a
-- message for an attempt more than `reference.attempt_slack` past this
-- node's is refused, so what a peer can add to a rank's maps grows only
-- with the time the rank lasts.
--
-- The parts: this file (the node and its providers), `attempts`,
-- `tally` (what a node knows of a rank, and the counts that decide it),
-- `sync`, `receive` (message handling) and `byzantine` (roles that wrap a
-- node to misbehave).
-- @module csm.protocols.reference

local csm = require "csm"
local check = require "csm.check"
local tally = require "csm.protocols.reference.tally"
local sync = require "csm.protocols.reference.sync"
local receive = require "csm.protocols.reference.receive"
local byzantine = require "csm.protocols.reference.byzantine"
local attempts = require "csm.protocols.reference.attempts"

local ipairs, pairs, type, getmetatable = ipairs, pairs, type, getmetatable

local reference = {}
local Node = {}
Node.__index = Node

--- The roles a node can play (see csm.protocols.reference.byzantine).
reference.roles = byzantine.roles

local ATTEMPT_SLACK = attempts.SLACK
--- Attempt numbers more than this past a node's own are refused.
reference.attempt_slack = ATTEMPT_SLACK

-- A node keeps the states it finalized, and its deciding votes, for this
-- many recent ranks: enough to answer the syncs and lost votes of peers a
-- little behind; one further behind skips what nobody keeps.
local KEPT_RANKS = 64

-- Re-sends cover this node's prevotes and votes of the last this many
-- attempts (and of its lock): older ones no longer matter to a peer that
-- has moved on with the others.
local RESEND_ATTEMPTS = 8

-- Defaults, in units of timing.scale: the view timeout (how long an attempt
-- lasts before every node moves on: long enough for a round at the
-- defaults' back-offs) and the longest a sync waits for answers.
local VIEW_TIMEOUT, SYNC_WAIT = 8, 2

--- The largest number of byzantine nodes n tolerates, and the quorum.
function reference.thresholds(n)
  local f = math.floor((n - 1) / 3)
  return f, n - f
end

local OPTIONS = {
  name = true, names = true, world = true, network = true, role = true, initial = true,
  timing = true, view_timeout = true, sync_wait = true, sync = true, on_finalize = true,
  trace = true, restore = true, note = true, lab = true,
}

-- Checks reference.node's options; returns the index of name in names.
local function check_node_options(o)
  local fname = "reference.node"
  check.options(fname, o, OPTIONS)
  local index = check.node_options(fname, o)
  check.one_of(fname, "role", o.role, byzantine.role_names, true)
  if o.initial ~= nil and not csm.is_value(o.initial) then
    check.fail("%s: option 'initial' must be a csm value (got %s)", fname, check.show(o.initial))
  end
  check.type(fname, "timing", o.timing, "table", true)
  if o.timing then check.number(fname, "timing.scale", o.timing.scale, 0, nil, true) end
  check.number(fname, "view_timeout", o.view_timeout, 0, nil, true)
  -- an attempt that lasts no time never lets virtual time move on
  if o.view_timeout == 0 then check.fail("%s: option 'view_timeout' must be > 0 (got 0)", fname) end
  check.number(fname, "sync_wait", o.sync_wait, 0, nil, true)
  check.type(fname, "sync", o.sync, "boolean", true)
  check.type(fname, "on_finalize", o.on_finalize, "function", true)
  check.type(fname, "trace", o.trace, "table", true)
  check.type(fname, "restore", o.restore, "table", true)
  check.type(fname, "note", o.note, "function", true)
  return index
end

--- A node. options: name, names (every node, in order), world, network,
-- role ("honest"), initial (genesis state), timing (for csm.new),
-- view_timeout (virtual seconds, default 8 x timing.scale), sync_wait
-- (the longest a sync waits for peers' answers, default 2 x timing.scale),
-- sync (start with a network sync), on_finalize(node, rank, state), trace
-- (for csm.new), restore (what node:durable() gave before a crash: the node
-- comes back with it), note(kind, fields) (told of each move to a new
-- attempt, "attempt" { rank, attempt }, and each lock, "lock" { rank,
-- attempt, id }: the lab traces them). node.height is the highest rank the node finalized or
-- adopted; node.finalized[rank] and node.finalized_at[rank] are what and
-- when (nil for a rank a sync skipped).
function reference.node(options)
  local index = check_node_options(options)
  local role = options.role or "honest"
  local n = #options.names
  local f, q = reference.thresholds(n)
  local scale = options.timing and options.timing.scale or 1
  local self = setmetatable({
    name = options.name, names = options.names, index = index, n = n, f = f, q = q,
    world = options.world, network = options.network,
    view_timeout = options.view_timeout or VIEW_TIMEOUT * scale,
    sync_wait = options.sync_wait or SYNC_WAIT * scale,
    needs_sync = options.sync == true,
    on_finalize = options.on_finalize, note = options.note, lab = options.lab,
    finalized = {}, finalized_at = {}, chain = {}, progress = {}, deciding_votes = {},
    refused = 0, refusals = {}, refusal_examples = {}, height = 0, rotations = {}, ranks = {},
  }, Node)
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
  if options.restore then self:restore(options.restore) end
  byzantine.wrap(self, role)
  self.endpoint = self.network:join(self.name, function(from, msg) self:deliver(from, msg) end)
  return self
end

--- The protocol's name, for reports and traces.
reference.name = "reference"

--- What two honest copies of a finalized state must agree on: identity,
-- rank, parent, the attempt it was proposed in and its proposer (not the
-- attempt a copy was offered in, which differs between copies).
function reference.digest(state)
  return string.format("%s|%d|%s|%s|%s", state:identity(), state:rank(), tostring(state.parent),
    tostring(state.attempt), tostring(state.proposer))
end

--- What an honest node sends only one of per kind, rank and attempt (the
-- lab's equivocation check): the identity a prevote, vote or proposal is
-- for; nil for the other kinds, which may differ (re-sends, answers).
function reference.content(msg)
  if type(msg) ~= "table" then return nil end
  local kind = msg.kind
  if kind == "prevote" then return msg.id end
  if (kind == "vote" or kind == "proposal") and csm.is_value(msg.value) then return msg.value:identity() end
  return nil
end

--- A message's kind, rank and attempt (nil when it has none), for traces,
-- checkers and adversaries.
function reference.classify(msg)
  if type(msg) ~= "table" then return nil end
  local value = msg.value
  local rank = msg.rank
  if rank == nil and csm.is_value(value) then rank = value:rank() end
  local attempt = msg.attempt
  if attempt == nil and csm.is_value(value) then attempt = value.attempt end
  return msg.kind, rank, attempt
end

-- Sets list[rank] = value and forgets the ranks KEPT_RANKS or more below
-- it: the list is a window of recent ranks (list.low is its first), however
-- ranks were skipped.
local function keep_recent(list, rank, value)
  list[rank] = value
  local low = math.min(list.low or rank, rank)
  local floor = rank - (KEPT_RANKS - 1)
  if floor - low > KEPT_RANKS then
    for r in pairs(list) do
      if r ~= "low" and r < floor then list[r] = nil end
    end
  else
    for r = low, floor - 1 do list[r] = nil end
  end
  list.low = math.max(low, floor)
end

--- A reference node (reference.node): its machine is node.sm, its height
-- node.height, what it finalized node.finalized[rank].
-- @type Node

for name, fn in pairs(attempts.methods) do Node[name] = fn end

--- Counts a coverage point of the protocol (the lab's options.lab.mark:
-- csm sweep reports how often each was reached over its runs).
function Node:mark(name)
  local lab = self.lab
  if lab and lab.mark then lab.mark(name) end
end

--- The identity with a polka in attempt tally t.
function Node:polka_in(t)
  return tally.polka_in(t, self.q, self.f)
end

--- The latest polka this node knows of at the current rank: identity and
-- attempt.
function Node:valid()
  return tally.latest_polka(self.tally, self.attempt, self.q, self.f)
end

--- The rank's decision, if q nodes voted for one identity in one attempt:
-- the identity and the attempt.
function Node:decision()
  return tally.decision(self.tally, self.q)
end

-- ---- sending (a byzantine role replaces these) ----

function Node:publish(msg)
  self.endpoint:publish(msg)
end

function Node:send(to, msg)
  self.endpoint:send(to, msg)
end

function Node:announce_proposal(proposal)
  self:publish { kind = "proposal", value = proposal }
end

function Node:announce_prevote(rank, attempt, id)
  self:publish { kind = "prevote", rank = rank, attempt = attempt, id = id }
end

function Node:announce_vote(msg)
  self:publish(msg)
end

-- ---- providers ----

Node.synchronize = sync.synchronize

function Node:collect()
  return csm.value("live:" .. self.name, self:current_rank())
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

--- A proposal offered in attempt `offered`: identity id at rank, with its
-- parent, the attempt it was first proposed in and its proposer.
function Node.proposal(id, rank, parent, attempt, proposer, offered)
  return csm.value(id, rank, { parent = parent, attempt = attempt, proposer = proposer, offer = offered })
end

local proposal = Node.proposal

function Node:prove(prior, ctx)
  local rank = self:current_rank()
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
  if held then
    self:mark("leader offers a polka again")
    return proposal(id, rank, held.parent, held.attempt, held.proposer, attempt)
  end
  return proposal(string.format("%d.%d:%s", rank, attempt, self.name), rank, prior:identity(), attempt,
    self.name, attempt)
end

function Node:send_proposal(p)
  local attempt = p.offer or 0
  local record = self:record_for(p:rank(), attempt)
  if record then tally.note_offer(record, self.name, attempt, p) end
  self:announce_proposal(p, attempt)
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

-- What this node prevotes in the current attempt: the latest polka it knows
-- of, unless it is locked on an identity by a vote in a later attempt (then
-- that identity); otherwise the highest-priority proposal of the attempt.
-- A locked node prevotes for something else only after a polka later than
-- its lock, which is what keeps two attempts from deciding differently.
function Node:choose(rank)
  local id, at = self:valid()
  local lock = self.lock
  if lock and not (id and at > lock.attempt) then
    self:mark("prevote the lock")
    return lock.id
  end
  if id then
    if lock then self:mark("unlock on a later polka") end
    return id
  end
  local p = self:candidate(rank)
  return p and p:identity()
end

function Node:prevote(rank, id)
  local attempt = self.attempt
  self.prevoted[attempt] = id
  tally.note_prevote(self.ranks[rank], self.name, attempt, id)
  self:announce_prevote(rank, attempt, id)
end

local function proposer_of(id)
  local proposer = id:match("^%d+%.%d+:(.*)$") or id
  return (proposer:gsub("'$", ""))
end

-- Votes for id in the current attempt (it has a polka there) and locks on
-- it; the vote is stored under "name@attempt", as peers' votes are.
function Node:vote_for(rank, id)
  local attempt = self.attempt
  local proposer = proposer_of(id)
  local vote = csm.value(id, rank, { attempt = attempt, proposer = proposer })
  local msg = { kind = "vote", proposer = proposer, attempt = attempt, value = vote }
  self.voted[attempt] = msg
  self.lock = { id = id, attempt = attempt }
  -- it votes on a polka: the lock is what a restart without its state forgets
  if self.note then self.note("lock", { rank = rank, attempt = attempt, id = id }) end
  tally.note_vote(self.ranks[rank], self.name, attempt, id)
  -- a full map (peers filled it) leaves the vote to this node's own tally
  self.sm:store("votes", rank, tally.key(self.name, attempt), vote)
  self:announce_vote(msg)
  return proposer, vote
end

-- Re-sends this node's prevotes and votes of the last attempts and of its
-- lock, and a leader's proposal of the current attempt: a peer that lost
-- them could not see a polka, or the vote that decides.
function Node:resend(rank)
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

-- Suspends until a message arrives (receive calls node.wake_pause) or
-- seconds pass.
function Node:pause(ctx, seconds)
  return ctx:await(function(resolve)
    local timer = self.world:after(seconds, function() resolve("timeout") end)
    self.wake_pause = function()
      self.wake_pause = nil
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
  local rank = self:current_rank()
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
    if id then return self:vote_for(rank, id) end
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
  self:resend(self:current_rank())
  return self.name
end

function Node:is_quorum(votes)
  self:current_rank()
  if tally.quorum(votes, self.q) or self:decision() then return true end
  if self:is_behind() then return nil, "behind" end
  -- a node that voted moves on too; its lock keeps it on what it voted for
  local moved = self:advance()
  if moved then return nil, moved end
  return false
end

function Node:finalize_votes(proposals, votes)
  self:current_rank()
  local id, at = tally.quorum(votes, self.q)
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

--- What the node has written down, and so keeps through a crash: what it
-- finalized, when, and the votes that decided (it answers syncs and lost
-- votes with them), and its active state. Its current rank's prevotes, lock
-- and attempt are not among them.
function Node:durable()
  return { finalized = self.finalized, finalized_at = self.finalized_at, height = self.height,
           chain = self.chain, deciding_votes = self.deciding_votes, active = self.sm:active_state() }
end

--- Takes back what durable() gave.
function Node:restore(d)
  self.finalized, self.finalized_at, self.height = d.finalized, d.finalized_at, d.height
  self.chain, self.deciding_votes = d.chain, d.deciding_votes
  if d.active then self.sm:set_active_state(d.active) end
end

--- Records state as finalized (or adopted) at rank, once.
function Node:record(rank, state)
  if self.finalized[rank] then return end
  self.finalized[rank] = state:identity()
  self.finalized_at[rank] = self.world:now()
  if rank > self.height then self.height = rank end
  keep_recent(self.chain, rank, state)
  if self.on_finalize then self.on_finalize(self, rank, state) end
end

function Node:confirm(finalized)
  local rank = finalized:rank()
  -- this node's vote in the deciding attempt answers peers that lost it
  local decided = self.decided
  local mine = decided and rank == self.rank and self.voted[decided.attempt]
  if mine and mine.value:identity() == finalized:identity() then
    keep_recent(self.deciding_votes, rank, mine)
  end
  self:record(rank, finalized)
  self:publish { kind = "confirmation", value = finalized }
  return true
end

-- ---- receiving ----

--- Handles a message from a peer (csm.protocols.reference.receive).
Node.deliver = receive.deliver

--- Starts the machine.
function Node:start()
  if getmetatable(self) ~= Node then check.selferror("node:start", "reference node expected", self) end
  self.sm:start()
end

return reference
