--- The reference protocol's vote tally: what a node knows of one rank (a
-- record), and the counts that decide it. Pure functions on records; a
-- node holds the records of the rank it decides and of the next.
--
-- A record holds, per attempt, a tally `{ by, count, voted, votes, sigs }`:
-- `count[id]` prevotes for id (counted once per voter: `by[voter] = id`),
-- `votes[id]` votes (once per voter: `voted[voter] = id`) and each vote's
-- signature and parent (`sigs[voter] = { sig, parent }`); the node's own
-- prevotes and votes (`prevoted[attempt]` the identity, `sent[attempt]`
-- the signed prevote message, `voted[attempt]` the signed vote message),
-- the proposals offered (`offers[attempt][peer]`), the latest attempt each
-- peer has been seen in (`seen[peer]`) and when q nodes were first seen at
-- or past an attempt (`full[attempt]`).
-- @module csm.protocols.reference.tally

local pairs, tonumber = pairs, tonumber

local tally = {}

--- A new, empty record of one rank.
function tally.record()
  return { tally = {}, prevoted = {}, sent = {}, voted = {}, offers = {}, seen = {}, full = {} }
end

--- The tally of attempt in record, made on first use.
function tally.attempt(record, attempt)
  local t = record.tally[attempt]
  if t == nil then
    t = { by = {}, count = {}, voted = {}, votes = {}, sigs = {} }
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

--- Counts voter's prevote for id in attempt; one per voter and attempt.
function tally.note_prevote(record, voter, attempt, id)
  local t = tally.attempt(record, attempt)
  count_once(t.by, t.count, voter, id)
end

--- Counts voter's vote for id (with parent, signed sig) in attempt, and as
-- its prevote there (a vote only follows a polka for id); one of each per
-- voter and attempt.
function tally.note_vote(record, voter, attempt, id, sig, parent)
  local t = tally.attempt(record, attempt)
  if t.voted[voter] then return end
  count_once(t.voted, t.votes, voter, id)
  count_once(t.by, t.count, voter, id)
  t.sigs[voter] = { sig, parent }
end

--- Forgets the votes of record whose parent is not parent: votes for the
-- next rank are taken before its parent is known.
function tally.keep_parent(record, parent)
  for _, t in pairs(record.tally) do
    for voter, s in pairs(t.sigs) do
      if s[2] ~= parent then
        local id = t.voted[voter]
        t.votes[id] = t.votes[id] - 1
        t.voted[voter], t.sigs[voter] = nil, nil
      end
    end
  end
end

--- The certificate of id in attempt: { attempt, sigs = { [voter] = sig } }
-- of the votes for id there.
function tally.certificate(record, attempt, id)
  local t = record.tally[attempt]
  local sigs = {}
  if t then
    for voter, s in pairs(t.sigs) do
      if t.voted[voter] == id then sigs[voter] = s[1] end
    end
  end
  return { attempt = attempt, sigs = sigs }
end

--- Records proposal p that peer offered in attempt.
function tally.note_offer(record, peer, attempt, p)
  local by = record.offers[attempt]
  if by == nil then
    by = {}
    record.offers[attempt] = by
  end
  by[peer] = p
end


--- The identity with a polka in attempt tally t: q prevotes, or f + 1 votes
-- (one of them honest, and an honest node votes only on a polka).
function tally.polka_in(t, q, f)
  if t == nil then return nil end
  for id, c in pairs(t.count) do
    if c >= q and id ~= "" then return id end
  end
  for id, c in pairs(t.votes) do
    if c > f then return id end
  end
end

--- Notes that peer has reached attempt.
function tally.saw(record, peer, attempt)
  if attempt > (record.seen[peer] or -1) then record.seen[peer] = attempt end
end

--- The latest polka of the tallies (by attempt) up to attempt upto: its
-- identity and attempt.
function tally.latest_polka(tallies, upto, q, f)
  local best, at = nil, -1
  for attempt, t in pairs(tallies) do
    if attempt > at and attempt <= upto then
      local id = tally.polka_in(t, q, f)
      if id then best, at = id, attempt end
    end
  end
  return best, best and at
end

--- The identity q nodes voted for in one attempt of the tallies, and that
-- attempt: the rank's decision.
function tally.decision(tallies, q)
  for attempt, t in pairs(tallies) do
    for id, c in pairs(t.votes) do
      if c >= q then return id, attempt end
    end
  end
end

-- ---- vote keys: "voter@attempt" ----

-- Keys of attempts up to this are made once per voter and kept; a peer
-- chooses attempt numbers, so larger ones are made afresh each time.
local CACHED_ATTEMPTS = 64
local keys_of = {}

--- "name@attempt", the key the machine stores name's vote of attempt under.
function tally.key(name, attempt)
  if attempt > CACHED_ATTEMPTS then return name .. "@" .. attempt end
  local keys = keys_of[name]
  if keys == nil then
    keys = {}
    keys_of[name] = keys
  end
  local key = keys[attempt]
  if key == nil then
    key = name .. "@" .. attempt
    keys[attempt] = key
  end
  return key
end

-- The attempt of each vote key met lately (the machine keeps its own vote
-- under the node's name too; that key has none and is not counted). Peers
-- choose the keys, so the cache starts over when it holds this many.
local KEYS_REMEMBERED = 4096
local attempt_of, nkeys = {}, 0

local function key_attempt(key)
  local a = attempt_of[key]
  if a == nil then
    if nkeys >= KEYS_REMEMBERED then attempt_of, nkeys = {}, 0 end
    a = key:match("@(%d+)$") or false
    attempt_of[key] = a
    nkeys = nkeys + 1
  end
  return a
end

--- The identity q voters voted for in one attempt of votes (the machine's
-- votes map of a rank, keyed "voter@attempt"), if any, and the attempt. A
-- voter has one key per attempt, and the machine refuses a second,
-- different vote under a key.
function tally.quorum(votes, q)
  local counts = {}
  for key, vote in pairs(votes) do
    local a = key_attempt(key)
    if a then
      local t = counts[a]
      if t == nil then
        t = {}
        counts[a] = t
      end
      local id = vote:identity()
      local c = (t[id] or 0) + 1
      t[id] = c
      if c >= q then return id, tonumber(a) end
    end
  end
end

return tally
