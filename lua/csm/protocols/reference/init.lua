--- The reference protocol: a small BFT protocol on the machine's provider
-- interfaces, for n nodes of which f = floor((n - 1) / 3) may be byzantine,
-- over a network with the lab network's interface (join, publish, send), a
-- signer (sign, verify) and a store (append, sync, records, rewrite).
--
-- A rank may take several attempts (Tendermint's rounds). In attempt a of
-- rank R the leaders are every node, rotated by R + a; the top leader
-- proves at once, the i-th after a back-off that fits in the attempt's
-- first half. A proposal's identity names its rank, attempt and proposer
-- (and its data's hash), and its parent must be the state the node
-- finalized at R - 1. Each node prevotes once per attempt (nothing, when
-- no proposal came in the attempt's first half); once q = n - f nodes
-- prevoted one proposal in an attempt (a polka) a node votes for it there
-- (the machine's vote, identity = the proposal voted for) and is locked on
-- it. Quorum is q signed votes for one identity and parent in one attempt:
-- that proposal is finalized, and its certificate (the q signed votes)
-- travels with it, so one honest answer is enough to catch up and no
-- forged one is taken.
--
-- A node leaves an attempt when f + 1 peers are in a later one, or when
-- the attempt's view timeout, which grows with the attempt, has passed
-- since q nodes were first seen there: a node ahead of the others waits
-- for them, so attempts converge, and after the network settles they grow
-- long enough to decide. In a new attempt a node prevotes the latest polka
-- it knows of, unless it is locked on something by a vote in a later
-- attempt (then its lock), and otherwise the highest-priority proposal; a
-- leader that knows a polka offers that proposal again. So once q nodes
-- voted for a proposal in an attempt, at least f + 1 honest nodes are
-- locked on it and no later attempt has a polka, or a quorum, for
-- anything else.
--
-- What the node must not forget — its proposals, prevotes and votes, its
-- attempts and what it finalized — is written to its store, and synced,
-- before the message it guards leaves; a restarted node recovers it, and
-- re-sends a slot exactly as stored. A node restarted with an empty store
-- (its disk lost) abstains in the ranks that were in progress.
--
-- The parts: this file (the node and its providers), `attempts`,
-- `tally` (what a node knows of a rank, and the counts that decide it),
-- `messages` (the kinds, their signatures and their checks), `records`
-- (what goes to the store), `sync`, `receive` (message handling) and
-- `byzantine` (roles that wrap a node to misbehave).
-- @module csm.protocols.reference

local csm = require "csm"
local check = require "csm.check"
local tally = require "csm.protocols.reference.tally"
local sync = require "csm.protocols.reference.sync"
local receive = require "csm.protocols.reference.receive"
local byzantine = require "csm.protocols.reference.byzantine"
local attempts = require "csm.protocols.reference.attempts"
local messages = require "csm.protocols.reference.messages"
local records = require "csm.protocols.reference.records"

local ipairs, pairs, type, getmetatable = ipairs, pairs, type, getmetatable
local encode = records.encode

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

-- A node rewrites its store (keeping what it still needs) once this many
-- records were appended since the last rewrite.
local COMPACT_AFTER = 512

-- Re-sends cover this node's prevotes and votes of the last this many
-- attempts (and of its lock): older ones no longer matter to a peer that
-- has moved on with the others.
local RESEND_ATTEMPTS = 8

-- Defaults, in units of timing.scale: the view timeout (how long attempt 0
-- lasts once q nodes are in it; attempt a lasts 1 + a times as long) and
-- the longest a sync waits for answers.
local VIEW_TIMEOUT, SYNC_WAIT = 8, 2

--- The largest number of byzantine nodes n tolerates, and the quorum.
function reference.thresholds(n)
  local f = math.floor((n - 1) / 3)
  return f, n - f
end

local OPTIONS = {
  name = true, names = true, world = true, network = true, role = true, initial = true,
  timing = true, view_timeout = true, sync_wait = true, sync = true, on_finalize = true,
  trace = true, note = true, lab = true, signer = true, store = true,
}

-- A store that keeps nothing, for a node given none: every sync completes
-- at once.
local function no_store()
  return {
    append = function() end, sync = function(_, done) done(true) end,
    records = function() return {} end, rewrite = function(_, _, done) if done then done(true) end end,
    writes = function() return 0 end,
  }
end

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
  check.type(fname, "note", o.note, "function", true)
  local signer = o.signer
  if type(signer) ~= "table" or type(signer.sign) ~= "function" or type(signer.verify) ~= "function" then
    check.fail("%s: option 'signer' must be a signer (sign and verify; got %s)", fname, check.show(signer))
  end
  local store = o.store
  if store ~= nil and (type(store) ~= "table" or type(store.append) ~= "function"
    or type(store.sync) ~= "function" or type(store.records) ~= "function") then
    check.fail("%s: option 'store' must be a store (append, sync, records, rewrite; got %s)", fname,
      check.show(store))
  end
  return index
end

--- A node. options: name, names (every node, in order), world, network,
-- signer (this node's: sign(bytes) as itself, verify(peer, bytes, sig)),
-- store (what the node writes down; it recovers what the store holds, and
-- keeps nothing through a crash without one), role ("honest"), initial
-- (genesis state), timing (for csm.new), view_timeout (virtual seconds,
-- default 8 x timing.scale), sync_wait (the longest a sync waits for
-- peers' answers, default 2 x timing.scale), sync (start with a network
-- sync: a restart; with an empty store, the node abstains in the ranks in
-- progress), on_finalize(node, rank, state), trace (for csm.new),
-- note(kind, fields) (told of each move to a new attempt, "attempt" {
-- rank, attempt }, each lock, "lock" { rank, attempt, id }, and each
-- piece of evidence, "evidence" { voter, kind, rank, attempt, ids }: the
-- lab traces them). node.height is the highest rank the node finalized or
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
    signer = options.signer, store = options.store or no_store(), member = {},
    finalized = {}, finalized_at = {}, certs = {}, ahead = {}, progress = {}, answered = {},
    refused = 0, refusals = {}, refusal_examples = {}, height = 0, rotations = {}, ranks = {},
    slot_bytes = {}, compacted_at = 0, evidence = 0,
  }, Node)
  for _, name in ipairs(self.names) do self.member[name] = true end
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
  self:recover(options.sync == true)
  byzantine.wrap(self, role)
  self.endpoint = self.network:join(self.name, function(from, msg) self:deliver(from, msg) end)
  return self
end

--- The protocol's name, for reports and traces.
reference.name = "reference"

--- What the lab gives each node beyond the common options: a signer and a
-- store.
reference.needs = { signer = true, store = true }

--- msg signed by signer (proposals, prevotes and votes): what an adversary
-- speaking for a node it controls sends.
function reference.seal(msg, signer)
  return messages.seal(msg, signer)
end

--- A well-formed proposal of rank, first proposed in attempt by proposer
-- on parent, offered in attempt offered, carrying data (a string, or nil).
function reference.proposal(rank, attempt, proposer, parent, offered, data)
  return csm.value(messages.proposal_id(rank, attempt, proposer, data), rank,
    { parent = parent, attempt = attempt, proposer = proposer, offer = offered or attempt, data = data })
end

--- What two honest copies of a finalized state must agree on: identity,
-- rank, parent, the attempt it was proposed in and its proposer (not the
-- attempt a copy was offered in, which differs between copies).
function reference.digest(state)
  local data = state.data
  return string.format("%s|%d|%s|%s|%s%s", state:identity(), state:rank(), tostring(state.parent),
    tostring(state.attempt), tostring(state.proposer), data and "|" .. data or "")
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
reference.classify = messages.classify

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

--- The identity of the state this node builds on: its active state's.
function Node:head()
  local active = self.sm:active_state()
  return active and active:identity() or "genesis"
end

--- Whether this node sits out the rank it decides: one restarted with an
-- empty store may have voted there before it lost its disk.
function Node:abstaining()
  return self.abstain_through ~= nil and self.rank <= self.abstain_through
end

-- ---- sending (a byzantine role replaces these) ----

function Node:publish(msg)
  self.endpoint:publish(msg)
end

function Node:send(to, msg)
  self.endpoint:send(to, msg)
end

--- msg signed by this node.
function Node:seal(msg)
  return messages.seal(msg, self.signer)
end

function Node:announce_proposal(_, _, msg)
  self:publish(msg)
end

function Node:announce_prevote(_, _, _, msg)
  self:publish(msg)
end

function Node:announce_vote(msg)
  self:publish(msg)
end

-- ---- the store ----

--- Writes a record of fields to the store and calls send once it is
-- durable: what the record guards leaves only then. A failed sync stops
-- the node (a sync is never retried: the record's fate is unknown).
function Node:guarded(fields, send)
  -- a slot older than the highest this rank has written is never written
  -- (or sent): after a restart the node resumes at the highest
  local record, attempt = self.ranks[fields[2]], fields[3]
  if record then
    if attempt < (record.written or 0) then return end
    record.written = attempt
  end
  self:write(fields)
  self:flush(send)
end

--- Writes a record that guards nothing (it is made durable by the next
-- sync).
function Node:write(fields)
  local bytes = encode(fields)
  local slot = self.slot_bytes
  slot[#slot + 1] = bytes
  self.store:append(bytes)
end

--- Syncs the store, then calls after (when given); a failed sync stops
-- the node instead.
function Node:flush(after)
  self.store:sync(function(ok, err)
    if not ok then return self:storage_failed(err) end
    if after then after() end
  end)
end

--- Stops the node after its store failed.
function Node:storage_failed(err)
  self.storage_error = tostring(err)
  if self.note then self.note("storage", { error = self.storage_error }) end
  self.sm:close()
end

-- Rewrites the store when it has grown: what was finalized in the kept
-- ranks and what was written at the rank being decided.
function Node:compact()
  local store = self.store
  local writes = store:writes()
  if writes - self.compacted_at < COMPACT_AFTER or type(store.rewrite) ~= "function" then return end
  self.compacted_at = writes
  local list = {}
  for r = self.certs.low or self.height, self.height do
    local entry = self.certs[r]
    if entry then list[#list + 1] = entry.bytes end
  end
  for _, bytes in ipairs(self.slot_bytes) do list[#list + 1] = bytes end
  store:rewrite(list)
end

-- The record of a finalized state and its certificate.
local function finalized_fields(state, cert)
  local fields = { "F", state:rank(), state:identity(), state.parent, state.attempt, state.offer,
                   cert.attempt, state.data or "" }
  local voters = {}
  for voter in pairs(cert.sigs) do voters[#voters + 1] = voter end
  table.sort(voters)
  for _, voter in ipairs(voters) do
    fields[#fields + 1] = voter
    fields[#fields + 1] = cert.sigs[voter]
  end
  return fields
end

-- The state and certificate of a finalized record's fields.
local function finalized_of(f)
  local rank, attempt, offer, at = records.int(f[2]), records.int(f[5]), records.int(f[6]), records.int(f[7])
  if not (rank and attempt and offer and at and f[3] and f[4]) then return nil end
  local _, _, proposer = messages.parse_id(f[3])
  local data = f[8] ~= "" and f[8] or nil
  local state = csm.value(f[3], rank, { parent = f[4], attempt = attempt, proposer = proposer, offer = offer,
                                       data = data })
  local sigs = {}
  for k = 9, #f - 1, 2 do sigs[f[k]] = f[k + 1] end
  return state, { attempt = at, sigs = sigs }
end

-- What each slot record is, as the lab's classify names messages.
local SLOT_KINDS = { V = "prevote", W = "vote", P = "proposal" }

--- Takes back what the store holds: the finalized states (the highest
-- becomes the active state) and, at the rank after, this node's
-- proposals, prevotes, votes and attempts, re-sent exactly as stored. A
-- node told it restarts (restarted) with an empty store abstains in the
-- ranks in progress once its first sync tells it which they are.
function Node:recover(restarted)
  local list = self.store:records()
  if #list == 0 then
    -- a restart on an empty store: its disk was lost (a new store starts
    -- with a header, so a crash before any other write is told apart)
    if restarted then self.amnesia = true end
    self.store:append(encode { "H", self.name })
    self:flush()
    return
  end
  local top, slots = nil, {}
  for _, bytes in ipairs(list) do
    local f = records.decode(bytes)
    if f then
      local kind = f[1]
      if kind == "F" then
        local state, cert = finalized_of(f)
        if state then
          local rank = state:rank()
          self.finalized[rank] = state:identity()
          self.finalized_at[rank] = self.world:now()
          if rank > self.height then self.height, top = rank, state end
          keep_recent(self.certs, rank, { value = state, cert = cert, bytes = bytes })
        end
      else
        slots[#slots + 1] = { f, bytes }
      end
    end
  end
  if top then self.sm:set_active_state(top) end
  local rank = self:current_rank()
  local record = self.ranks[rank]
  local top_attempt = 0
  local read = {}
  for _, slot in ipairs(slots) do
    local f = slot[1]
    local r, a = records.int(f[2]), records.int(f[3])
    if r == rank and a then
      local kind = f[1]
      if SLOT_KINDS[kind] then read[#read + 1] = { SLOT_KINDS[kind], r, a, f[4] } end
      self.slot_bytes[#self.slot_bytes + 1] = slot[2]
      if kind == "V" then
        -- f: V rank attempt id sig
        record.prevoted[a] = f[4]
        record.sent[a] = { kind = "prevote", rank = r, attempt = a, id = f[4], sig = f[5] }
        tally.note_prevote(record, self.name, a, f[4])
      elseif kind == "W" then
        -- f: W rank attempt id parent sig
        local msg = { kind = "vote", value = messages.vote(f[4], r, a, f[5]), sig = f[6] }
        record.voted[a] = msg
        tally.note_vote(record, self.name, a, f[4], f[6], f[5])
        if self.lock == nil or a > self.lock.attempt then self.lock = { id = f[4], attempt = a } end
      elseif kind == "P" then
        -- f: P rank offer id parent data sig; a is the offer
        local _, first, proposer = messages.parse_id(f[4])
        local data = f[6] ~= "" and f[6] or nil
        local p = csm.value(f[4], r, { parent = f[5], attempt = first, proposer = proposer, offer = a,
                                      data = data })
        tally.note_offer(record, self.name, a, p)
        record.proposed = record.proposed or {}
        record.proposed[a] = { kind = "proposal", value = p, sig = f[7] }
      end
      if a > top_attempt then top_attempt = a end
    end
  end
  if top_attempt > 0 then self:move_to(top_attempt) end
  record.written = top_attempt
  self.recovered = #list
  if restarted and self.lab and self.lab.recovered then self.lab.recovered(self.height, read) end
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

-- The proposal of identity id held at the current rank, if any, and built
-- on this node's head: the earliest offer, by leader order (copies differ
-- in their offer attempt).
function Node:held(id)
  local offers, head = self.offers, self:head()
  for attempt = 0, self.attempt + ATTEMPT_SLACK do
    local by = offers[attempt]
    if by then
      for _, name in ipairs(self.names) do
        local p = by[name]
        if p and p:identity() == id and p.parent == head then return p end
      end
    end
  end
end

--- A proposal offered in attempt `offered`: identity id at rank, with its
-- parent, the attempt it was first proposed in and its proposer.
function Node.proposal(id, rank, parent, attempt, proposer, offered, data)
  return csm.value(id, rank, { parent = parent, attempt = attempt, proposer = proposer, offer = offered,
                               data = data })
end

local proposal = Node.proposal

--- How long attempt lasts once q nodes were seen in it.
function Node:view(attempt)
  return self.view_timeout * (1 + attempt)
end

--- How long the i-th leader of attempt waits before it offers: inside the
-- attempt's first half.
function Node:backoff(attempt, i)
  return self:view(attempt) * (i - 1) / (2 * self.n)
end

--- What this node offers in attempt at rank, on parent: the proposal of
-- the latest polka it knows of again (nodes locked on it prevote nothing
-- else until they learn of a later polka), else a new one of its own.
function Node:offer(rank, attempt, parent)
  local id = self:valid()
  local held = id and self:held(id)
  if held then
    self:mark("leader offers a polka again")
    return proposal(id, rank, held.parent, held.attempt, held.proposer, attempt, held.data)
  end
  return reference.proposal(rank, attempt, self.name, parent, attempt)
end

function Node:prove(prior, ctx)
  local rank = self:current_rank()
  local attempt = self.attempt
  if self:abstaining() then
    -- it proposes nothing: the attempt's leaders' proposals end the proving
    if not ctx:sleep(self:view(attempt)) then return nil, "canceled" end
    return nil, "abstaining"
  end
  local own = self.offers[attempt] and self.offers[attempt][self.name]
  if own then return own end
  local leaders = self:leaders(rank)
  for i, name in ipairs(leaders) do
    if name == self.name and i > 1 then
      -- back off so that a live higher-priority leader's proposal wins,
      -- and still offer within the attempt's first half; stop waiting when
      -- the others went on without this node (a polka, a decision, a
      -- certificate: its proposal then costs nothing)
      local world = self.world
      local done_at = world:now() + self:backoff(attempt, i)
      while world:now() < done_at do
        if self:pause(ctx, done_at - world:now()) == nil then return nil, "canceled" end
        if self.attempt ~= attempt then return nil, "attempt changed" end
        if self:decision() or self.ahead[rank] or self:polka_in(self.tally[attempt]) then break end
      end
    end
  end
  return self:offer(rank, attempt, prior:identity())
end

function Node:send_proposal(p)
  local attempt = p.offer or 0
  local record = self:record_for(p:rank(), attempt)
  if record == nil then return true end
  local sent = record.proposed and record.proposed[attempt]
  if sent then
    self:announce_proposal(sent.value, attempt, sent)
    return true
  end
  if record.offers[attempt] and record.offers[attempt][self.name] then return true end
  tally.note_offer(record, self.name, attempt, p)
  local msg = self:seal { kind = "proposal", value = p }
  self:guarded({ "P", p:rank(), attempt, p:identity(), p.parent, p.data or "", msg.sig }, function()
    record.proposed = record.proposed or {}
    record.proposed[attempt] = msg
    self:announce_proposal(p, attempt, msg)
  end)
  return true
end

-- The highest-priority proposal offered in the current attempt on this
-- node's head.
function Node:candidate(rank)
  local by = self.offers[self.attempt]
  if by == nil then return nil end
  local head = self:head()
  for _, leader in ipairs(self:leaders(rank)) do
    local p = by[leader]
    if p and p.parent == head then return p end
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

-- Prevotes id ("" for nothing) in the current attempt, once it is written.
function Node:prevote(rank, id)
  local attempt = self.attempt
  self.prevoted[attempt] = id
  tally.note_prevote(self.ranks[rank], self.name, attempt, id)
  local msg = self:seal { kind = "prevote", rank = rank, attempt = attempt, id = id }
  local record = self.ranks[rank]
  self:guarded({ "V", rank, attempt, id, msg.sig }, function()
    record.sent[attempt] = msg
    self:announce_prevote(rank, attempt, id, msg)
  end)
end

-- Votes for id in the current attempt (it has a polka there) and locks on
-- it, once the vote is written; the vote is stored under "name@attempt",
-- as peers' votes are.
function Node:vote_for(rank, id)
  local attempt = self.attempt
  local head = self:head()
  local vote = messages.vote(id, rank, attempt, head)
  local proposer = vote.proposer
  local msg = self:seal { kind = "vote", value = vote }
  local record = self.ranks[rank]
  record.voted[attempt] = msg
  self.lock = { id = id, attempt = attempt }
  if self.note then self.note("lock", { rank = rank, attempt = attempt, id = id }) end
  tally.note_vote(record, self.name, attempt, id, msg.sig, head)
  -- a full map (peers filled it) leaves the vote to this node's own tally
  self.sm:store("votes", rank, tally.key(self.name, attempt), vote)
  self:guarded({ "W", rank, attempt, id, head, msg.sig }, function()
    record.vote_sent = record.vote_sent or {}
    record.vote_sent[attempt] = true
    self:announce_vote(msg)
  end)
  return proposer, vote
end

-- Re-sends this node's prevotes and votes of the last attempts and of its
-- lock, as they were first sent, and a leader's proposal of the current
-- attempt: a peer that lost them could not see a polka, or the vote that
-- decides.
function Node:resend(rank)
  local low = self.attempt - RESEND_ATTEMPTS
  local lock = self.lock and self.lock.attempt
  local record = self.ranks[rank]
  for attempt, msg in pairs(record.sent) do
    if attempt >= low or attempt == lock then self:announce_prevote(rank, attempt, msg.id, msg) end
  end
  local vote_sent = record.vote_sent or {}
  for attempt, msg in pairs(record.voted) do
    if (attempt >= low or attempt == lock) and (vote_sent[attempt] or self.recovered) then
      self:announce_vote(msg)
    end
  end
  local own = record.proposed and record.proposed[self.attempt]
  if own and self.prevoted[self.attempt] == own.value:identity() then
    self:announce_proposal(own.value, self.attempt, own)
  end
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

-- A leader whose proving was cut short (the machine saw a proposal the
-- protocol did not take, or the attempt moved on meanwhile) still offers
-- its proposal in the attempt once its back-off has passed and nothing
-- better came: the same proposal prove() makes.
function Node:offer_late(rank, now)
  local attempt = self.attempt
  local by = self.offers[attempt]
  if (by and by[self.name]) or self:candidate(rank) or self:abstaining() then return end
  for i, name in ipairs(self:leaders(rank)) do
    if name == self.name then
      if now >= self.attempt_start + self:backoff(attempt, i) then
        self:send_proposal(self:offer(rank, attempt, self:head()))
      end
      return
    end
  end
end

-- Attempt by attempt (Tendermint's rounds): prevote, vote once q nodes
-- prevoted one proposal in the attempt, or move on (attempts.advance).
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
      if mine and mine.value:identity() == decided then return mine.value.proposer, mine.value end
      local vote = messages.vote(decided, rank, at, self:head())
      return vote.proposer, vote
    end
    local mine = self.voted[self.attempt]
    if mine then return mine.value.proposer, mine.value end
    local abstain = self:abstaining()
    local id = self:polka_in(self.tally[self.attempt])
    if id and not abstain then return self:vote_for(rank, id) end
    if self:is_behind() then return nil, "behind" end
    local moved = self:advance()
    if moved then return nil, moved end
    local now = self.world:now()
    if not self.prevoted[self.attempt] and not abstain then
      self:offer_late(rank, now)
      local choice = self:choose(rank)
      -- nothing offered in the attempt's first half: prevote nothing, so
      -- that peers see this node is here
      if choice == nil and now >= self.attempt_start + self:view(self.attempt) / 2 then choice = "" end
      if choice then self:prevote(rank, choice) end
    end
    if now >= next_resend then
      next_resend = now + resend
      self:resend(rank)
    end
    local wake = next_resend
    local deadline = self:attempt_deadline()
    if deadline and deadline > now and deadline < wake then wake = deadline end
    local half = self.attempt_start + self:view(self.attempt) / 2
    if not self.prevoted[self.attempt] and half > now and half < wake then wake = half end
    local why = self:pause(ctx, wake - now)
    if why == nil then return nil, "canceled" end
  end
end

function Node:send_vote()
  self:resend(self:current_rank())
  return self.name
end

function Node:is_quorum()
  self:current_rank()
  if self:decision() then return true end
  if self:is_behind() then return nil, "behind" end
  -- a node that voted moves on too; its lock keeps it on what it voted for
  local moved = self:advance()
  if moved then return nil, moved end
  return false
end

function Node:finalize_votes(proposals)
  local rank = self:current_rank()
  local id, at = self:decision()
  if id then
    local head = self:head()
    local cert = tally.certificate(self.ranks[rank], at, id)
    local chosen
    for _, name in ipairs(self.names) do
      local p = proposals[name]
      if p and p:identity() == id and p.parent == head then chosen = p; break end
    end
    -- the machine keeps a peer's first proposal of a rank; later attempts'
    -- are in this node's offers; a proposal without data is its identity
    -- and parent, which the certificate names
    chosen = chosen or self:held(id)
    if chosen == nil then
      local r, first, proposer, hash = messages.parse_id(id)
      if r == rank and hash == nil then chosen = proposal(id, rank, head, first, proposer, at) end
    end
    if chosen then
      self.decided = { id = id, attempt = at, cert = cert }
      return chosen, chosen.proposer
    end
  end
  self.needs_sync = true
  return nil, "the proposal with a quorum is missing"
end

--- Records state, with the certificate that proves it, as finalized (or
-- adopted) at rank, once, and writes it down.
function Node:record(rank, state, cert)
  if self.finalized[rank] then return end
  self.finalized[rank] = state:identity()
  self.finalized_at[rank] = self.world:now()
  if rank > self.height then self.height = rank end
  local fields = finalized_fields(state, cert)
  local entry = { value = state, cert = cert, bytes = encode(fields) }
  keep_recent(self.certs, rank, entry)
  self.store:append(entry.bytes)
  if self.on_finalize then self.on_finalize(self, rank, state) end
end

function Node:confirm(finalized)
  local rank = finalized:rank()
  local decided = self.decided
  local cert = decided and decided.id == finalized:identity() and decided.cert
  if not cert then return nil, "no certificate" end
  self:record(rank, finalized, cert)
  self.slot_bytes = {}
  self:flush(function() self:publish { kind = "confirmation", value = finalized, cert = cert } end)
  self:compact()
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
