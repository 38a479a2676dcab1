--- Silence, as an adversary: whatever the nodes it controls send is
-- dropped. They still run and receive, unlike the "silent" kind, whose
-- nodes never start.
--
--   bin/csm experiment --adversary examples/adversaries/silent.lua --byzantine 1:adversary
return {
  name = "silent",
  message = function(_, m)
    if m.controlled then return "drop" end
  end,
}
