--- Equivocation, as an adversary: each node it controls sends every second
-- peer (in the order of the names, itself left out) a variant of its
-- proposal: the same rank, parent and attempt with other data, so under
-- another identity, signed with the node's own key. The reference
-- protocol's "equivocate" role, rebuilt on the message stream.
--
--   bin/csm experiment --adversary examples/adversaries/equivocate.lua --byzantine 1:adversary
local reference = require "csm.protocols.reference"

local function index_of(list, name)
  for i, v in ipairs(list) do if v == name then return i end end
end

return {
  name = "equivocate",
  message = function(a, m)
    if not m.controlled or m.kind ~= "proposal" then return nil end
    -- the k-th peer of the sender, counting from 1 and leaving it out
    local to, from = index_of(a.names, m.to), index_of(a.names, m.from)
    local k = to < from and to or to - 1
    if k % 2 ~= 0 then return nil end
    local value = m.msg.value
    local variant = reference.proposal(value:rank(), value.attempt, value.proposer, value.parent, value.offer,
      (value.data or "") .. "'")
    return { replace = a:seal(m.from, { kind = "proposal", value = variant }) }
  end,
}
