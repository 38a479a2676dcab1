--- The reference protocol's sync: a node that f + 1 peers are ahead of (or
-- that starts again after a crash) asks every peer for the states it
-- finalized past its own, and adopts, rank by rank, each state f + 1 peers
-- report. Peers answer from the oldest rank they still keep, so ranks they
-- all forgot are skipped.
-- @module csm.protocols.reference.sync

local csm = require "csm"

local ipairs, pairs, type = ipairs, pairs, type

local sync = {}

--- Ranks in one answer to a sync request: a node further behind asks again
-- from where the answer ended.
sync.ANSWER_RANKS = 32

--- The sync provider: returns the state to adopt (existing when there is
-- nothing to sync), or nil, "canceled" when the state was left.
function sync.synchronize(node, existing, ctx)
  node:current_rank()
  if not (node.needs_sync or node:is_behind()) then return existing end
  node.needs_sync = false
  local base = existing and existing:rank() or 0
  local answers = {}
  node.sync_answers = answers
  node:publish { kind = "sync_request", rank = base }
  -- until every peer answered, or sync_wait passed
  local deadline = node.world:now() + node.sync_wait
  while #answers < node.n - 1 do
    local left = deadline - node.world:now()
    if left <= 0 then break end
    if node:pause(ctx, left) == nil then
      node.sync_answers = nil
      return nil, "canceled"
    end
  end
  node.sync_answers = nil
  -- adopt, in order, every rank above base whose state f + 1 peers agree was
  -- finalized: peers answer from the oldest rank they still keep, so ranks
  -- they all forgot are skipped
  local ranks, listed = {}, {}
  for _, r in ipairs(answers) do
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
    local agree, chosen = {}, nil
    for i, r in ipairs(answers) do
      local state = r.chain[rank]
      if csm.is_value(state) and state:rank() == rank then
        local id = state:identity()
        -- who vouches for an answer: node.sync_voucher(answer, i) (each
        -- answer for itself unless a node says otherwise)
        local by = agree[id] or {}
        agree[id] = by
        local voucher = node.sync_voucher and node.sync_voucher(r, i) or i
        if not by[voucher] then
          by[voucher] = true
          by.n = (by.n or 0) + 1
          if by.n == node.f + 1 then chosen = state end
        end
      end
    end
    if chosen then
      adopted = chosen
      node:record(rank, chosen)
    end
  end
  if adopted == nil then
    -- peers that did not answer cannot help: forget how far they claimed to
    -- be, or a crashed one would keep this node "behind", syncing, forever
    local answered = {}
    for _, r in ipairs(answers) do answered[r.from] = true end
    for name in pairs(node.progress) do
      if not answered[name] then node.progress[name] = nil end
    end
  end
  return adopted or existing
end

--- Answers a peer's sync request: ANSWER_RANKS ranks from the one after
-- the rank asked for, or from the oldest still kept.
function sync.answer(node, from, msg)
  if type(msg.rank) ~= "number" then return end
  local first = math.max(msg.rank + 1, node.chain.low or 0)
  local chain = {}
  for k = first, first + sync.ANSWER_RANKS - 1 do chain[k] = node.chain[k] end
  node:send(from, { kind = "sync_response", chain = chain })
end

--- Takes a peer's answer while a sync waits for answers.
function sync.take(node, from, msg)
  local list = node.sync_answers
  if list and type(msg.chain) == "table" then
    list[#list + 1] = { from = from, chain = msg.chain }
    if node.wake_pause then node.wake_pause() end
  end
end

return sync
