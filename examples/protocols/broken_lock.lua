--- A protocol with a planted bug, to learn the lab on: the reference
-- protocol (csm.protocols.reference), except that a node forgets its lock,
-- and the polka it locked on, whenever it moves to a new attempt: it
-- prevotes the new attempt's top proposal whatever it voted for before. A
-- quorum in one attempt then no longer binds the next, and an attempt
-- that decided for some nodes can decide otherwise for the others (it
-- also refuses the certificate of a peer that decided the rank it is
-- deciding, which would otherwise bring it the decision). Two
-- copies of one node that hear different peers (Twins) show it, at rank 4:
--
--   bin/csm experiment --protocol examples/protocols/broken_lock.lua --twins n01 \
--     --twin-sides 'n01=n02,n03|n02,n04' --loss 0.3 --ranks 12 --seed 4
local csm = require "csm"
local reference = require "csm.protocols.reference"

local broken = { name = "broken_lock", roles = reference.roles, digest = reference.digest,
                 classify = reference.classify, content = reference.content, needs = reference.needs,
                 seal = reference.seal }

function broken.node(options)
  local node = reference.node(options)
  function node:choose(rank)
    self.lock = nil -- the bug: a lock must outlive the attempt it was taken in
    local p = self:candidate(rank)
    return p and p:identity()
  end
  -- and so must the polka: a leader re-offers it, a node prevotes it
  function node:valid()
    local id = self:polka_in(self.tally[self.attempt])
    return id, id and self.attempt
  end
  -- a certificate sent by a peer that decided would mend it: this node
  -- takes none for the rank it is deciding, and counts only its own tally
  local deliver = node.deliver
  function node:deliver(from, msg)
    if type(msg) == "table" and msg.kind == "confirmation" and csm.is_value(msg.value)
      and msg.value:rank() == self.rank then
      return
    end
    return deliver(self, from, msg)
  end
  return node
end

return broken
