--- A replayer: the network delivers old messages again. Each copy in
-- flight is, with probability REPLAY, delivered once more 0.5 to 10 virtual
-- seconds later, whoever sent it (a network may always do this: a
-- protocol must take an old message for what it is).
--
--   bin/csm experiment --adversary examples/adversaries/replayer.lua
local REPLAY = 0.1

return {
  name = "replayer",
  message = function(a, _)
    if a:random() < REPLAY then return { replay = 0.5 + 9.5 * a:random() } end
  end,
}
