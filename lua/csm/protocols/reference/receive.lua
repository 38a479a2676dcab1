--- The reference protocol's message handling: one handler per message
-- kind behind one dispatcher. Messages are tables with a `kind`:
--
--     liveness      { value = collected, again = true|nil }
--     proposal      { value = proposal }            (proposal.offer: its attempt)
--     prevote       { rank =, attempt =, id = }
--     vote          { proposer =, attempt =, value = vote, answer = true|nil }
--     confirmation  { value = finalized }
--     sync_request  { rank = the asker's active rank }
--     sync_response { chain = { [rank] = state, ... } }
--
-- A refused message is counted in node.refused and node.refusals, by kind
-- and code ("vote: stale"), with node.refusal_examples[reason] the first
-- message seen for each.
-- @module csm.protocols.reference.receive

local tally = require "csm.protocols.reference.tally"
local sync = require "csm.protocols.reference.sync"

local type, tostring = type, tostring

local receive = {}

-- The rank a message is about.
local function message_rank(msg)
  if msg.rank then return msg.rank end
  if msg.value then return msg.value:rank() end
end

local handlers = {}

function handlers.liveness(node, from, msg)
  local sm = node.sm
  local ok, err, code = sm:receive_liveness_check(from, msg.value)
  local mine = msg.again and sm:get("liveness", msg.value:rank(), node.name)
  if mine then node:send(from, { kind = "liveness", value = mine }) end
  return ok, err, code
end

function handlers.proposal(node, from, msg, r)
  local p = msg.value
  local attempt = p.offer or 0
  local record, why, code = node:record_for(r, attempt)
  if why then return nil, why, code end
  local ok, err
  ok, err, code = node.sm:receive_proposal(from, p)
  if ok and record then
    tally.note_offer(record, from, attempt, p)
    tally.saw(record, from, attempt)
  end
  return ok, err, code
end

function handlers.prevote(node, from, msg, r)
  local record = type(msg.id) == "string" and node:record_for(r, msg.attempt)
  if record then
    tally.note_prevote(record, from, msg.attempt, msg.id)
    tally.saw(record, from, msg.attempt)
  end
  return true
end

function handlers.vote(node, from, msg, r)
  local attempt = msg.attempt
  local record, why, code = node:record_for(r, attempt)
  if why then return nil, why, code end
  local key = record and tally.key(from, attempt) or from .. "@" .. tostring(attempt)
  local ok, err
  ok, err, code = node.sm:receive_vote(msg.proposer or from, key, msg.value)
  if ok and record then
    tally.saw(record, from, attempt)
    tally.note_vote(record, from, attempt, msg.value:identity())
  end
  return ok, err, code
end

function handlers.confirmation(node, from, msg)
  return node.sm:receive_confirmation(from, msg.value)
end

function handlers.sync_request(node, from, msg)
  sync.answer(node, from, msg)
  return true
end

function handlers.sync_response(node, from, msg)
  sync.take(node, from, msg)
  return true
end

-- The handler of each message kind: handler(node, from, msg, rank) ->
-- true | nil, message, code.

-- The kinds a waiting decision wakes up for.
local WAKES = { prevote = true, vote = true, proposal = true }

local function refuse(node, kind, err, code)
  node.refused = node.refused + 1
  local reason = kind .. ": " .. tostring(code or "refused")
  local count = node.refusals[reason]
  if count == nil then
    count = 0
    node.refusal_examples[reason] = tostring(err)
  end
  node.refusals[reason] = count + 1
end

--- Handles msg from peer from: notes how far the peer has got, answers a
-- peer that may have lost this node's deciding vote of a rank it has left,
-- runs the kind's handler and counts a refusal.
function receive.deliver(node, from, msg)
  local sm = node.sm
  if sm:closed() then return end
  local kind = msg.kind
  local rank = node:current_rank()
  local r = message_rank(msg)
  if r then
    -- a confirmation of rank r means its sender works on r + 1
    local progress = kind == "confirmation" and r + 1 or r
    if kind ~= "sync_request" and progress > (node.progress[from] or 0) then
      node.progress[from] = progress
    end
  end
  -- a peer still deciding, a re-send later, a rank this node has left may
  -- have lost this node's vote, which nobody re-sends any more: answer with
  -- it (never to an answer, or two nodes past the rank would echo forever)
  local kept = r and r < rank and node.deciding_votes[r]
  if kept and (kind == "prevote" or (kind == "vote" and not msg.answer))
    and node.world:now() - (node.finalized_at[r] or -math.huge) >= sm:timing("vote_resend") / 2 then
    node:send(from, { kind = "vote", proposer = kept.proposer, attempt = kept.attempt,
                      value = kept.value, answer = true })
  end
  local handler = handlers[kind]
  if handler then
    local ok, err, code = handler(node, from, msg, r)
    if not ok then refuse(node, kind, err, code) end
  end
  if node.wake_pause and WAKES[kind] then node.wake_pause() end
end

return receive
