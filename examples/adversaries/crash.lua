--- A crash, as an adversary: from AT virtual seconds on, the nodes it
-- controls send nothing and hear nothing, as if they had stopped (they
-- still run; the "crash" kind closes its nodes' machines instead). With
-- RESTART set, they come back that many seconds later, with everything
-- they had, as after a long pause.
--
--   bin/csm experiment --adversary examples/adversaries/crash.lua --byzantine 1:adversary
local AT, RESTART = 5, nil

return {
  name = "crash",
  message = function(a, m)
    local t = a:now()
    if t < AT or (RESTART and t >= AT + RESTART) then return nil end
    if m.controlled or a:is_controlled(m.to) then return "drop" end
  end,
}
