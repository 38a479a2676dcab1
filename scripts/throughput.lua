-- Throughput of one machine on a sim world: receive_vote calls (distinct
-- voters over 50 ranks, events handled) and self-transitions with a no-op
-- behaviour. A quick measurement; scripts/bench.lua is the full benchmark.
-- Usage: . scripts/env.sh [luajit]; lua5.4 scripts/throughput.lua
local csm = require "csm"
local clock = os.clock
local world = csm.sim{seed=1}
local sm = csm.new{ id = "me", initial = csm.value("g", 0), loop = world,
  states = { loading = { behavior = false } } }
sm:start(); world:run_for(2)  -- in loading, idle
-- receive_vote: distinct voters over 50 ranks
local votes, voters = {}, {}
for r = 1, 50 do votes[r] = csm.value("v" .. r, r) end
for i = 1, 4000 do voters[i] = "voter-" .. i end
local t0 = clock()
local n = 0
for r = 1, 50 do
  local v = votes[r]
  for i = 1, 4000 do sm:receive_vote("p", voters[i], v); n = n + 1 end
  world:run("nowait")
end
local dt = clock() - t0
print(string.format("receive_vote: %d calls in %.3fs = %.0f calls/s (entries %d)", n, dt, n / dt,
  sm:inspect().entries_held))
-- self-transitions: voting --voting_timeout--> voting with a no-op behaviour
local w2 = csm.sim{seed=1}
local sm2 = csm.new{ id = "me", initial = csm.value("g", 0), loop = w2,
  states = { voting = { behavior = function() end }, stopped = {}, loading = {behavior=false} },
  transitions = { {from = "stopped", event = "go", to = "voting"} } }
sm2:send_event("go")
w2:run("nowait")
local t1 = clock()
local N = 200000
for i = 1, N do sm2:send_event("voting_timeout") ; if i % 32 == 0 then w2:run("nowait") end end
w2:run("nowait")
local dt2 = clock() - t1
print(string.format("self-transitions: %d in %.3fs = %.0f/s (count %d)", N, dt2, N / dt2,
  sm2:transition_count()))
