-- The original's transition table (the built-in one): each of its 37 transitions,
-- the table sm:transitions() lists, and what a self-transition re-runs.
local support = require "support"

local unpack = table.unpack or unpack

-- The original's rows, in its order (defineTransitions).
local SEED = {
  { "stopped", "start", "starting" },
  { "starting", "init_complete", "loading" },
  { "loading", "sync_timeout", "loading" },
  { "loading", "sync_complete", "collecting" },
  { "collecting", "collection_done", "liveness_check" },
  { "liveness_check", "prover_signal", "proving" },
  { "liveness_check", "liveness_timeout", "liveness_check" },
  { "proving", "proof_complete", "publishing" },
  { "proving", "publish_timeout", "voting" },
  { "publishing", "publish_complete", "voting" },
  { "publishing", "publish_timeout", "voting" },
  { "voting", "proposal_received", "voting" },
  { "voting", "quorum_reached", "finalizing" },
  { "voting", "voting_timeout", "voting" },
  { "finalizing", "aggregation_done", "verifying" },
  { "finalizing", "aggregation_timeout", "finalizing" },
  { "verifying", "verification_done", "collecting" },
  { "verifying", "verification_timeout", "verifying" },
}
for _, state in ipairs { "starting", "loading", "collecting", "liveness_check", "proving",
                         "publishing", "voting", "finalizing", "verifying" } do
  SEED[#SEED + 1] = { state, "stop", "stopping" }
  SEED[#SEED + 1] = { state, "induce_sync", "loading" }
end
SEED[#SEED + 1] = { "stopping", "cleanup_complete", "stopped" }

-- The events that take a fresh machine to each state.
local PATH = {
  stopped = {},
  starting = { "start" },
  loading = { "start", "init_complete" },
  collecting = { "start", "init_complete", "sync_complete" },
  liveness_check = { "start", "init_complete", "sync_complete", "collection_done" },
  proving = { "start", "init_complete", "sync_complete", "collection_done", "prover_signal" },
  publishing = { "start", "init_complete", "sync_complete", "collection_done", "prover_signal",
                 "proof_complete" },
  voting = { "start", "init_complete", "sync_complete", "collection_done", "prover_signal",
             "publish_timeout" },
  finalizing = { "start", "init_complete", "sync_complete", "collection_done", "prover_signal",
                 "publish_timeout", "quorum_reached" },
  verifying = { "start", "init_complete", "sync_complete", "collection_done", "prover_signal",
                "publish_timeout", "quorum_reached", "aggregation_done" },
  stopping = { "start", "stop" },
}

-- A machine on a sim world whose behaviours are all off, so only the
-- events sent here (and timers) move it; extra states are merged in.
local function quiet(extra)
  return support.quiet { states = extra }
end

local drive = support.drive

describe("csm", function()
  describe("machine", function()
    describe("transition", function()
      for _, row in ipairs(SEED) do
        local from, event, to = unpack(row)
        it(from .. " --" .. event .. "--> " .. to, function()
          local sm, world, log = quiet()
          drive(sm, world, unpack(PATH[from]))
          assert.are.equal(from, sm:state())
          local count = sm:transition_count()
          drive(sm, world, event)
          assert.are.equal(to, sm:state())
          assert.are.equal(count + 1, sm:transition_count())
          assert.are.equal(from .. " -" .. event .. "-> " .. to, log.transitions[#log.transitions])
          assert.are.equal(0, sm:inspect().events_dropped)
        end)
      end

      it("drops the events the original gives no transition", function()
        local dropped = {
          stopped = { "stop", "induce_sync", "cleanup_complete", "init_complete" },
          starting = { "start", "sync_complete" },
          liveness_check = { "liveness_check_received" },
          voting = { "vote_received", "publish_timeout" },
          verifying = { "confirmation_received" },
          stopping = { "stop", "induce_sync", "start" },
        }
        for state, events in pairs(dropped) do
          local sm, world, log = quiet()
          drive(sm, world, unpack(PATH[state]))
          local made = #log.transitions
          drive(sm, world, unpack(events))
          assert.are.equal(state, sm:state())
          assert.are.equal(made, #log.transitions)
          assert.are.equal(#events, sm:inspect().events_dropped, state)
        end
      end)
    end)

    describe("transitions", function()
      it("lists exactly the original's 37 rows, in the original's order", function()
        local sm = support.machine()
        local want = {}
        for i, row in ipairs(SEED) do
          want[i] = { from = row[1], event = row[2], to = row[3], guarded = false, taken = 0 }
        end
        assert.are.equal(37, #want)
        assert.are.same(want, sm:transitions())
      end)

      it("counts how often each edge was taken", function()
        local sm, world = support.machine { states = { loading = { behavior = false } } }
        sm:start()
        world:run_for(2.5)
        sm:send_event("sync_timeout")
        sm:send_event("sync_timeout")
        world:run("nowait")
        local taken = {}
        for _, row in ipairs(sm:transitions()) do taken[row.from .. " " .. row.event] = row.taken end
        assert.are.equal(1, taken["stopped start"])
        assert.are.equal(1, taken["starting init_complete"])
        assert.are.equal(2, taken["loading sync_timeout"])
        assert.are.equal(0, taken["loading sync_complete"])
      end)
    end)

    describe("self-transition", function()
      -- state, the self-transition's event, the state's timeout event
      local SELF = {
        { "loading", "sync_timeout", "sync_timeout" },
        { "liveness_check", "liveness_timeout", "liveness_timeout" },
        { "voting", "proposal_received", "voting_timeout" },
        { "voting", "voting_timeout", "voting_timeout" },
        { "finalizing", "aggregation_timeout", "aggregation_timeout" },
        { "verifying", "verification_timeout", "verification_timeout" },
      }
      for _, row in ipairs(SELF) do
        local state, event, on_timeout = unpack(row)
        it(state .. " --" .. event .. "--> " .. state ..
           " re-runs on_exit, on_enter, the behaviour and the timeout", function()
          local trail, ctxs = {}, {}
          local sm, world = quiet { [state] = {
            on_exit = function(_, ev) trail[#trail + 1] = "exit " .. ev end,
            on_enter = function(_, ev) trail[#trail + 1] = "enter " .. ev end,
            behavior = function(_, ctx)
              ctxs[#ctxs + 1] = ctx
              trail[#trail + 1] = "behavior"
            end,
          } }
          drive(sm, world, unpack(PATH[state]))
          local into = PATH[state][#PATH[state]]
          assert.are.same({ "enter " .. into, "behavior" }, trail)
          local timeout = sm:timing(state)
          world:run_for(timeout / 2)
          local count = sm:transition_count()
          drive(sm, world, event)
          assert.are.equal(state, sm:state())
          assert.are.equal(count + 1, sm:transition_count())
          assert.are.same({ "enter " .. into, "behavior", "exit " .. event, "enter " .. event,
                            "behavior" }, trail)
          assert.are.equal(2, #ctxs)
          assert.is_true(ctxs[1]:cancelled())
          assert.is_false(ctxs[2]:cancelled())
          -- the timeout counts from the self-transition, not from the first entry
          world:run_for(timeout * 0.75)
          assert.are.equal(count + 1, sm:transition_count())
          assert.are.equal(timeout * 0.75, sm:state_time())
          world:run_for(timeout * 0.5)
          assert.are.equal(count + 2, sm:transition_count())
          assert.are.equal(timeout * 0.25, sm:state_time())
          assert.are.same({ "exit " .. on_timeout, "enter " .. on_timeout, "behavior" },
            { trail[6], trail[7], trail[8] })
          assert.are.equal(state, sm:state())
        end)
      end
    end)
  end)
end)
