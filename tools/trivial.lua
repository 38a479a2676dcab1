-- A cluster of csm machines whose providers do the least a round needs:
-- csm's machinery alone, for tools/icount.sh and tools/bench.lua (not a
-- protocol: it has no faults to survive and no messages to check).
--
--   local trivial = dofile("tools/trivial.lua")
--   local world, machines, heights = trivial.cluster(4)
--   for _, sm in ipairs(machines) do sm:start() end
--   world:run_until(function() return heights.lowest >= 100 end, 36000)
local csm = require "csm"

local trivial = {}

--- n machines (named n1..n4: n at most 4) on a new sim world: the first
-- leader proposes at once, everyone votes for its proposal, a quorum is any
-- three votes, and messages are delivered by the world at the same instant.
-- Returns the world, the machines and heights (per machine, the highest
-- rank finalized; heights.lowest, the lowest of them).
function trivial.cluster(n)
  local world = csm.sim { seed = 1, steps_per_instant = math.huge }
  local names, machines, heights = { "n1", "n2", "n3", "n4" }, {}, { lowest = 0 }
  local function broadcast(from, method, a, b, c)
    for i = 1, n do
      if i ~= from then
        local sm = machines[i]
        world:after(0, function() sm[method](sm, a, b, c) end)
      end
    end
  end
  local genesis = csm.value("genesis", 0)
  for i = 1, n do
    local name = names[i]
    local p = {
      sync = { synchronize = function(_, existing) return existing end },
      leader = {
        get_next_leaders = function() return names end,
        prove_next_state = function(_, prior, _, ctx)
          if i > 1 then return ctx:await(function() end) end -- until the state is left
          return csm.value("s", prior:rank() + 1)
        end,
      },
      liveness = {
        collect = function() return csm.value(name, machines[i]:active_state():rank() + 1) end,
        send_liveness = function(_, _, collected) broadcast(i, "receive_liveness_check", name, collected) end,
      },
      voting = {
        send_proposal = function(_, proposal) broadcast(i, "receive_proposal", name, proposal) end,
        decide_and_send_vote = function(_, proposals)
          local vote = proposals.n1
          broadcast(i, "receive_vote", "n1", name, vote)
          return "n1", vote
        end,
        send_vote = function(_, vote) broadcast(i, "receive_vote", "n1", name, vote) return name end,
        is_quorum = function(_, votes)
          local k = 0
          for _ in pairs(votes) do k = k + 1 end
          return k >= 3
        end,
        finalize_votes = function(_, proposals) return proposals.n1, "n1" end,
        send_confirmation = function(_, finalized)
          local rank = finalized:rank()
          heights[i] = rank
          -- the lowest height, kept here so that the run's predicate is one comparison
          if rank > heights.lowest then
            local low = rank
            for k = 1, n do if heights[k] < low then low = heights[k] end end
            heights.lowest = low
          end
          broadcast(i, "receive_confirmation", name, finalized)
        end,
      },
    }
    heights[i] = 0
    machines[i] = csm.new { id = name, initial = genesis, loop = world, emit_on_send = true,
      minimum_provers = 3, sync = p.sync, leader = p.leader, liveness = p.liveness, voting = p.voting }
  end
  return world, machines, heights
end

return trivial
