--- A protocol with a planted bug, to learn the lab on: the reference
-- protocol (csm.protocols.reference) with a sync that adopts a state once
-- f + 1 *answers* agree on it, whoever sent them, rather than f + 1
-- distinct peers. One byzantine peer that answers n - 1 times is then
-- "f + 1 peers":
--
--   bin/csm experiment --protocol examples/protocols/broken_sync.lua \
--     --adversary examples/adversaries/sync_liar.lua --byzantine 1:adversary --ranks 30
--
-- (The reference protocol counts answers too, for now: the lab reports the
-- same attack against it. This file keeps the bug when that is mended.)
local reference = require "csm.protocols.reference"

local broken = { name = "broken_sync", roles = reference.roles, digest = reference.digest,
                 classify = reference.classify, content = reference.content }

function broken.node(options)
  local node = reference.node(options)
  -- the bug: every answer vouches for itself, so one peer can vouch n - 1 times
  node.sync_voucher = function(_, i) return i end
  return node
end

return broken
