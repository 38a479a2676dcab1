--- An adversary that lets every message pass: a run with it is the run
-- without it, byte for byte (the header aside). A starting point to copy.
--
--   bin/csm experiment --adversary examples/adversaries/pass.lua
return {
  name = "pass",
  message = function(_, _) return nil end,
}
