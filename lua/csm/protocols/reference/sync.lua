--- The reference protocol's sync: a node that holds a certificate of the
-- rank it is deciding, that f + 1 peers are ahead of, or that starts again
-- after a crash, adopts certified states: those it was sent (a peer
-- answers a node still deciding a rank it finished with the rank's
-- certificate), and those its peers answer a sync request with. A
-- certificate is q signed votes, so one honest answer is enough and no
-- forged one is taken. Peers answer from the oldest rank they still keep,
-- so ranks they all forgot are skipped.
-- @module csm.protocols.reference.sync

local messages = require "csm.protocols.reference.messages"

local pairs = pairs

local sync = {}

--- Ranks in one answer to a sync request: a node further behind asks again
-- from where the answer ended.
sync.ANSWER_RANKS = messages.ANSWER_RANKS

-- Adopts, in order from the rank after base, the certified states node
-- holds: each must build on the one before (or, after a gap no peer keeps,
-- stand on its certificate alone). Returns the last adopted, or nil.
local function adopt(node, base, head, allow_gap)
  local ahead, adopted = node.ahead, nil
  local rank = base + 1
  if ahead[rank] == nil and allow_gap then
    local low
    for r in pairs(ahead) do
      if r > base and (low == nil or r < low) then low = r end
    end
    if low then rank, head = low, nil end
  end
  while true do
    local entry = ahead[rank]
    if entry == nil then break end
    ahead[rank] = nil
    if head and entry.value.parent ~= head then
      node.refused = node.refused + 1
      node.refusals["sync: parent"] = (node.refusals["sync: parent"] or 0) + 1
      break
    end
    node:record(rank, entry.value, entry.cert)
    adopted, head = entry.value, entry.value:identity()
    rank = rank + 1
  end
  return adopted
end

--- The sync provider: returns the state to adopt (existing when there is
-- nothing to sync), or nil, "canceled" when the state was left.
function sync.synchronize(node, existing, ctx)
  node:current_rank()
  local base = existing and existing:rank() or 0
  local head = existing and existing:identity() or "genesis"
  local adopted = adopt(node, base, head, false)
  if adopted then
    node:flush()
    return adopted
  end
  if not (node.needs_sync or node.amnesia or node:is_behind()) then return existing end
  node.needs_sync = false
  -- what an earlier sync's answers left far ahead is asked for again
  local window = node.rank + 2 * sync.ANSWER_RANKS
  for r in pairs(node.ahead) do
    if r >= window then node.ahead[r] = nil end
  end
  local waiting = { answered = {}, count = 0, ranks = {} }
  node.sync_waiting = waiting
  node:publish { kind = "sync_request", rank = base }
  -- until the next rank's certificate came, or every peer answered, or
  -- sync_wait passed (a node that lost its store waits for every answer:
  -- it must learn which ranks were in progress)
  local deadline = node.world:now() + node.sync_wait
  while waiting.count < node.n - 1 and (node.amnesia or node.ahead[base + 1] == nil) do
    local left = deadline - node.world:now()
    if left <= 0 then break end
    if node:pause(ctx, left) == nil then
      node.sync_waiting = nil
      return nil, "canceled"
    end
  end
  node.sync_waiting = nil
  if node.amnesia then
    -- it may have voted up to the rank after those its peers are in: the
    -- (f + 1)-th highest they answered (f byzantine ones cannot raise it)
    node.amnesia = nil
    local ranks = waiting.ranks
    table.sort(ranks, function(a, b) return a > b end)
    node.abstain_through = (ranks[node.f + 1] or ranks[#ranks] or base) + 1
    if node.note then node.note("abstain", { through = node.abstain_through }) end
  end
  adopted = adopt(node, base, head, true)
  if adopted == nil then
    -- peers that did not answer cannot help: forget how far they claimed to
    -- be, or a crashed one would keep this node "behind", syncing, forever
    for name in pairs(node.progress) do
      if not waiting.answered[name] then node.progress[name] = nil end
    end
    return existing
  end
  node:flush()
  return adopted
end

--- Answers a peer's sync request: ANSWER_RANKS certified states from the
-- rank after the one asked for, or from the oldest still kept, and the rank
-- this node is deciding.
function sync.answer(node, from, msg)
  local certs = node.certs
  local first = math.max(msg.rank + 1, certs.low or 0)
  local chain = {}
  for k = first, first + sync.ANSWER_RANKS - 1 do
    local entry = certs[k]
    if entry then chain[k] = { value = entry.value, cert = entry.cert } end
  end
  node:send(from, { kind = "sync_response", rank = node.rank, chain = chain })
end

--- Takes a peer's answer while a sync waits for answers (one per peer):
-- each certified state it holds is checked, and handed to keep if valid
-- (keep takes those of the ranks this node has not reached).
function sync.take(node, from, msg, keep)
  local waiting = node.sync_waiting
  if waiting == nil then return nil, "no sync asked for", "unasked" end
  if waiting.answered[from] then return nil, "a second answer", "duplicate" end
  waiting.answered[from] = true
  waiting.count = waiting.count + 1
  waiting.ranks[#waiting.ranks + 1] = msg.rank
  -- (f + 1 of these are needed before a node counts itself behind)
  if msg.rank > (node.progress[from] or 0) then node.progress[from] = msg.rank end
  local bad = 0
  for rank, entry in pairs(msg.chain) do
    local state = entry.value
    local why = messages.certificate_problem(node, state, entry.cert)
    if why == nil and state:rank() ~= rank then why = "rank" end
    if why then
      bad = bad + 1
    else
      keep(node, { value = state, cert = entry.cert }, true)
    end
  end
  if node.wake_pause then node.wake_pause() end
  if bad > 0 then return nil, bad .. " states without a valid certificate", "certificate" end
  return true
end

return sync
