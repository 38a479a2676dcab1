--- Byzantine roles for the reference protocol, kept apart from the honest
-- node: each role wraps a node, replacing what it sends. The honest node
-- sends its proposals, prevotes and votes through announce_proposal,
-- announce_prevote and announce_vote, and everything through publish and
-- send; a role overrides some of these on the node itself. What a role
-- sends is signed with the node's own key (node:seal), as a byzantine
-- node's messages are: it can lie, not speak for others.
--
--   equivocate   a different proposal to every other peer
--   double_vote  conflicting prevotes and votes to different peers, and a
--                second vote to everyone
--   silent       never sends, never listens, never starts
-- @module csm.protocols.reference.byzantine

local messages = require "csm.protocols.reference.messages"

local ipairs = ipairs

local byzantine = {}

local roles = {}

-- Another well-formed identity of rank, attempt and proposer: the same
-- proposal with other data.
local function other_id(id, mark)
  local rank, attempt, proposer = messages.parse_id(id)
  return messages.proposal_id(rank or 0, attempt or 0, proposer or id, mark)
end

roles.equivocate = {
  -- every second peer gets a variant of the proposal (same rank, parent
  -- and attempt; other data, so another identity)
  announce_proposal = function(node, proposal, attempt, msg)
    local k = 0
    local variant = node.proposal(other_id(proposal:identity(), "'"), proposal:rank(), proposal.parent,
      proposal.attempt, proposal.proposer, attempt, "'")
    local other = node:seal { kind = "proposal", value = variant }
    for _, to in ipairs(node.names) do
      if to ~= node.name then
        k = k + 1
        node:send(to, k % 2 == 0 and other or msg)
      end
    end
  end,
}

roles.double_vote = {
  -- half the peers get a prevote for another identity
  announce_prevote = function(node, rank, attempt, id, msg)
    local other = node:seal { kind = "prevote", rank = rank, attempt = attempt, id = other_id(id, "*") }
    for k, to in ipairs(node.names) do
      if to ~= node.name then node:send(to, k % 2 == 0 and msg or other) end
    end
  end,
  -- the real vote to half the peers, a conflicting one to the rest, then a
  -- second vote to everyone
  announce_vote = function(node, msg)
    local v = msg.value
    local id, rank, attempt, parent = v:identity(), v:rank(), v.attempt, v.parent
    local conflicting = node:seal { kind = "vote",
                                    value = messages.vote(other_id(id, "~"), rank, attempt, parent) }
    for k, to in ipairs(node.names) do
      if to ~= node.name then node:send(to, k % 2 == 0 and msg or conflicting) end
    end
    node:publish(node:seal { kind = "vote", value = messages.vote(other_id(id, "*"), rank, attempt, parent) })
  end,
}

local function nothing() end

roles.silent = {
  publish = nothing,
  send = nothing,
  deliver = nothing,
  start = nothing,
}

--- The roles a node can play, "honest" first, in a list and as a set.
byzantine.role_names = { "honest", "equivocate", "double_vote", "silent" }
byzantine.roles = {}
for _, role in ipairs(byzantine.role_names) do byzantine.roles[role] = true end

--- Makes node play role (nothing changes for "honest"); returns node.
function byzantine.wrap(node, role)
  local overrides = roles[role]
  if overrides then
    for name, fn in pairs(overrides) do node[name] = fn end
  end
  node.role = role
  return node
end

return byzantine
