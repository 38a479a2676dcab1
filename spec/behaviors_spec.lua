-- The built-in state behaviours (lua/csm/behaviors.lua): what each does on
-- success and on each provider error, as the original's do, plus the fatal
-- path (a provider that raises or returns the wrong type) and providers
-- that yield through their ctx.
local csm = require "csm"
local support = require "support"

local unpack = table.unpack or unpack

local timeline, enter, bystander = support.timeline, support.enter, support.bystander

local function value(identity, rank)
  return csm.value(identity, rank)
end


describe("csm.behaviors", function()
  describe("starting", function()
    it("has no behaviour: its 1 s timeout sends init_complete", function()
      local sm, world, log = support.machine { states = { loading = { behavior = false } } }
      local tl = timeline(sm, world)
      sm:start()
      world:run_for(5)
      assert.are.same({ "0 stopped -start-> starting", "1 starting -init_complete-> loading" }, tl)
      assert.are.same({}, log.providers.calls)
    end)

    it("follows the original: a full round calls the providers in order at one instant", function()
      local sm, world, log = support.machine {}
      local tl = timeline(sm, world)
      sm:add_listener(function(from, to)
        if from == "verifying" and to == "collecting" then sm:close() end
      end)
      sm:start()
      world:run_for(5)
      assert.are.same({
        "0 stopped -start-> starting",
        "1 starting -init_complete-> loading",
        "1 loading -sync_complete-> collecting",
        "1 collecting -collection_done-> liveness_check",
        "1 liveness_check -prover_signal-> proving",
        "1 proving -proof_complete-> publishing",
        "1 publishing -publish_complete-> voting",
        "1 voting -quorum_reached-> finalizing",
        "1 finalizing -aggregation_done-> verifying",
        "1 verifying -verification_done-> collecting",
      }, tl)
      assert.are.same({
        "sync.synchronize", "leader.get_next_leaders",
        "liveness.collect", "leader.get_next_leaders", "liveness.send_liveness",
        "leader.get_next_leaders", "leader.prove_next_state",
        "voting.send_proposal",
        "voting.decide_and_send_vote", "voting.is_quorum",
        "voting.finalize_votes",
        "voting.send_confirmation",
      }, log.providers.calls)
      assert.are.equal("p1", sm:active_state():identity())
      assert.are.equal(1, sm:active_state():rank())
      assert.are.same({}, log.errors)
    end)
  end)

  describe("loading", function()
    it("synchronizes from the active state, adopts the result and completes as a next leader", function()
      local seen = {}
      local sm, world, log = enter("loading", { overrides = {
        sync = { synchronize = function(_, existing, ctx)
          seen.existing, seen.ctx, seen.cancelled = existing, ctx, ctx:cancelled()
          return value("synced", 5)
        end },
        leader = { get_next_leaders = function(_, prior)
          seen.prior = prior
          return { "x", csm.peer("n1") }
        end },
      } })
      world:run_for(0.5)
      assert.are.same({ "0 stopped -start-> loading", "0 loading -sync_complete-> collecting" },
        log.timeline)
      assert.are.same({ "sync.synchronize", "leader.get_next_leaders" }, log.providers.calls)
      assert.are.equal("genesis", seen.existing:identity())
      assert.are.equal("synced", seen.prior:identity())
      assert.are.equal("synced", sm:active_state():identity())
      assert.are.equal(5, sm:active_state():rank())
      assert.is_false(seen.cancelled)
      assert.is_true(seen.ctx:cancelled()) -- the state was left
      assert.are.same({}, log.errors)
    end)

    it("keeps the existing state when synchronize returns nothing", function()
      local prior
      local sm, world, log = enter("loading", { overrides = {
        sync = { synchronize = function() end },
        leader = { get_next_leaders = function(_, p) prior = p; return { "n1" } end },
      } })
      world:run_for(0.5)
      assert.are.equal("genesis", sm:active_state():identity())
      assert.are.equal("genesis", prior:identity())
      assert.are.equal("0 loading -sync_complete-> collecting", log.timeline[2])
      assert.are.same({}, log.errors)
    end)

    it("re-syncs every sync_retry seconds until this node is among the next leaders", function()
      local calls = 0
      local _, world, log = enter("loading", { overrides = {
        leader = { get_next_leaders = function()
          calls = calls + 1
          return calls < 3 and { "x", "y" } or { "y", "n1" }
        end },
      } })
      world:run_for(25)
      assert.are.same({
        "0 stopped -start-> loading",
        "10 loading -sync_timeout-> loading",
        "20 loading -sync_timeout-> loading",
        "20 loading -sync_complete-> collecting",
      }, log.timeline)
      assert.are.same({
        "sync.synchronize", "leader.get_next_leaders", "sync.synchronize",
        "leader.get_next_leaders", "sync.synchronize", "leader.get_next_leaders",
      }, log.providers.calls)
      assert.are.same({}, log.errors)
    end)

    it("traces a synchronize error, sleeps sync_retry, then sends sync_timeout", function()
      local first = true
      local sm, world, log = enter("loading", { timing = { sync_retry = 3 }, overrides = {
        sync = { synchronize = function(_, existing)
          if first then first = false; return nil, "peers offline" end
          return existing
        end },
      } })
      world:run_for(5)
      assert.are.same({ "error encountered in loading: peers offline" }, log.errors)
      assert.are.same({
        "0 stopped -start-> loading",
        "3 loading -sync_timeout-> loading",
        "3 loading -sync_complete-> collecting",
      }, log.timeline)
      assert.are.same({ "sync.synchronize", "sync.synchronize", "leader.get_next_leaders" },
        log.providers.calls)
      assert.are.equal("genesis", sm:active_state():identity())
    end)

    it("treats a result after the state as an error and does not adopt the state", function()
      local sm, world, log = enter("loading", { timing = { sync_retry = 3 }, overrides = {
        sync = { synchronize = function() return value("partial", 9), "incomplete" end },
      } })
      world:run_for(2)
      assert.are.same({ "error encountered in loading: incomplete" }, log.errors)
      assert.are.equal("genesis", sm:active_state():identity())
      assert.are.same({ "0 stopped -start-> loading" }, log.timeline)
    end)

    it("traces a get_next_leaders error, sleeps sync_retry, then sends sync_timeout", function()
      local _, world, log = enter("loading", { overrides = {
        leader = { get_next_leaders = function() return nil, "no leader set" end },
      } })
      world:run_for(15)
      assert.are.same({ "error encountered in loading: no leader set",
                        "error encountered in loading: no leader set" }, log.errors)
      assert.are.same({ "0 stopped -start-> loading", "10 loading -sync_timeout-> loading" },
        log.timeline)
    end)

    it("does nothing without a sync provider, until its 36000 s timeout", function()
      local world = csm.sim { seed = 1 }
      local sm = csm.new { id = "n1", loop = world, initial = value("genesis", 0),
        transitions = { { from = "stopped", event = "start", to = "loading" } },
        states = { collecting = { behavior = false } } }
      local tl = timeline(sm, world)
      sm:start()
      world:run_for(40000)
      assert.are.same({ "0 stopped -start-> loading", "36000 loading -sync_timeout-> loading" }, tl)
      sm:close()
    end)
  end)

  describe("collecting", function()
    it("collects, learns the leaders, announces liveness, records its own, then collection_done", function()
      local seen = {}
      local collected = value("live-n1", 1)
      local sm, world, log = enter("collecting", {
        setup = function(sm)
          sm:set_chosen_proposer("old")
          sm:set_next_provers({ "old" })
        end,
        overrides = {
          liveness = {
            collect = function(_, ctx) seen.ctx = ctx; return collected end,
            send_liveness = function(_, prior, c)
              seen.prior, seen.collected = prior, c
            end,
          },
          leader = { get_next_leaders = function(_, prior)
            seen.leaders_prior = prior
            return { "n2", "n1" }
          end },
        },
      })
      world:run_for(0.5)
      assert.are.same({ "liveness.collect", "leader.get_next_leaders", "liveness.send_liveness" },
        log.providers.calls)
      assert.are.equal("genesis", seen.leaders_prior:identity())
      assert.are.equal("genesis", seen.prior:identity())
      assert.are.equal(collected, seen.collected)
      assert.is_true(rawequal(collected, sm:collected()))
      assert.are.same({ csm.peer("n2"), csm.peer("n1") }, sm:next_provers())
      assert.is_nil(sm:chosen_proposer())
      assert.is_true(rawequal(collected, sm:get("liveness", 1, "n1")))
      assert.are.same({ "0 stopped -start-> collecting",
                        "0 collecting -collection_done-> liveness_check" }, log.timeline)
      -- liveness_check_received has no transition (as in the original): dropped
      assert.are.equal(1, sm:inspect().events_dropped)
      assert.are.same({}, log.errors)
    end)

    it("does not record its own liveness without emit_on_send", function()
      local sm, world, log = enter("collecting", { emit_on_send = false })
      world:run_for(0.5)
      assert.are.equal(0, sm:count("liveness", 1))
      assert.are.equal(0, sm:inspect().events_dropped)
      assert.are.equal("0 collecting -collection_done-> liveness_check", log.timeline[2])
    end)

    it("induces a sync when collect fails", function()
      local sm, world, log = enter("collecting", { overrides = {
        liveness = { collect = function() return nil, "mempool closed" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in collecting: mempool closed" }, log.errors)
      assert.are.same({ "liveness.collect" }, log.providers.calls)
      assert.are.same({ "0 stopped -start-> collecting", "0 collecting -induce_sync-> loading" },
        log.timeline)
      assert.is_nil(sm:collected())
    end)

    it("induces a sync when get_next_leaders fails, keeping what it collected", function()
      local sm, world, log = enter("collecting", { overrides = {
        leader = { get_next_leaders = function() return nil, "no leader set" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in collecting: no leader set" }, log.errors)
      assert.are.same({ "liveness.collect", "leader.get_next_leaders" }, log.providers.calls)
      assert.are.equal("0 collecting -induce_sync-> loading", log.timeline[2])
      assert.are.equal("live-n1", sm:collected():identity())
      assert.are.same({}, sm:next_provers())
    end)

    it("induces a sync when send_liveness fails, recording no liveness", function()
      local sm, world, log = enter("collecting", { overrides = {
        liveness = { send_liveness = function() return nil, "unreachable" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in collecting: unreachable" }, log.errors)
      assert.are.equal("0 collecting -induce_sync-> loading", log.timeline[2])
      assert.are.equal(0, sm:count("liveness", 1))
    end)

    it("treats a non-nil result after send_liveness's as an error", function()
      local _, world, log = enter("collecting", { overrides = {
        liveness = { send_liveness = function() return true, "half sent" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in collecting: half sent" }, log.errors)
      assert.are.equal("0 collecting -induce_sync-> loading", log.timeline[2])
    end)

    it("induces a sync on its 10 s timeout when collect does not return", function()
      local _, world, log = enter("collecting", { overrides = {
        liveness = { collect = function(_, ctx) ctx:sleep(1000) end },
      } })
      world:run_for(12)
      assert.are.same({ "0 stopped -start-> collecting", "10 collecting -induce_sync-> loading" },
        log.timeline)
      assert.are.same({}, log.errors)
    end)
  end)

  describe("liveness_check", function()
    local function ready(sm)
      sm:set_collected(value("live-n1", 1))
      sm:set_next_provers({ "n1", "n2", "n3" })
      assert(sm:store("liveness", 1, "n1", value("live-n1", 1)))
    end

    it("sends prover_signal at once when minimum_provers peers announced the next rank", function()
      local _, world, log = enter("liveness_check", { minimum_provers = 2, setup = function(sm)
        ready(sm)
        assert(sm:store("liveness", 1, "n2", value("live-n2", 1)))
      end })
      world:run_for(0.5)
      assert.are.same({ "0 stopped -start-> liveness_check",
                        "0 liveness_check -prover_signal-> proving" }, log.timeline)
      assert.are.same({}, log.providers.calls)
      assert.truthy(support.find(log.traces, "sufficient liveness checks, sending prover signal"))
    end)

    it("counts only announcements for the active rank + 1", function()
      local sm, world, log = enter("liveness_check", { minimum_provers = 2, setup = function(sm)
        ready(sm)
        assert(sm:store("liveness", 2, "n2", value("live-n2", 2)))
      end })
      world:run_for(0.5)
      assert.are.equal("liveness_check", sm:state())
      assert.truthy(support.find(log.traces, "insufficient liveness checks: need 2, have 1"))
    end)

    it("re-fetches the leaders when it knows fewer than minimum_provers", function()
      local prior
      local sm, world, log = enter("liveness_check", { minimum_provers = 2,
        setup = function(sm)
          ready(sm)
          sm:set_next_provers({ "n1" })
          assert(sm:store("liveness", 1, "n2", value("live-n2", 1)))
        end,
        overrides = { leader = { get_next_leaders = function(_, p)
          prior = p
          return { "n1", "n2", "n4" }
        end } } })
      world:run_for(0.5)
      assert.are.same({ "leader.get_next_leaders" }, log.providers.calls)
      assert.are.equal("genesis", prior:identity())
      assert.are.same({ csm.peer("n1"), csm.peer("n2"), csm.peer("n4") }, sm:next_provers())
      assert.truthy(support.find(log.traces, "insufficient provers, re-fetching leaders"))
      assert.are.equal("0 liveness_check -prover_signal-> proving", log.timeline[2])
    end)

    it("induces a sync when re-fetching the leaders fails", function()
      local _, world, log = enter("liveness_check", { minimum_provers = 5, setup = ready,
        overrides = { leader = { get_next_leaders = function() return nil, "no leader set" end } } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in liveness_check: no leader set" }, log.errors)
      assert.are.equal("0 liveness_check -induce_sync-> loading", log.timeline[2])
    end)

    it("re-announces every liveness_resend and re-runs on its 2 s timeout", function()
      local sent = {}
      local world = csm.sim { seed = 1 }
      local _, _, log = enter("liveness_check", { loop = world, minimum_provers = 2, setup = ready,
        timing = { liveness_resend = 0.75 },
        overrides = { liveness = { send_liveness = function(_, prior, collected)
          sent[#sent + 1] = string.format("%g %s %s", world:now(), prior:identity(),
            collected:identity())
        end } } })
      world:run_for(4.5)
      -- each run re-announces on its own clock, from entry
      assert.are.same({ "0.75 genesis live-n1", "1.5 genesis live-n1",
                        "2.75 genesis live-n1", "3.5 genesis live-n1" }, sent)
      assert.are.same({
        "0 stopped -start-> liveness_check",
        "2 liveness_check -liveness_timeout-> liveness_check",
        "4 liveness_check -liveness_timeout-> liveness_check",
      }, log.timeline)
      assert.are.same({}, log.errors)
    end)

    it("induces a sync when a re-announcement fails", function()
      local _, world, log = enter("liveness_check", { minimum_provers = 2, setup = ready,
        overrides = { liveness = { send_liveness = function() return nil, "unreachable" end } } })
      world:run_for(1.5)
      assert.are.same({ "error encountered in liveness_check: unreachable" }, log.errors)
      assert.are.equal("1 liveness_check -induce_sync-> loading", log.timeline[2])
    end)

    it("induces a sync when nothing was collected", function()
      local _, world, log = enter("liveness_check", { setup = function(sm)
        sm:set_next_provers({ "n1" })
      end })
      world:run_for(0.5)
      assert.are.same({ "error encountered in liveness_check: nothing collected" }, log.errors)
      assert.are.equal("0 liveness_check -induce_sync-> loading", log.timeline[2])
    end)
  end)

  describe("proving", function()
    local collected = value("live-n1", 1)
    local function ready(sm) sm:set_collected(collected) end

    it("proves, files the proof as its own proposal for its rank, then proof_complete", function()
      local seen = {}
      local sm, world, log = enter("proving", { setup = ready, overrides = { leader = {
        get_next_leaders = function(_, prior) seen.leaders_prior = prior; return { "n1" } end,
        prove_next_state = function(_, prior, c, ctx)
          seen.prior, seen.collected, seen.ctx = prior, c, ctx
          return value("proof", 1)
        end,
      } } })
      world:run_for(0.5)
      assert.are.same({ "leader.get_next_leaders", "leader.prove_next_state" }, log.providers.calls)
      assert.are.equal("genesis", seen.leaders_prior:identity())
      assert.are.equal("genesis", seen.prior:identity())
      assert.is_true(rawequal(collected, seen.collected))
      assert.is_nil(sm:collected())
      assert.are.equal("proof", sm:get("proposals", 1, "n1"):identity())
      assert.are.same({ "0 stopped -start-> proving", "0 proving -proof_complete-> publishing" },
        log.timeline)
      assert.are.same({}, log.errors)
    end)

    it("induces a sync, untraced, when nothing was collected", function()
      local _, world, log = enter("proving")
      world:run_for(0.5)
      assert.are.same({}, log.providers.calls)
      assert.are.same({}, log.errors)
      assert.are.equal("0 proving -induce_sync-> loading", log.timeline[2])
    end)

    it("traces 'could not obtain leaders' when get_next_leaders fails", function()
      local sm, world, log = enter("proving", { setup = ready, overrides = {
        leader = { get_next_leaders = function() return nil, "no leader set" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "could not obtain leaders: no leader set" }, log.errors)
      assert.are.same({ "leader.get_next_leaders" }, log.providers.calls)
      assert.are.equal("0 proving -induce_sync-> loading", log.timeline[2])
      assert.is_nil(sm:collected())
    end)

    it("induces a sync when prove_next_state fails", function()
      local sm, world, log = enter("proving", { setup = ready, overrides = {
        leader = { prove_next_state = function() return nil, "no proof" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in proving: no proof" }, log.errors)
      assert.are.equal("0 proving -induce_sync-> loading", log.timeline[2])
      assert.are.equal(0, sm:count("proposals", 1))
    end)

    it("sends publish_timeout after 120 s when neither a proof nor a leader's proposal comes", function()
      local _, world, log = enter("proving", { setup = ready, overrides = {
        leader = { prove_next_state = function(_, _, _, ctx) ctx:sleep(1000) end },
      } })
      world:run_for(130)
      assert.are.same({ "0 stopped -start-> proving", "120 proving -publish_timeout-> voting" },
        log.timeline)
    end)
  end)

  describe("publishing", function()
    it("sends its own proposal for the next rank, then publish_complete", function()
      local mine = value("p1", 1)
      local sent
      local _, world, log = enter("publishing", {
        setup = function(sm)
          assert(sm:store("proposals", 1, "n2", value("other", 1)))
          assert(sm:store("proposals", 1, "n1", mine))
        end,
        overrides = { voting = { send_proposal = function(_, p) sent = p end } },
      })
      world:run_for(0.5)
      assert.is_true(rawequal(mine, sent))
      assert.are.same({ "voting.send_proposal" }, log.providers.calls)
      assert.are.same({ "0 stopped -start-> publishing", "0 publishing -publish_complete-> voting" },
        log.timeline)
    end)

    it("without its own proposal sends nothing and leaves on publish_timeout after 1 s", function()
      local _, world, log = enter("publishing", { setup = function(sm)
        assert(sm:store("proposals", 1, "n2", value("other", 1)))
      end })
      world:run_for(2)
      assert.are.same({}, log.providers.calls)
      assert.are.same({ "0 stopped -start-> publishing", "1 publishing -publish_timeout-> voting" },
        log.timeline)
    end)

    it("induces a sync when send_proposal fails", function()
      local _, world, log = enter("publishing", {
        setup = function(sm) assert(sm:store("proposals", 1, "n1", value("p1", 1))) end,
        overrides = { voting = { send_proposal = function() return nil, "broadcast failed" end } },
      })
      world:run_for(0.5)
      assert.are.same({ "error encountered in publishing: broadcast failed" }, log.errors)
      assert.are.equal("0 publishing -induce_sync-> loading", log.timeline[2])
    end)
  end)

  describe("voting", function()
    local function proposals(sm)
      assert(sm:store("proposals", 1, "n1", value("p1", 1)))
      assert(sm:store("proposals", 1, "n2", value("p1b", 1)))
      assert(sm:store("proposals", 2, "n3", value("p2", 2)))
    end

    it("decides on clones of the next rank's proposals, records its vote, then checks quorum", function()
      local seen = {}
      local vote = value("p1b", 1)
      local sm, world, log = enter("voting", { setup = proposals, overrides = { voting = {
        decide_and_send_vote = function(_, ps) seen.proposals = ps; return "n2", vote end,
        is_quorum = function(_, votes) seen.votes = votes; return true end,
      } } })
      world:run_for(0.5)
      assert.are.same({ "voting.decide_and_send_vote", "voting.is_quorum" }, log.providers.calls)
      local keys = {}
      for k in pairs(seen.proposals) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.are.same({ "n1", "n2" }, keys)
      assert.are.equal(sm:get("proposals", 1, "n1"), seen.proposals.n1)
      assert.is_false(rawequal(sm:get("proposals", 1, "n1"), seen.proposals.n1))
      assert.are.equal(csm.peer("n2"), sm:chosen_proposer())
      assert.is_true(rawequal(vote, sm:get("votes", 1, "n1")))
      assert.are.equal(vote, seen.votes.n1)
      assert.is_false(rawequal(vote, seen.votes.n1))
      assert.are.same({ "0 stopped -start-> voting", "0 voting -quorum_reached-> finalizing" },
        log.timeline)
      assert.truthy(support.find(log.traces, "quorum reached"))
    end)

    it("does not vote again once a proposer is chosen", function()
      local _, world, log = enter("voting", { setup = function(sm)
        proposals(sm)
        sm:set_chosen_proposer("n1")
        assert(sm:store("votes", 1, "n1", value("p1", 1)))
      end })
      world:run_for(0.5)
      assert.are.same({ "voting.is_quorum" }, log.providers.calls)
      assert.are.equal("0 voting -quorum_reached-> finalizing", log.timeline[2])
    end)

    it("traces 'no proposals to vote on' and induces a sync when none is held", function()
      local _, world, log = enter("voting", { setup = function(sm)
        assert(sm:store("proposals", 2, "n3", value("p2", 2)))
      end })
      world:run_for(0.5)
      assert.are.same({ "no proposals to vote on: no proposals" }, log.errors)
      assert.are.same({}, log.providers.calls)
      assert.are.equal("0 voting -induce_sync-> loading", log.timeline[2])
    end)

    it("induces a sync when decide_and_send_vote fails", function()
      local sm, world, log = enter("voting", { setup = proposals, overrides = {
        voting = { decide_and_send_vote = function() return nil, "undecided" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in voting: undecided" }, log.errors)
      assert.is_nil(sm:chosen_proposer())
      assert.are.equal(0, sm:count("votes", 1))
      assert.are.equal("0 voting -induce_sync-> loading", log.timeline[2])
    end)

    it("induces a sync when decide_and_send_vote returns a peer but no vote", function()
      local _, world, log = enter("voting", { setup = proposals, overrides = {
        voting = { decide_and_send_vote = function() return "n1" end },
      } })
      world:run_for(0.5)
      assert.are.same(
        { "error encountered in voting: voting:decide_and_send_vote returned no result #2" },
        log.errors)
      assert.are.equal("0 voting -induce_sync-> loading", log.timeline[2])
    end)

    it("induces a sync when is_quorum fails", function()
      local _, world, log = enter("voting", { setup = proposals, overrides = {
        voting = { is_quorum = function() return nil, "tally lost" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in voting: tally lost" }, log.errors)
      assert.are.equal("0 voting -induce_sync-> loading", log.timeline[2])
    end)

    it("traces 'no vote found' when its own vote is missing at the re-send", function()
      local _, world, log = enter("voting", {
        setup = function(sm) proposals(sm); sm:set_chosen_proposer("n1") end,
        overrides = { voting = { is_quorum = function() return false end } },
      })
      world:run_for(2)
      assert.are.same({ "no vote found: prover has no vote" }, log.errors)
      assert.are.same({ "voting.is_quorum" }, log.providers.calls)
      assert.are.equal("1 voting -induce_sync-> loading", log.timeline[2])
    end)

    it("re-sends its vote every vote_resend and re-runs on its 16 s timeout", function()
      local sent = {}
      local world = csm.sim { seed = 1 }
      local _, _, log = enter("voting", { loop = world, setup = proposals,
        timing = { vote_resend = 0.75 },
        overrides = { voting = {
          decide_and_send_vote = function(_, ps) return "n1", value(ps.n1:identity(), 1) end,
          is_quorum = function() return false end,
          send_vote = function(_, v)
            sent[#sent + 1] = string.format("%g %s", world:now(), v:identity())
          end,
        } } })
      world:run_for(16.5)
      assert.are.equal(21, #sent)
      assert.are.equal("0.75 p1", sent[1])
      assert.are.equal("15.75 p1", sent[21])
      assert.are.same({ "0 stopped -start-> voting", "16 voting -voting_timeout-> voting" },
        log.timeline)
      assert.truthy(support.find(log.traces, "quorum not reached: votes: 1, needed: 1"))
      assert.are.same({}, log.errors)
    end)

    it("induces a sync when send_vote fails", function()
      local _, world, log = enter("voting", { setup = proposals, overrides = { voting = {
        is_quorum = function() return false end,
        send_vote = function() return nil, "unreachable" end,
      } } })
      world:run_for(2)
      assert.are.same({ "error encountered in voting: unreachable" }, log.errors)
      assert.are.equal("1 voting -induce_sync-> loading", log.timeline[2])
    end)
  end)

  describe("finalizing", function()
    local function held(sm)
      assert(sm:store("proposals", 1, "n1", value("p1", 1)))
      assert(sm:store("votes", 1, "n1", value("p1", 1)))
      assert(sm:store("votes", 1, "n2", value("p1", 1)))
    end

    it("folds the next rank's proposals and votes into the next state, then aggregation_done", function()
      local seen = {}
      local sm, world, log = enter("finalizing", { setup = held, overrides = { voting = {
        finalize_votes = function(_, ps, votes)
          seen.proposals, seen.votes = ps, votes
          seen.result = value("final", 1)
          return seen.result, "n1"
        end,
      } } })
      world:run_for(0.5)
      assert.are.same({ "voting.finalize_votes" }, log.providers.calls)
      assert.are.equal(value("p1", 1), seen.proposals.n1)
      assert.are.equal(value("p1", 1), seen.votes.n2)
      assert.are.equal(seen.result, sm:next_state())
      assert.is_false(rawequal(seen.result, sm:next_state()))
      assert.are.same({ "0 stopped -start-> finalizing",
                        "0 finalizing -aggregation_done-> verifying" }, log.timeline)
    end)

    it("induces a sync when finalize_votes fails", function()
      local sm, world, log = enter("finalizing", { setup = held, overrides = {
        voting = { finalize_votes = function() return nil, "no quorum" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in finalizing: no quorum" }, log.errors)
      assert.is_nil(sm:next_state())
      assert.are.equal("0 finalizing -induce_sync-> loading", log.timeline[2])
    end)

    it("re-runs on aggregation_timeout every 1 s while finalize_votes is slow", function()
      local _, world, log = enter("finalizing", { setup = held, overrides = {
        voting = { finalize_votes = function(_, _, _, ctx) ctx:sleep(5) end },
      } })
      world:run_for(2.5)
      assert.are.same({
        "0 stopped -start-> finalizing",
        "1 finalizing -aggregation_timeout-> finalizing",
        "2 finalizing -aggregation_timeout-> finalizing",
      }, log.timeline)
    end)
  end)

  describe("verifying", function()
    local final = value("final", 1)
    local function held(sm)
      sm:set_next_state(final)
      sm:set_collected(value("live-n1", 1))
      assert(sm:store("proposals", 1, "n1", value("p1", 1)))
      assert(sm:store("votes", 1, "n1", value("p1", 1)))
      assert(sm:store("proposals", 2, "n2", value("p2", 2)))
    end

    it("confirms the next state, adopts it, forgets its rank, then verification_done", function()
      local confirmed
      local sm, world, log = enter("verifying", { setup = held, overrides = {
        voting = { send_confirmation = function(_, f) confirmed = f end },
      } })
      world:run_for(0.5)
      assert.are.same({ "voting.send_confirmation" }, log.providers.calls)
      assert.is_true(rawequal(final, confirmed))
      assert.is_true(rawequal(final, sm:active_state()))
      assert.is_nil(sm:next_state())
      assert.is_nil(sm:collected())
      assert.are.equal(0, sm:count("proposals", 1))
      assert.are.equal(0, sm:count("votes", 1))
      assert.are.equal(1, sm:count("proposals", 2))
      assert.are.same({ "0 stopped -start-> verifying",
                        "0 verifying -verification_done-> collecting" }, log.timeline)
    end)

    it("does not confirm again when its own confirmation for the rank is held", function()
      local sm, world, log = enter("verifying", { setup = function(sm)
        held(sm)
        assert(sm:store("confirmations", 1, "n1", final))
      end })
      world:run_for(0.5)
      assert.are.same({}, log.providers.calls)
      assert.is_true(rawequal(final, sm:active_state()))
      assert.are.equal("0 verifying -verification_done-> collecting", log.timeline[2])
    end)

    it("without a next state waits for verification_timeout after 1 s", function()
      local sm, world, log = enter("verifying")
      world:run_for(1.5)
      assert.are.same({}, log.providers.calls)
      assert.are.equal("genesis", sm:active_state():identity())
      assert.are.same({ "0 stopped -start-> verifying",
                        "1 verifying -verification_timeout-> verifying" }, log.timeline)
    end)

    it("induces a sync when send_confirmation fails, keeping the active state", function()
      local sm, world, log = enter("verifying", { setup = held, overrides = {
        voting = { send_confirmation = function() return nil, "unreachable" end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in verifying: unreachable" }, log.errors)
      assert.are.equal("genesis", sm:active_state():identity())
      assert.is_true(rawequal(final, sm:next_state()))
      assert.are.equal(1, sm:count("proposals", 1))
      assert.are.equal("0 verifying -induce_sync-> loading", log.timeline[2])
    end)
  end)

  describe("stopping", function()
    it("sends cleanup_complete at once after stop", function()
      local sm, world, log = enter("voting", { keep = { stopping = true },
        setup = function(sm) assert(sm:store("proposals", 1, "n1", value("p1", 1))) end,
        overrides = { voting = { is_quorum = function() return false end } } })
      world:after(0.5, function() sm:stop() end)
      world:run_for(2)
      assert.are.same({
        "0 stopped -start-> voting",
        "0.5 voting -stop-> stopping",
        "0.5 stopping -cleanup_complete-> stopped",
      }, log.timeline)
      assert.are.equal("stopped", sm:state())
      assert.is_false(sm:closed())
    end)

    it("without a behaviour, leaves on its 30 s timeout", function()
      local sm, world, log = enter("voting", { states = { stopping = { behavior = false } },
        setup = function(sm) assert(sm:store("proposals", 1, "n1", value("p1", 1))) end,
        overrides = { voting = { is_quorum = function() return false end } } })
      world:after(0.5, function() sm:stop() end)
      world:run_for(40)
      assert.are.same({
        "0 stopped -start-> voting",
        "0.5 voting -stop-> stopping",
        "30.5 stopping -cleanup_complete-> stopped",
      }, log.timeline)
    end)
  end)

  describe("timing.scale", function()
    it("scales timeouts and intervals, but proving_grace stays a count of polls", function()
      local world = csm.sim { seed = 1 }
      local sm, _, log = enter("proving", { loop = world, timing = { scale = 0.1 },
        setup = function(sm) sm:set_collected(value("c", 1)) end,
        overrides = { leader = {
          get_next_leaders = function() return { "a", "b", "n1" } end,
          prove_next_state = function(_, _, _, ctx) ctx:sleep(1000) end,
        } } })
      world:after(0.05, function() sm:receive_proposal("b", value("pb", 1)) end)
      world:run_for(3.5)
      -- b is the 2nd leader: after 10 + 2 - 1 = 11 polls of 0.1 s; voting times out at 1.6 s
      assert.are.same({ "0 stopped -start-> proving", "1.1 proving -publish_timeout-> voting",
                        "2.7 voting -voting_timeout-> voting" }, log.timeline)
      assert.are.equal(0.1, sm:timing("proving_poll"))
      assert.are.equal(10, sm:timing("proving_grace"))
    end)
  end)

  describe("a provider that raises or returns the wrong type", function()
    -- method -> the state that calls it, a setup to reach the call, and a
    -- wrong-typed result with the error it raises
    local cases = {
      { "sync", "synchronize", "loading", nil, 42,
        "sync:synchronize returned a number as result #1 (state expected)" },
      { "leader", "get_next_leaders", "loading", nil, "n1",
        "leader:get_next_leaders returned a string as result #1 (peers expected)" },
      { "liveness", "collect", "collecting", nil, true,
        "liveness:collect returned a boolean as result #1 (value expected)" },
      { "liveness", "send_liveness", "collecting" },
      { "leader", "prove_next_state", "proving",
        function(sm) sm:set_collected(value("c", 1)) end, {},
        "leader:prove_next_state returned a table as result #1 (value expected)" },
      { "voting", "send_proposal", "publishing",
        function(sm) assert(sm:store("proposals", 1, "n1", value("p1", 1))) end },
      { "voting", "decide_and_send_vote", "voting",
        function(sm) assert(sm:store("proposals", 1, "n1", value("p1", 1))) end, 7,
        "voting:decide_and_send_vote returned a number as result #1 (peer expected)" },
      { "voting", "is_quorum", "voting",
        function(sm)
          assert(sm:store("proposals", 1, "n1", value("p1", 1)))
          sm:set_chosen_proposer("n1")
        end, 1, "voting:is_quorum returned a number as result #1 (boolean expected)" },
      { "voting", "send_vote", "voting",
        function(sm)
          sm:set_chosen_proposer("n1")
          assert(sm:store("votes", 1, "n1", value("p1", 1)))
        end },
      { "voting", "finalize_votes", "finalizing", nil, "final",
        "voting:finalize_votes returned a string as result #1 (value expected)" },
      { "voting", "send_confirmation", "verifying",
        function(sm) sm:set_next_state(value("final", 1)) end },
    }

    for _, case in ipairs(cases) do
      local provider, method, state, setup, wrong, message = unpack(case, 1, 6)
      local function run(result)
        local world = csm.sim { seed = 1 }
        local other, _, other_log = bystander(world)
        local overrides = { [provider] = { [method] = result } }
        if method == "send_vote" then overrides.voting.is_quorum = function() return false end end
        local sm, _, log = enter(state, { loop = world, setup = setup, overrides = overrides })
        other:start()
        world:run_for(4.5)
        return sm, log, other, other_log
      end

      it(provider .. ":" .. method .. " raising closes the machine; the loop goes on", function()
        local sm, log, other, other_log = run(function() error("boom in " .. method, 0) end)
        assert.is_true(sm:closed())
        assert.are.equal("stopped", sm:state())
        assert.are.equal(1, #log.errors)
        local err = sm:error()
        assert.are.equal("fatal error encountered: " .. err, log.errors[1])
        assert.are.equal("boom in " .. method .. "\nstack traceback:", err:match("^[^\n]*\n[^\n]*"))
        -- close does not notify listeners
        assert.is_nil(log.timeline[#log.timeline]:match("-> stopped$"))
        local ok, refusal = sm:start()
        assert.is_nil(ok)
        assert.are.equal("machine is closed", refusal)
        -- the other machine on the loop went on finalizing, one rank a second
        assert.is_false(other:closed())
        assert.are.equal(3, other:active_state():rank())
        assert.are.same({}, other_log.errors)
      end)

      if wrong ~= nil then
        it(provider .. ":" .. method .. " returning the wrong type closes the machine", function()
          local sm, log, other = run(function() return wrong end)
          assert.is_true(sm:closed())
          local err = sm:error()
          assert.are.equal(message, err:match("^[^\n]*"))
          assert.truthy(err:find("stack traceback:", 1, true))
          assert.are.same({ "fatal error encountered: " .. err }, log.errors)
          assert.are.equal(3, other:active_state():rank())
        end)
      end
    end
  end)

  describe("a provider that raises after it yielded", function()
    it("closes the machine from the timer that resumed it", function()
      local world = csm.sim { seed = 1 }
      local other = bystander(world)
      local sm, _, log = enter("collecting", { loop = world, overrides = {
        liveness = { collect = function(_, ctx)
          ctx:sleep(1.5)
          error("late boom", 0)
        end },
      } })
      other:start()
      world:run_for(4.5)
      assert.is_true(sm:closed())
      assert.are.equal("late boom\nstack traceback:", sm:error():match("^[^\n]*\n[^\n]*"))
      assert.are.same({ "fatal error encountered: " .. sm:error() }, log.errors)
      assert.are.equal(3, other:active_state():rank())
    end)

    it("closes the machine on a wrong type returned after ctx:await", function()
      local world = csm.sim { seed = 1 }
      local sm, _, log = enter("collecting", { loop = world, overrides = {
        liveness = { collect = function(_, ctx)
          return ctx:await(function(resolve) world:after(2, function() resolve(5) end) end)
        end },
      } })
      world:run_for(3)
      assert.is_true(sm:closed())
      assert.are.equal("liveness:collect returned a number as result #1 (value expected)",
        sm:error():match("^[^\n]*"))
      assert.are.equal(1, #log.errors)
      assert.are.same({ "0 stopped -start-> collecting" }, log.timeline)
    end)
  end)

  describe("a provider that returns nil where a value is required", function()
    it("is a provider error: collect", function()
      local sm, world, log = enter("collecting", { overrides = {
        liveness = { collect = function() end },
      } })
      world:run_for(0.5)
      assert.are.same({ "error encountered in collecting: liveness:collect returned no result #1" },
        log.errors)
      assert.are.equal("0 collecting -induce_sync-> loading", log.timeline[2])
      assert.is_false(sm:closed())
    end)

    it("is a provider error: is_quorum", function()
      local sm, world, log = enter("voting", {
        setup = function(sm) assert(sm:store("proposals", 1, "n1", value("p1", 1))) end,
        overrides = { voting = { is_quorum = function() end } },
      })
      world:run_for(0.5)
      assert.are.same({ "error encountered in voting: voting:is_quorum returned no result #1" },
        log.errors)
      assert.are.equal("0 voting -induce_sync-> loading", log.timeline[2])
      assert.is_false(sm:closed())
    end)

    it("is a provider error: get_next_leaders", function()
      local _, world, log = enter("collecting", { overrides = {
        leader = { get_next_leaders = function() end },
      } })
      world:run_for(0.5)
      assert.are.same(
        { "error encountered in collecting: leader:get_next_leaders returned no result #1" },
        log.errors)
    end)
  end)

  describe("a provider that yields through its ctx", function()
    it("blocks neither other machines, nor timers, nor receives", function()
      local world = csm.sim { seed = 1 }
      local other = bystander(world)
      local woke
      local sm, _, log = enter("collecting", { loop = world, overrides = {
        liveness = { collect = function(_, ctx)
          woke = ctx:sleep(5)
          return value("live-n1", 1)
        end },
      } })
      other:start()
      local fired, received = nil, {}
      world:after(2, function() fired = world:now() end)
      world:after(3, function()
        received[1], received[2] = sm:receive_liveness_check("n2", value("live-n2", 1))
      end)
      world:after(4.5, function() received[3] = other:active_state():rank() end)
      world:run_for(6)
      assert.are.equal(2, fired)
      assert.are.same({ true, nil, 3 }, { received[1], received[2], received[3] })
      assert.is_true(woke)
      assert.are.same({ "0 stopped -start-> collecting",
                        "5 collecting -collection_done-> liveness_check" }, log.timeline)
      assert.are.equal(2, sm:count("liveness", 1))
    end)

    it("may wait on a callback with ctx:await", function()
      local world = csm.sim { seed = 1 }
      local sm, _, log = enter("collecting", { loop = world, overrides = {
        liveness = { collect = function(_, ctx)
          return ctx:await(function(resolve)
            world:after(2, function() resolve(value("awaited", 1)) end)
          end)
        end },
      } })
      world:run_for(3)
      assert.are.equal("2 collecting -collection_done-> liveness_check", log.timeline[2])
      assert.are.equal("awaited", sm:collected():identity())
    end)
  end)
end)
