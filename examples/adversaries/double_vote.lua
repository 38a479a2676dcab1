--- Double voting, as an adversary: each node it controls prevotes another
-- identity to every second peer (counting every node in the order of the
-- names), votes for another identity to the other half, and after each
-- vote sends everyone a second, conflicting one — all signed with its own
-- key, so each pair is evidence against it. The reference protocol's
-- "double_vote" role, rebuilt on the message stream; it changes re-sent
-- votes too, where the role changes only the first.
--
--   bin/csm experiment --adversary examples/adversaries/double_vote.lua --byzantine 1:adversary
local csm = require "csm"
local messages = require "csm.protocols.reference.messages"

local function index_of(list, name)
  for i, v in ipairs(list) do if v == name then return i end end
end

-- the last peer of from in the order of names (the copy a publish hands
-- out last)
local function last_peer(names, from)
  for i = #names, 1, -1 do
    if names[i] ~= from then return names[i] end
  end
end

-- Another identity of the same rank, attempt and proposer as id.
local function other(id, mark)
  local rank, attempt, proposer = messages.parse_id(id)
  if rank == nil then return id .. mark end
  return messages.proposal_id(rank, attempt, proposer, mark)
end

local function vote(id, rank, attempt, parent)
  return { kind = "vote", value = messages.vote(id, rank, attempt, parent) }
end

return {
  name = "double_vote",
  message = function(a, m)
    if not m.controlled then return nil end
    local msg, odd = m.msg, index_of(a.names, m.to) % 2 ~= 0
    if m.kind == "prevote" and odd then
      return { replace = a:seal(m.from, { kind = "prevote", rank = msg.rank, attempt = msg.attempt,
                                          id = other(msg.id, "*") }) }
    end
    if m.kind ~= "vote" or not csm.is_value(msg.value) then return nil end
    local v = msg.value
    local id, rank, attempt, parent = v:identity(), v:rank(), v.attempt, v.parent
    -- the second vote is this adversary's own: it passes
    if id:match("#") then return nil end
    if m.to == last_peer(a.names, m.from) then
      a:publish(m.from, a:seal(m.from, vote(other(id, "*"), rank, attempt, parent)))
    end
    if odd then return { replace = a:seal(m.from, vote(other(id, "~"), rank, attempt, parent)) } end
  end,
}
