--- A protocol with a planted bug, to learn the lab on: the minimal protocol
-- (csm.protocols.minimal) with its quorum cut from 2f + 1 to f + 1. Two
-- groups that cannot hear each other then each finalize a rank of their
-- own, and the lab reports the agreement violation:
--
--   bin/csm experiment --protocol examples/protocols/broken_quorum.lua \
--     --partition 0:30:2\|2 --ranks 5
--
-- With the quorum it should have, the same run finalizes nothing while the
-- partition lasts, and then goes on in agreement.
local minimal = require "csm.protocols.minimal"

local broken = { name = "broken_quorum" }

function broken.node(options)
  local n = #options.names
  local f = math.floor((n - 1) / 3)
  local copy = {}
  for k, v in pairs(options) do copy[k] = v end
  copy.quorum = f + 1 -- the bug: n - f (or 2f + 1) votes are needed for two quorums to meet
  return minimal.node(copy)
end

return broken
