--- Byzantine roles for the reference protocol, kept apart from the honest
-- node: each role wraps a node, replacing what it sends. The honest node
-- sends its proposals, prevotes and votes through announce_proposal,
-- announce_prevote and announce_vote, and everything through publish and
-- send; a role overrides some of these on the node itself.
--
--   equivocate   a different proposal to every other peer
--   double_vote  conflicting prevotes and votes to different peers, and a
--                second vote to everyone
--   silent       never sends, never listens, never starts
-- @module csm.protocols.reference.byzantine

local csm = require "csm"

local ipairs = ipairs

local byzantine = {}

local roles = {}

roles.equivocate = {
  -- every second peer gets a variant of the proposal (same rank and parent,
  -- another identity)
  announce_proposal = function(node, proposal, attempt)
    local k = 0
    for _, to in ipairs(node.names) do
      if to ~= node.name then
        k = k + 1
        local variant = proposal
        if k % 2 == 0 then
          variant = node.proposal(proposal:identity() .. "'", proposal:rank(), proposal.parent,
            proposal.attempt, node.name, attempt)
        end
        node:send(to, { kind = "proposal", value = variant })
      end
    end
  end,
}

roles.double_vote = {
  -- half the peers get a prevote for another identity
  announce_prevote = function(node, rank, attempt, id)
    for k, to in ipairs(node.names) do
      if to ~= node.name then
        node:send(to, { kind = "prevote", rank = rank, attempt = attempt,
                        id = k % 2 == 0 and id or id .. "*" })
      end
    end
  end,
  -- the real vote to half the peers, a conflicting one to the rest, then a
  -- second vote to everyone
  announce_vote = function(node, msg)
    local id, rank, attempt, proposer = msg.value:identity(), msg.value:rank(), msg.attempt, msg.proposer
    for k, to in ipairs(node.names) do
      if to ~= node.name then
        node:send(to, k % 2 == 0 and msg or { kind = "vote", proposer = proposer, attempt = attempt,
          value = csm.value(id .. "~", rank, { attempt = attempt }) })
      end
    end
    node:publish { kind = "vote", proposer = proposer, attempt = attempt,
                   value = csm.value(id .. "*", rank, { attempt = attempt }) }
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
