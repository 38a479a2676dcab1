--- A sync liar: the nodes it controls answer every sync request n - 1
-- times with a forged chain (states of their own making for the ranks asked
-- for), and equivocate their proposals so that honest nodes fall behind and
-- sync. A protocol that counts answers rather than distinct peers, or takes
-- answers nobody signed, adopts the forgery; the lab reports it as an
-- agreement violation.
--
--   bin/csm experiment --adversary examples/adversaries/sync_liar.lua --byzantine 1:adversary --ranks 30
local csm = require "csm"

local equivocate = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "equivocate.lua")

-- How many ranks past the one asked for a forged answer covers.
local FORGED_RANKS = 4

return {
  name = "sync_liar",
  message = function(a, m)
    if m.kind == "sync_request" and a:is_controlled(m.to) and not a:is_controlled(m.from)
      and type(m.msg.rank) == "number" then
      local liar, base = m.to, m.msg.rank
      local chain, parent = {}, nil
      for r = base + 1, base + FORGED_RANKS do
        local id = string.format("%d.0:%s", r, liar)
        chain[r] = csm.value(id .. "#forged", r, { parent = parent, attempt = 0, proposer = liar, offer = 0 })
        parent = id .. "#forged"
      end
      for _ = 1, a.n - 1 do a:send(liar, m.from, { kind = "sync_response", chain = chain }) end
      a:note("lied", { to = m.from, from_rank = base + 1, ranks = FORGED_RANKS })
      return nil
    end
    return equivocate.message(a, m)
  end,
}
