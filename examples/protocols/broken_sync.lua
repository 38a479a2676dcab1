--- A protocol with a planted bug, to learn the lab on: the reference
-- protocol (csm.protocols.reference) with a sync that takes the states a
-- peer answers with on its word, without checking their certificates. One
-- byzantine peer that answers with a chain of its own making is then
-- believed:
--
--   bin/csm experiment --protocol examples/protocols/broken_sync.lua \
--     --adversary examples/adversaries/sync_liar.lua --byzantine 1:adversary --ranks 30
--
-- (The reference protocol adopts only certified states: q signed votes.)
local csm = require "csm"
local reference = require "csm.protocols.reference"

local broken = { name = "broken_sync", roles = reference.roles, digest = reference.digest,
                 classify = reference.classify, content = reference.content, needs = reference.needs,
                 seal = reference.seal }

function broken.node(options)
  local node = reference.node(options)
  local deliver = node.deliver
  function node:deliver(from, msg)
    -- the bug: an answer's states are kept unchecked, as if certified
    if type(msg) == "table" and msg.kind == "sync_response" and self.sync_waiting
      and type(msg.chain) == "table" then
      for rank, entry in pairs(msg.chain) do
        if type(rank) == "number" and type(entry) == "table" and csm.is_value(entry.value)
          and rank >= self.rank and not self.ahead[rank] then
          self.ahead[rank] = entry
        end
      end
    end
    return deliver(self, from, msg)
  end
  return node
end

return broken
