--- A protocol with a planted bug, to learn the lab on: the reference
-- protocol (csm.protocols.reference), except that a node forgets its lock,
-- and the polka it locked on, whenever it moves to a new attempt: it
-- prevotes the new attempt's top proposal whatever it voted for before. A
-- quorum in one attempt then no longer binds the next, and an attempt
-- that decided for some nodes can decide otherwise for the others. Two
-- copies of one node that hear different peers (Twins) show it, at rank 4:
--
--   bin/csm experiment --protocol examples/protocols/broken_lock.lua --twins n01 \
--     --twin-sides 'n01=n02,n03|n02,n04' --loss 0.3 --ranks 12 --seed 4
local reference = require "csm.protocols.reference"

local broken = { name = "broken_lock", roles = reference.roles, digest = reference.digest,
                 classify = reference.classify, content = reference.content }

function broken.node(options)
  local node = reference.node(options)
  function node:choose(rank)
    self.lock = nil -- the bug: a lock must outlive the attempt it was taken in
    local p = self:candidate(rank)
    return p and p:identity()
  end
  return node
end

return broken
