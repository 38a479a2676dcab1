--- The reference protocol's messages: what each kind holds, the bytes its
-- signature covers, and the checks a received one passes before any of it
-- is used (a schema per kind — types, ranges, sizes, and agreement between
-- a message's fields — then its signature). A message that fails is
-- dropped and counted by reason; no check raises, whatever it is sent.
--
--     liveness      { value = collected, again = true|nil }
--     proposal      { value = proposal, sig }
--     prevote       { rank, attempt, id, sig }      (id "" prevotes nothing)
--     vote          { value = vote, sig, answer = true|nil }
--     confirmation  { value = state, cert }
--     sync_request  { rank }                        (the asker's active rank)
--     sync_response { rank, chain = { [rank] = { value = state, cert }, ... } }
--
-- A proposal (and a finalized state) is a value with identity
-- "R.A:proposer" (rank R, first proposed in attempt A; "R.A:proposer#H"
-- when it carries data, H the data's FNV-1a) and payload { parent,
-- attempt, proposer, offer[, data] } (offer: the attempt it is offered
-- in). A vote is a value with the proposal's identity and payload {
-- attempt, proposer, parent }. A certificate is { attempt, sigs = {
-- [voter] = signature } }: q voters' signed votes for one identity and
-- parent in one attempt, which prove the state was decided.
-- @module csm.protocols.reference.messages

local csm = require "csm"
local check = require "csm.check"
local fnv = require "csm.fnv"

local type, pairs, next, tostring = type, pairs, next, tostring
local format, is_value = string.format, csm.is_value

local messages = {}

-- The longest identity, parent, signature and data a message may hold.
messages.MAX_ID, messages.MAX_SIG, messages.MAX_DATA = 256, 128, 65536

--- Ranks in one sync answer, at most.
messages.ANSWER_RANKS = 32

local MAX_ID, MAX_SIG, MAX_DATA = messages.MAX_ID, messages.MAX_SIG, messages.MAX_DATA
local MAX_INT = 2 ^ 53

local is_integer = check.is_integer

local function is_int(x)
  return is_integer(x) and x >= 0 and x <= MAX_INT
end

local function is_text(x, max)
  return type(x) == "string" and #x > 0 and #x <= max
end

-- ---- identities and the bytes signatures cover ----

--- The identity of a proposal of rank, first proposed in attempt by
-- proposer, with data (a string or nil).
function messages.proposal_id(rank, attempt, proposer, data)
  local id = format("%d.%d:%s", rank, attempt, proposer)
  if data ~= nil then id = id .. "#" .. fnv.hex(data) end
  return id
end

--- The rank, attempt and proposer an identity names, and the hash of its
-- data (nil without); nil for an identity not of that form.
function messages.parse_id(id)
  if type(id) ~= "string" then return nil end
  local r, a, rest = id:match("^(%d+)%.(%d+):(.+)$")
  if r == nil then return nil end
  local proposer, hash = rest:match("^(.+)#(%x%x%x%x%x%x%x%x)$")
  return tonumber(r), tonumber(a), proposer or rest, hash
end

-- A length-prefixed field, so that no two field lists give the same bytes.
local function field(s)
  return #s .. ":" .. s
end

--- What the offerer of a proposal signs.
function messages.proposal_bytes(rank, offer, id, parent)
  return format("csm-ref proposal %d %d %s%s", rank, offer, field(id), field(parent))
end

--- What a prevote's voter signs.
function messages.prevote_bytes(rank, attempt, id)
  return format("csm-ref prevote %d %d %s", rank, attempt, field(id))
end

--- What a vote's voter signs (a certificate is q of these).
function messages.vote_bytes(rank, attempt, id, parent)
  return format("csm-ref vote %d %d %s%s", rank, attempt, field(id), field(parent))
end

--- A vote value for proposal identity id at rank, in attempt, on parent.
function messages.vote(id, rank, attempt, parent)
  local _, _, proposer = messages.parse_id(id)
  return csm.value(id, rank, { attempt = attempt, proposer = proposer or id, parent = parent })
end

--- A message's kind, rank and attempt (nil when it has none); a
-- proposal's attempt is the one it is offered in.
function messages.classify(msg)
  if type(msg) ~= "table" then return nil end
  local value = msg.value
  local rank = msg.rank
  if rank == nil and is_value(value) then rank = value:rank() end
  local attempt = msg.attempt
  if attempt == nil and is_value(value) then
    attempt = msg.kind == "proposal" and value.offer or value.attempt
  end
  return msg.kind, rank, attempt
end

--- msg with its signature, made by signer (proposals, prevotes and votes;
-- other kinds are returned as they are). Returns msg.
function messages.seal(msg, signer)
  local kind, v = msg.kind, msg.value
  if kind == "proposal" then
    msg.sig = signer:sign(messages.proposal_bytes(v:rank(), v.offer, v:identity(), v.parent))
  elseif kind == "prevote" then
    msg.sig = signer:sign(messages.prevote_bytes(msg.rank, msg.attempt, msg.id))
  elseif kind == "vote" then
    msg.sig = signer:sign(messages.vote_bytes(v:rank(), v.attempt, v:identity(), v.parent))
  end
  return msg
end

-- ---- schemas ----

local PROPOSAL_KEYS = { parent = true, attempt = true, proposer = true, offer = true, data = true }
local VOTE_KEYS = { attempt = true, proposer = true, parent = true }

local function only(t, keys)
  for k in pairs(t) do
    if not keys[k] then return false end
  end
  return true
end

--- Whether value is a well-formed proposal (or finalized state) among
-- node's names: nil, or why it is not.
function messages.state_problem(node, value)
  if not is_value(value) then return "not a value" end
  local p = value.payload
  if type(p) ~= "table" or not only(p, PROPOSAL_KEYS) then return "bad payload" end
  if not (is_text(p.parent, MAX_ID) and is_int(p.attempt) and is_int(p.offer) and p.offer >= p.attempt) then
    return "bad payload fields"
  end
  if p.data ~= nil and not (type(p.data) == "string" and #p.data <= MAX_DATA) then return "bad data" end
  if not node.member[p.proposer] then return "proposer not a member" end
  local id = value:identity()
  local r, a, proposer, hash = messages.parse_id(id)
  if r ~= value:rank() or a ~= p.attempt or proposer ~= p.proposer then
    return "identity does not name its rank, attempt and proposer"
  end
  if (hash == nil) ~= (p.data == nil) or (hash and hash ~= fnv.hex(p.data)) then
    return "identity does not name its data"
  end
end

local function vote_problem(node, value)
  if not is_value(value) then return "not a value" end
  local p = value.payload
  if type(p) ~= "table" or not only(p, VOTE_KEYS) then return "bad payload" end
  if not (is_int(p.attempt) and is_text(p.parent, MAX_ID) and node.member[p.proposer]) then
    return "bad payload fields"
  end
  local r, _, proposer = messages.parse_id(value:identity())
  if r ~= value:rank() or proposer ~= p.proposer then
    return "identity does not name its rank and proposer"
  end
end

--- Whether cert proves that state was decided: nil, or why not. A valid
-- certificate holds the signed votes of q members for state's identity
-- and parent in one attempt, at or after the state's first.
function messages.certificate_problem(node, state, cert)
  local why = messages.state_problem(node, state)
  if why then return why end
  if type(cert) ~= "table" or not is_int(cert.attempt) or type(cert.sigs) ~= "table" then
    return "bad certificate"
  end
  if cert.attempt < state.attempt then return "certificate before its proposal" end
  local bytes = messages.vote_bytes(state:rank(), cert.attempt, state:identity(), state.parent)
  local count, signer = 0, node.signer
  for voter, sig in pairs(cert.sigs) do
    if not node.member[voter] or not is_text(sig, MAX_SIG) then return "bad certificate entry" end
    if not signer:verify(voter, bytes, sig) then return "bad signature in certificate" end
    count = count + 1
  end
  if count < node.q then return "certificate of " .. count .. " votes" end
end

local function signed(node, from, bytes, sig)
  return is_text(sig, MAX_SIG) and node.signer:verify(from, bytes, sig)
end

local schema = {}

function schema.liveness(_, _, msg)
  if not is_value(msg.value) then return "value" end
  if msg.again ~= nil and msg.again ~= true then return "again" end
end

function schema.proposal(node, from, msg)
  local v = msg.value
  local why = messages.state_problem(node, v)
  if why then return why end
  if not signed(node, from, messages.proposal_bytes(v:rank(), v.offer, v:identity(), v.parent), msg.sig) then
    return "signature", "signature"
  end
end

function schema.prevote(node, from, msg)
  if not (is_int(msg.rank) and is_int(msg.attempt)) then return "rank or attempt" end
  local id = msg.id
  if not (id == "" or is_text(id, MAX_ID)) then return "id" end
  if not signed(node, from, messages.prevote_bytes(msg.rank, msg.attempt, id), msg.sig) then
    return "signature", "signature"
  end
end

function schema.vote(node, from, msg)
  local v = msg.value
  local why = vote_problem(node, v)
  if why then return why end
  if msg.answer ~= nil and msg.answer ~= true then return "answer" end
  if not signed(node, from, messages.vote_bytes(v:rank(), v.attempt, v:identity(), v.parent), msg.sig) then
    return "signature", "signature"
  end
end

function schema.confirmation(node, _, msg)
  -- of a rank this node has finished: dropped unread, so not checked
  if is_value(msg.value) and msg.value:rank() < (node.rank or 0) then return nil end
  local why = messages.certificate_problem(node, msg.value, msg.cert)
  if why then return why, "certificate" end
end

function schema.sync_request(_, _, msg)
  if not is_int(msg.rank) then return "rank" end
end

function schema.sync_response(_, _, msg)
  if not is_int(msg.rank) or type(msg.chain) ~= "table" then return "rank or chain" end
  local count = 0
  for r, entry in pairs(msg.chain) do
    count = count + 1
    if count > messages.ANSWER_RANKS then return "too many ranks" end
    if not is_int(r) or type(entry) ~= "table" then return "chain entry" end
  end
end

--- Checks msg from peer from before node uses any of it: true, or nil, why
-- and a code ("kind", "schema", "signature", "certificate"). A sync
-- answer's certificates are checked one by one as they are used.
function messages.check(node, from, msg)
  if type(msg) ~= "table" then return nil, "not a table", "kind" end
  local problem = schema[msg.kind]
  if problem == nil then return nil, "unknown kind " .. tostring(msg.kind), "kind" end
  if next(msg) == nil then return nil, "empty", "schema" end
  local why, code = problem(node, from, msg)
  if why then return nil, msg.kind .. ": " .. why, code or "schema" end
  return true
end

--- The rank msg (checked) is about.
function messages.rank(msg)
  local v = msg.value
  if v then return v:rank() end
  return msg.rank
end

return messages
