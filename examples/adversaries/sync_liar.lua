--- A sync liar: the nodes it controls answer every sync request n - 1
-- times with a forged chain (states of their own making for the ranks asked
-- for, each with a certificate of the one vote they can sign), and
-- equivocate their proposals so that honest nodes fall behind and sync. A
-- protocol that counts answers rather than distinct peers, or takes
-- answers nobody signed, adopts the forgery; the lab reports it as an
-- agreement violation.
--
--   bin/csm experiment --adversary examples/adversaries/sync_liar.lua --byzantine 1:adversary --ranks 30
local csm = require "csm"
local reference = require "csm.protocols.reference"
local messages = require "csm.protocols.reference.messages"

local equivocate = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "equivocate.lua")

-- How many ranks past the one asked for a forged answer covers.
local FORGED_RANKS = 4

-- The identity finalized at each rank, as confirmations in flight show it:
-- a forged chain starts on the asker's own last state.
local finalized = {}

return {
  name = "sync_liar",
  message = function(a, m)
    if m.kind == "confirmation" and csm.is_value(m.msg.value) then
      finalized[m.msg.value:rank()] = m.msg.value:identity()
    end
    if m.kind == "sync_request" and a:is_controlled(m.to) and not a:is_controlled(m.from)
      and type(m.msg.rank) == "number" then
      local liar, base = m.to, m.msg.rank
      local signer = a:signer(liar)
      local chain, parent = {}, finalized[base] or "genesis"
      for r = base + 1, base + FORGED_RANKS do
        local state = reference.proposal(r, 0, liar, parent, 0, "forged")
        local sig = signer:sign(messages.vote_bytes(r, 0, state:identity(), parent))
        chain[r] = { value = state, cert = { attempt = 0, sigs = { [liar] = sig } } }
        parent = state:identity()
      end
      for _ = 1, a.n - 1 do
        a:send(liar, m.from, { kind = "sync_response", rank = base + FORGED_RANKS + 1, chain = chain })
      end
      a:note("lied", { to = m.from, from_rank = base + 1, ranks = FORGED_RANKS })
      return nil
    end
    return equivocate.message(a, m)
  end,
}
