--- The reference protocol's message handling: one handler per message
-- kind behind one dispatcher (csm.protocols.reference.messages lists the
-- kinds). Every message is checked before any of it is used — its schema,
-- then its signature — and a message that fails is dropped and counted;
-- how far a peer has got is learnt only from messages taken.
--
-- A refused message is counted in node.refused and node.refusals, by kind
-- and code ("vote: stale", "prevote: signature"), with
-- node.refusal_examples[reason] the first message seen for each.
-- @module csm.protocols.reference.receive

local tally = require "csm.protocols.reference.tally"
local sync = require "csm.protocols.reference.sync"
local messages = require "csm.protocols.reference.messages"

local type, tostring = type, tostring

local receive = {}

local handlers = {}

function handlers.liveness(node, from, msg)
  local sm = node.sm
  local ok, err, code = sm:receive_liveness_check(from, msg.value)
  local mine = ok and msg.again and sm:get("liveness", msg.value:rank(), node.name)
  if mine then node:send(from, { kind = "liveness", value = mine }) end
  return ok, err, code
end

-- Notes, once per voter and attempt, two different signed messages of one
-- kind: evidence that voter is byzantine.
local function evidence(node, record, kind, voter, rank, attempt, a, b)
  local seen = record.evidence or {}
  record.evidence = seen
  local key = kind .. " " .. voter .. " " .. attempt
  if seen[key] then return end
  seen[key] = true
  node.evidence = node.evidence + 1
  if node.note then
    node.note("evidence", { voter = voter, kind = kind, rank = rank, attempt = attempt, ids = { a, b } })
  end
end

function handlers.proposal(node, from, msg, r)
  local p = msg.value
  local attempt = p.offer
  local record, why, code = node:record_for(r, attempt)
  if why then return nil, why, code end
  if record == nil then return node.sm:receive_proposal(from, p) end
  local by = record.offers[attempt]
  local had = by and by[from]
  if had then
    if had:identity() ~= p:identity() or had.parent ~= p.parent then
      evidence(node, record, "proposal", from, r, attempt, had:identity(), p:identity())
      return nil, "a second proposal in one attempt", "conflict"
    end
    return true
  end
  local ok, err
  ok, err, code = node.sm:receive_proposal(from, p)
  if ok or code == "conflict" then
    tally.note_offer(record, from, attempt, p)
    tally.saw(record, from, attempt)
    return true
  end
  return ok, err, code
end

function handlers.prevote(node, from, msg, r)
  local record, why, code = node:record_for(r, msg.attempt)
  if why then return nil, why, code end
  if record == nil then return nil, "stale rank", "stale" end
  local t = tally.attempt(record, msg.attempt)
  local had = t.by[from]
  if had and had ~= msg.id then evidence(node, record, "prevote", from, r, msg.attempt, had, msg.id) end
  tally.note_prevote(record, from, msg.attempt, msg.id)
  tally.saw(record, from, msg.attempt)
  return true
end

function handlers.vote(node, from, msg, r)
  local v = msg.value
  local attempt = v.attempt
  local record, why, code = node:record_for(r, attempt)
  if why then return nil, why, code end
  -- a vote for the rank being decided must build on this node's head
  if record and r == node.rank and v.parent ~= node:head() then
    return nil, "vote on another parent", "parent"
  end
  local key = record and tally.key(from, attempt) or from .. "@" .. tostring(attempt)
  local ok, err
  ok, err, code = node.sm:receive_vote(v.proposer, key, v)
  if record then
    local t = tally.attempt(record, attempt)
    local had = t.voted[from]
    if had and had ~= v:identity() then
      evidence(node, record, "vote", from, r, attempt, had, v:identity())
    end
    if ok or code == "full" then
      tally.saw(record, from, attempt)
      tally.note_vote(record, from, attempt, v:identity(), msg.sig, v.parent)
      return true
    end
  end
  return ok, err, code
end

-- A certified state of a rank this node has not reached: kept (ranks up
-- to a sync answer's reach past the one being decided) until a sync
-- adopts it.
-- A state with its certificate, kept to adopt when this node reaches its
-- rank: within twice an answer's ranks of the current one, or, when it
-- answers this node's sync request (solicited: at most ANSWER_RANKS per peer
-- and sync, and dropped at the next sync), any rank ahead, so that a node
-- further behind than its peers keep certificates can still catch up.
local function keep_ahead(node, entry, solicited)
  local rank = entry.value:rank()
  local current = node.rank
  if rank < current or node.ahead[rank] then return end
  if not solicited and rank >= current + 2 * messages.ANSWER_RANKS then return end
  node.ahead[rank] = entry
  if rank == current and node.wake_pause then node.wake_pause() end
end

function handlers.confirmation(node, from, msg)
  local rank = msg.value:rank()
  -- of a rank this node has finished: nothing to learn
  if rank < node.rank then return true end
  keep_ahead(node, { value = msg.value, cert = msg.cert })
  return node.sm:receive_confirmation(from, msg.value)
end

function handlers.sync_request(node, from, msg)
  sync.answer(node, from, msg)
  return true
end

function handlers.sync_response(node, from, msg)
  return sync.take(node, from, msg, keep_ahead)
end

-- The kinds a waiting decision wakes up for.
local WAKES = { prevote = true, vote = true, proposal = true }

local function refuse(node, kind, err, code)
  node.refused = node.refused + 1
  local reason = tostring(kind) .. ": " .. tostring(code or "refused")
  local count = node.refusals[reason]
  if count == nil then
    count = 0
    node.refusal_examples[reason] = tostring(err)
  end
  node.refusals[reason] = count + 1
end

-- The kinds a peer still deciding sends: one that sends them about a rank
-- this node has finished gets that rank's certificate.
local DECIDING = { liveness = true, proposal = true, prevote = true, vote = true }

--- Handles msg from peer from: checks it, runs the kind's handler, notes
-- how far the peer has got, and answers a peer still deciding a rank this
-- node has finished with the rank's certified state.
function receive.deliver(node, from, msg)
  local sm = node.sm
  if sm:closed() then return end
  local rank = node:current_rank()
  local kind = type(msg) == "table" and msg.kind
  local ok, err, code = messages.check(node, from, msg)
  if not ok then
    refuse(node, type(kind) == "string" and kind or "message", err, code)
    return
  end
  local r = messages.rank(msg)
  local handler = handlers[kind]
  ok, err, code = handler(node, from, msg, r)
  if ok and r then
    -- a confirmation of rank r means its sender works on r + 1
    local progress = kind == "confirmation" and r + 1 or r
    if kind ~= "sync_request" and kind ~= "sync_response" and progress > (node.progress[from] or 0) then
      node.progress[from] = progress
    end
  elseif not ok then
    refuse(node, kind, err, code)
    -- beyond the next rank, but signed: how far the peer has got counts, or
    -- a node that fell behind by more than its peers keep would never know
    if code == "far" and r and r > (node.progress[from] or 0) then node.progress[from] = r end
    -- too far ahead to take, but signed: how far the peer has got still
    -- counts, or a node that fell more than the slack behind (a restart
    -- with an empty store) would never find its peers' attempt again
    if code == "attempt" and r == rank then
      local _, _, attempt = messages.classify(msg)
      tally.saw(node.ranks[rank], from, attempt)
    end
  end
  local entry = r and r < rank and DECIDING[kind] and node.certs[r]
  if entry then
    -- at most once per peer and rank each vote_resend
    local last = node.answered[from]
    local now = node.world:now()
    if not last or last.rank ~= r or now - last.at >= sm:timing("vote_resend") then
      node.answered[from] = { rank = r, at = now }
      node:send(from, { kind = "confirmation", value = entry.value, cert = entry.cert })
    end
  end
  if node.wake_pause and WAKES[kind] then node.wake_pause() end
end

return receive
