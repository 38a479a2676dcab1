-- Errors: programmer errors raise at once naming the
-- function and the argument; protocol refusals return nil, err.
local csm = require "csm"
local support = require "support"

local error_of = support.error_of

-- A machine on a sim world whose behaviours are all off.
local quiet = support.quiet

-- Asserts that fn(...) returns exactly nil, err.
-- The code each refusal carries beside its message.
local CODES = {
  { "conflicting vote", "conflict" }, { "stored at rank", "rank" },
  { "no stop transition", "state" }, { "stale rank", "stale" }, { "beyond window", "far" },
  { "map full", "full" }, { "identity too long", "identity" }, { "machine is closed", "closed" },
  { "event queue full", "queue" },
}

local function refused(err, fn, ...)
  local r = { n = select("#", ...), fn(...) }
  assert.is_nil(r[1])
  assert.are.equal(err, r[2])
  local code
  for _, c in ipairs(CODES) do
    if err:find(c[1], 1, true) then code = c[2] end
  end
  assert.is_not_nil(code, "no code known for " .. err)
  assert.are.equal(code, r[3])
end

local KIND_EXPECTED = '"liveness", "proposals", "votes" or "confirmations" expected'

describe("csm", function()
  describe("machine", function()
    describe("methods written in Lua", function()
      it("raise naming the method when self is not a machine", function()
        local sm = quiet()
        for _, name in ipairs { "send_event", "close", "add_listener", "inspect", "timing", "call",
                                "set_next_state", "transitions", "minimum_provers" } do
          assert.are.equal("sm:" .. name .. ": bad self (csm machine expected, got number)",
            error_of(sm[name], 5))
        end
        assert.are.equal("sm:id: bad self (csm machine expected, got table)",
          error_of(sm.id, {}))
      end)
    end)

    describe("receive_liveness_check", function()
      it("raises on a bad peer or collected value", function()
        local sm = quiet()
        local v = csm.value("c", 1)
        assert.are.equal("sm:receive_liveness_check: bad argument #1 'peer' " ..
          "(csm value or non-empty string expected, got nil)",
          error_of(sm.receive_liveness_check, sm, nil, v))
        assert.are.equal("sm:receive_liveness_check: bad argument #1 'peer' " ..
          "(csm value or non-empty string expected, got string)",
          error_of(sm.receive_liveness_check, sm, "", v))
        assert.are.equal("sm:receive_liveness_check: bad argument #1 'peer' " ..
          "(csm value or non-empty string expected, got table)",
          error_of(sm.receive_liveness_check, sm, {}, v))
        assert.are.equal("sm:receive_liveness_check: bad argument #2 'collected' " ..
          "(csm value expected, got nil)", error_of(sm.receive_liveness_check, sm, "p", nil))
        assert.are.equal("sm:receive_liveness_check: bad argument #2 'collected' " ..
          "(csm value expected, got string)", error_of(sm.receive_liveness_check, sm, "p", "c"))
        assert.are.equal(0, sm:inspect().messages_received)
      end)
    end)

    describe("receive_proposal", function()
      it("raises on a bad peer or proposal", function()
        local sm = quiet()
        assert.are.equal("sm:receive_proposal: bad argument #1 'peer' " ..
          "(csm value or non-empty string expected, got number)",
          error_of(sm.receive_proposal, sm, 1, csm.value("x", 1)))
        assert.are.equal("sm:receive_proposal: bad argument #2 'proposal' " ..
          "(csm value expected, got table)", error_of(sm.receive_proposal, sm, "p", { rank = 1 }))
      end)
    end)

    describe("receive_vote", function()
      it("raises on a bad proposer, voter or vote", function()
        local sm = quiet()
        local v = csm.value("x", 1)
        assert.are.equal("sm:receive_vote: bad argument #1 'proposer' " ..
          "(csm value or non-empty string expected, got nil)", error_of(sm.receive_vote, sm, nil, "a", v))
        assert.are.equal("sm:receive_vote: bad argument #2 'voter' " ..
          "(csm value or non-empty string expected, got boolean)",
          error_of(sm.receive_vote, sm, "p", true, v))
        assert.are.equal("sm:receive_vote: bad argument #3 'vote' (csm value expected, got nil)",
          error_of(sm.receive_vote, sm, "p", "a", nil))
        assert.are.equal("sm:receive_vote: bad argument #3 'vote' (csm value expected, got string)",
          error_of(sm.receive_vote, sm, "p", "a", "x"))
      end)

      it("raises when not called on a machine", function()
        assert.are.equal("sm:receive_vote: bad self (csm machine expected, got number)",
          error_of(quiet().receive_vote, 5, "p", "a", csm.value("x", 1)))
      end)
    end)

    describe("receive_confirmation", function()
      it("raises on a bad peer or confirmation", function()
        local sm = quiet()
        assert.are.equal("sm:receive_confirmation: bad argument #1 'peer' " ..
          "(csm value or non-empty string expected, got nil)",
          error_of(sm.receive_confirmation, sm, nil, csm.value("x", 1)))
        assert.are.equal("sm:receive_confirmation: bad argument #2 'confirmation' " ..
          "(csm value expected, got number)", error_of(sm.receive_confirmation, sm, "p", 1))
      end)
    end)

    describe("store", function()
      it("raises on a bad kind", function()
        local sm = quiet()
        local v = csm.value("x", 1)
        assert.are.equal("sm:store: bad argument #1 'kind' (" .. KIND_EXPECTED .. ", got string)",
          error_of(sm.store, sm, "vote", 1, "p", v))
        assert.are.equal("sm:store: bad argument #1 'kind' (" .. KIND_EXPECTED .. ", got number)",
          error_of(sm.store, sm, 2, 1, "p", v))
        assert.are.equal("sm:store: bad argument #1 'kind' (" .. KIND_EXPECTED .. ", got no value)",
          error_of(sm.store, sm))
      end)

      it("raises on a bad rank, peer or value", function()
        local sm = quiet()
        local v = csm.value("x", 1)
        assert.are.equal("sm:store: bad argument #2 'rank' (integer >= 0 expected, got -1)",
          error_of(sm.store, sm, "votes", -1, "p", v))
        assert.are.equal("sm:store: bad argument #2 'rank' (integer >= 0 expected, got 1.5)",
          error_of(sm.store, sm, "votes", 1.5, "p", v))
        assert.are.equal("sm:store: bad argument #2 'rank' (integer >= 0 expected, got string)",
          error_of(sm.store, sm, "votes", "1", "p", v))
        assert.are.equal("sm:store: bad argument #3 'peer' " ..
          "(csm value or non-empty string expected, got nil)", error_of(sm.store, sm, "votes", 1, nil, v))
        assert.are.equal("sm:store: bad argument #4 'value' (csm value expected, got nil)",
          error_of(sm.store, sm, "votes", 1, "p", nil))
      end)
    end)

    describe("count", function()
      it("raises on a bad kind or rank", function()
        local sm = quiet()
        assert.are.equal("sm:count: bad argument #1 'kind' (" .. KIND_EXPECTED .. ", got string)",
          error_of(sm.count, sm, "proposal", 1))
        assert.are.equal("sm:count: bad argument #1 'kind' (" .. KIND_EXPECTED .. ", got number)",
          error_of(sm.count, sm, 3, 1))
        assert.are.equal("sm:count: bad argument #2 'rank' (integer >= 0 expected, got no value)",
          error_of(sm.count, sm, "votes"))
      end)
    end)

    describe("get", function()
      it("raises on a bad kind, rank or peer", function()
        local sm = quiet()
        assert.are.equal("sm:get: bad argument #1 'kind' (" .. KIND_EXPECTED .. ", got table)",
          error_of(sm.get, sm, {}, 1, "p"))
        assert.are.equal("sm:get: bad argument #2 'rank' (integer >= 0 expected, got -3)",
          error_of(sm.get, sm, "votes", -3, "p"))
        assert.are.equal("sm:get: bad argument #3 'peer' " ..
          "(csm value or non-empty string expected, got no value)", error_of(sm.get, sm, "votes", 1))
      end)
    end)

    describe("liveness, proposals, votes, confirmations", function()
      it("raise on a bad rank", function()
        local sm = quiet()
        for _, kind in ipairs { "liveness", "proposals", "votes", "confirmations" } do
          assert.are.equal("sm:" .. kind .. ": bad argument #1 'rank' (integer >= 0 expected, got string)",
            error_of(sm[kind], sm, "1"))
          assert.are.equal("sm:" .. kind .. ": bad argument #1 'rank' (integer >= 0 expected, got -1)",
            error_of(sm[kind], sm, -1))
        end
      end)
    end)

    describe("prune", function()
      it("raises on a bad rank", function()
        local sm = quiet()
        assert.are.equal("sm:prune: bad argument #1 'rank' (integer >= 0 expected, got nil)",
          error_of(sm.prune, sm, nil))
        assert.are.equal("sm:prune: bad argument #1 'rank' (integer >= 0 expected, got 0.5)",
          error_of(sm.prune, sm, 0.5))
      end)
    end)

    describe("send_event", function()
      it("raises on an unknown event", function()
        local sm = quiet()
        assert.are.equal("sm:send_event: unknown event 'nope'", error_of(sm.send_event, sm, "nope"))
        assert.are.equal("sm:send_event: unknown event ''", error_of(sm.send_event, sm, ""))
        assert.are.equal(0, sm:inspect().events_queued)
      end)

      it("raises on an event that is not a string", function()
        local sm = quiet()
        assert.are.equal("sm:send_event: bad argument #1 'event' (string expected, got nil)",
          error_of(sm.send_event, sm))
        assert.are.equal("sm:send_event: bad argument #1 'event' (string expected, got number)",
          error_of(sm.send_event, sm, 1))
      end)

      it("knows a custom event only on the machine that defines it", function()
        local sm = quiet()
        local custom = support.machine { transitions = {
          { from = "voting", event = "nudge", to = "voting" } } }
        assert.is_true(custom:send_event("nudge"))
        assert.are.equal("sm:send_event: unknown event 'nudge'", error_of(sm.send_event, sm, "nudge"))
      end)
    end)

    describe("timing", function()
      it("raises on an unknown name", function()
        local sm = quiet()
        assert.are.equal("sm:timing: unknown timing 'votng'", error_of(sm.timing, sm, "votng"))
        assert.are.equal("sm:timing: bad argument #1 'name' (string expected, got nil)",
          error_of(sm.timing, sm))
      end)
    end)

    describe("add_listener", function()
      it("raises on something that is not a listener", function()
        local sm = quiet()
        local text = "sm:add_listener: bad argument #1 'listener' " ..
          "(function or table with on_transition expected, got %s)"
        assert.are.equal(text:format("nil"), error_of(sm.add_listener, sm))
        assert.are.equal(text:format("table"), error_of(sm.add_listener, sm, { on_transition = 1 }))
      end)
    end)

    describe("setters", function()
      it("raise on a bad argument", function()
        local sm = quiet()
        assert.are.equal("sm:set_active_state: bad argument #1 'state' (csm value expected, got string)",
          error_of(sm.set_active_state, sm, "s"))
        assert.are.equal("sm:set_next_state: bad argument #1 'state' (csm value or nil expected, got number)",
          error_of(sm.set_next_state, sm, 1))
        assert.are.equal("sm:set_collected: bad argument #1 'collected' " ..
          "(csm value or nil expected, got table)", error_of(sm.set_collected, sm, {}))
        assert.are.equal("sm:set_next_provers: bad argument #1 'list' (table or nil expected, got string)",
          error_of(sm.set_next_provers, sm, "a"))
        assert.are.equal("sm:set_chosen_proposer: bad argument #1 'peer' " ..
          "(csm value, non-empty string or nil expected, got boolean)",
          error_of(sm.set_chosen_proposer, sm, true))
      end)
    end)

    describe("ctx:sleep", function()
      it("raises when called outside a behaviour", function()
        local kept
        local sm, world = support.machine { states = { starting = {
          behavior = function(_, ctx) kept = ctx end } } }
        sm:start()
        world:run("nowait")
        assert.are.equal("ctx:sleep: called outside a behaviour of this ctx", error_of(kept.sleep, kept, 1))
      end)
    end)
  end)

  describe("machine refusals", function()
    describe("receive_vote", function()
      it("refuses a conflicting vote and keeps the first", function()
        local sm = quiet()
        assert.is_true(sm:receive_vote("p", "a", csm.value("x", 1)))
        refused("conflicting vote from 'a' at rank 1", sm.receive_vote, sm, "p", "a", csm.value("y", 1))
        assert.are.equal("x", sm:votes(1).a:identity())
        assert.is_true(sm:receive_vote("q", "a", csm.value("x", 1)))
        assert.are.equal(1, sm:count("votes", 1))
        assert.are.equal(1, sm:inspect().receives_refused)
      end)

      it("takes a different vote from the same voter at another rank", function()
        local sm = quiet()
        assert.is_true(sm:receive_vote("p", "a", csm.value("x", 1)))
        assert.is_true(sm:receive_vote("p", "a", csm.value("y", 2)))
      end)
    end)

    describe("receives", function()
      local function each_receive(sm)
        return {
          function(peer, v) return sm:receive_liveness_check(peer, v) end,
          function(peer, v) return sm:receive_proposal(peer, v) end,
          function(peer, v) return sm:receive_vote("proposer", peer, v) end,
          function(peer, v) return sm:receive_confirmation(peer, v) end,
        }
      end

      it("refuse a stale rank", function()
        local sm = quiet()
        for _, receive in ipairs(each_receive(sm)) do
          refused("stale rank 0 (active rank 0)", receive, "p", csm.value("x", 0))
        end
        sm:set_active_state(csm.value("s", 5))
        for _, receive in ipairs(each_receive(sm)) do
          refused("stale rank 3 (active rank 5)", receive, "p", csm.value("x", 3))
          refused("stale rank 5 (active rank 5)", receive, "p", csm.value("x", 5))
          assert.is_true(receive("p", csm.value("x", 6)))
        end
        assert.are.equal(12, sm:inspect().receives_refused)
      end)

      it("refuse a rank beyond the window", function()
        local sm = quiet()
        for _, receive in ipairs(each_receive(sm)) do
          refused("rank 100 beyond window (active rank 0, rank_window 64)", receive, "p", csm.value("x", 100))
          refused("rank 65 beyond window (active rank 0, rank_window 64)", receive, "p", csm.value("x", 65))
          assert.is_true(receive("p", csm.value("x", 64)))
          refused("rank 9007199254740992 beyond window (active rank 0, rank_window 64)",
            receive, "p", csm.value("x", 2 ^ 53))
        end
        assert.are.equal(0, sm:count("votes", 100))
      end)

      it("measure the window from the active rank", function()
        local sm = quiet { limits = { rank_window = 4 } }
        sm:set_active_state(csm.value("s", 10))
        assert.is_true(sm:receive_proposal("p", csm.value("x", 14)))
        refused("rank 15 beyond window (active rank 10, rank_window 4)",
          sm.receive_proposal, sm, "p", csm.value("x", 15))
      end)

      it("say when there is no active state", function()
        local sm = quiet { initial = false }
        assert.is_true(sm:receive_proposal("p", csm.value("x", 0)))
        assert.is_true(sm:receive_proposal("p", csm.value("x", 63)))
        refused("rank 64 beyond window (no active state, rank_window 64)",
          sm.receive_proposal, sm, "p", csm.value("x", 64))
      end)

      it("refuse a new peer when the map for the rank is full", function()
        local sm = quiet { limits = { peers_per_rank = 2 } }
        for _, receive in ipairs(each_receive(sm)) do
          assert.is_true(receive("a", csm.value("x", 1)))
          assert.is_true(receive("b", csm.value("x", 1)))
          assert.is_true(receive("a", csm.value("x", 1))) -- already held
          assert.is_true(receive("c", csm.value("x", 2))) -- another rank
        end
        refused("liveness map full at rank 1 (peers_per_rank 2)",
          sm.receive_liveness_check, sm, "c", csm.value("x", 1))
        refused("proposals map full at rank 1 (peers_per_rank 2)",
          sm.receive_proposal, sm, "c", csm.value("x", 1))
        refused("votes map full at rank 1 (peers_per_rank 2)",
          sm.receive_vote, sm, "p", "c", csm.value("x", 1))
        refused("confirmations map full at rank 1 (peers_per_rank 2)",
          sm.receive_confirmation, sm, "c", csm.value("x", 1))
        assert.are.equal(2, sm:count("votes", 1))
      end)

      it("refuse an identity that is too long", function()
        local sm = quiet()
        local long, most = string.rep("i", 257), string.rep("i", 256)
        for _, receive in ipairs(each_receive(sm)) do
          refused("identity too long (257 bytes, identity_bytes 256)", receive, long, csm.value("x", 1))
          refused("identity too long (257 bytes, identity_bytes 256)", receive, "p", csm.value(long, 1))
          refused("identity too long (257 bytes, identity_bytes 256)",
            receive, csm.peer(long), csm.value("x", 1))
          assert.is_true(receive(most, csm.value(most, 1)))
        end
        refused("identity too long (257 bytes, identity_bytes 256)",
          sm.receive_vote, sm, long, "a", csm.value("x", 2))
        assert.are.equal(13, sm:inspect().receives_refused)
      end)

      it("refuse everything on a closed machine", function()
        local sm = quiet()
        sm:close()
        for _, receive in ipairs(each_receive(sm)) do
          refused("machine is closed", receive, "p", csm.value("x", 1))
        end
      end)
    end)

    describe("store", function()
      it("refuses like a receive", function()
        local sm = quiet { limits = { peers_per_rank = 1, identity_bytes = 4 } }
        refused("stale rank 0 (active rank 0)", sm.store, sm, "votes", 0, "p", csm.value("x", 1))
        refused("rank 65 beyond window (active rank 0, rank_window 64)",
          sm.store, sm, "votes", 65, "p", csm.value("x", 1))
        refused("identity too long (5 bytes, identity_bytes 4)",
          sm.store, sm, "votes", 1, "peer1", csm.value("x", 1))
        assert.is_true(sm:store("votes", 1, "p", csm.value("x", 1)))
        refused("votes map full at rank 1 (peers_per_rank 1)",
          sm.store, sm, "votes", 1, "q", csm.value("x", 1))
        -- a value is stored at its own rank
        refused("a value of rank 2 stored at rank 1", sm.store, sm, "proposals", 1, "p", csm.value("x", 2))
        -- the machine's own record: a store replaces what it holds, a vote too
        assert.is_true(sm:store("votes", 1, "p", csm.value("y", 1)))
        assert.are.equal("y", sm:get("votes", 1, "p"):identity())
        sm:close()
        refused("machine is closed", sm.store, sm, "votes", 2, "p", csm.value("x", 2))
      end)
    end)

    describe("start", function()
      it("refuses a closed machine", function()
        local sm, world = quiet()
        sm:start()
        world:run("nowait")
        sm:close()
        refused("machine is closed", sm.start, sm)
        world:run("nowait")
        assert.are.equal("stopped", sm:state())
      end)
    end)

    describe("send_event", function()
      it("refuses when the queue is full", function()
        local sm = quiet { limits = { queue = 4 } }
        for _ = 1, 4 do assert.is_true(sm:send_event("start")) end
        refused("event queue full (limit 4)", sm.send_event, sm, "start")
        refused("event queue full (limit 4)", sm.start, sm)
        assert.are.equal(4, sm:inspect().events_queued)
        -- stop empties the queue first, so it always gets in
        assert.is_true(sm:stop())
        assert.are.equal(1, sm:inspect().events_queued)
      end)

      it("still takes receives when the queue is full, and queues their event later", function()
        local sm, world = quiet { limits = { queue = 2 } }
        sm:send_event("start")
        sm:send_event("init_complete")
        assert.is_true(sm:receive_proposal("p", csm.value("x", 1)))
        assert.are.equal(2, sm:inspect().events_queued)
        world:run("nowait")
        assert.are.equal("loading", sm:state())
        assert.is_true(sm:receive_proposal("q", csm.value("x", 1)))
        assert.are.equal(1, sm:inspect().events_queued)
        assert.are.equal(2, sm:count("proposals", 1))
      end)

      it("refuses a closed machine", function()
        local sm = quiet()
        sm:close()
        refused("machine is closed", sm.send_event, sm, "start")
      end)
    end)
  end)
end)
