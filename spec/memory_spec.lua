-- Memory (departure 5 and the machine's lifetime): a running machine keeps
-- itself alive, a stopped or closed one is collected, and nothing a peer
-- sends makes the ledger or the queue grow past the limits.
local csm = require "csm"
local support = require "support"

local full_gc = support.full_gc

-- A machine on world with every behaviour off.
local quiet = support.quiet

-- Asserts the ledger of sm is within its limits: at most per_rank entries
-- per map per rank, at most window ranks, all of them above the active one.
local function assert_bounded(sm, per_rank, window)
  local s = sm:inspect()
  local active = sm:active_state()
  local low = active and active:rank() or -1
  assert.is_true(s.ranks_held <= window, "ranks held " .. s.ranks_held)
  for kind, ranks in pairs(s.maps) do
    local total = 0
    for rank, n in pairs(ranks) do
      assert.is_true(n <= per_rank, kind .. " at rank " .. rank .. ": " .. n)
      assert.are.equal(n, sm:count(kind, rank))
      assert.is_true(rank > low and rank <= low + window, kind .. " holds rank " .. rank)
      total = total + n
    end
    assert.are.equal(total, s.sizes[kind])
  end
  return s
end

-- Bytes 0..255 at random from the world's generator, NULs included.
local function binary(world, len)
  local bytes = {}
  for i = 1, len do bytes[i] = string.char(math.floor(world:random() * 256)) end
  bytes[1] = "\0"
  return table.concat(bytes)
end

describe("csm", function()
  describe("machine", function()
    describe("lifetime", function()
      it("keeps a running machine alive without Lua references", function()
        local world = csm.sim { seed = 7 }
        local weak = setmetatable({}, { __mode = "v" })
        local rounds = { n = 0 }
        do
          local sm = support.machine { loop = world }
          sm:add_listener(function(_, to, event)
            if to == "collecting" and event == "verification_done" then rounds.n = rounds.n + 1 end
          end)
          assert.is_true(sm:start())
          weak[1] = sm
        end
        full_gc()
        for step = 1, 5 do
          assert.is_true(world:run_until(function() return rounds.n >= step end, 60))
          full_gc()
          assert.is_not_nil(weak[1], "collected at step " .. step)
        end
        -- every round finalized one rank on top of genesis (0); the last
        -- verification_done may still wait in the queue
        local rank = weak[1]:active_state():rank()
        assert.is_true(rank >= 5)
        assert.is_true(rank == rounds.n or rank == rounds.n + 1)
      end)

      it("keeps a machine alive while its timers run and it waits", function()
        local world = csm.sim { seed = 1 }
        local weak = setmetatable({}, { __mode = "v" })
        local fired = { n = 0 }
        do
          local sm = quiet { loop = world }
          sm:add_listener(function(_, _, event)
            if event == "sync_timeout" then fired.n = fired.n + 1 end
          end)
          sm:start()
          weak[1] = sm
        end
        for _ = 1, 4 do -- loading times out at 36001, 72001, 108001
          full_gc()
          world:run_for(36000)
        end
        full_gc()
        assert.is_not_nil(weak[1])
        assert.are.equal(3, fired.n)
      end)

      it("collects a machine that was never started", function()
        local weak = setmetatable({}, { __mode = "v" })
        weak[1] = support.machine()
        full_gc()
        assert.is_nil(weak[1])
      end)

      it("collects a machine once it has stopped", function()
        local world = csm.sim { seed = 3 }
        local weak = setmetatable({}, { __mode = "v" })
        do
          local sm = support.machine { loop = world }
          sm:start()
          weak[1] = sm
        end
        assert.is_true(world:run_until(function()
          local sm = weak[1]
          return sm ~= nil and sm:active_state():rank() >= 3
        end, 60))
        local function stop() weak[1]:stop() end
        stop()
        assert.is_true(world:run_until(function() return weak[1]:state() == "stopped" end, 60))
        world:run("nowait")
        full_gc()
        assert.is_nil(weak[1])
      end)

      it("collects a machine once it is closed", function()
        local world = csm.sim { seed = 4 }
        local weak = setmetatable({}, { __mode = "v" })
        do
          local sm = support.machine { loop = world, minimum_provers = 2 }
          sm:start()
          weak[1] = sm
        end
        world:run_for(5) -- waits in liveness_check for a second prover
        -- the machine is only touched inside calls, so no register of this
        -- function holds it when the collector scans the stack (LuaJIT scans
        -- a frame's every slot)
        local function state() return weak[1]:state() end
        local function close() weak[1]:close() end
        assert.are.equal("liveness_check", state())
        close()
        world:run("nowait")
        full_gc()
        assert.is_nil(weak[1])
      end)

      -- <close> is Lua 5.4 syntax: the chunk is compiled only there
      local it54 = support.lua54 and it or pending
      it54("closes the machine a Lua 5.4 <close> variable holds at scope end", function()
        local chunk = assert(load([[
          local csm, support = ...
          local kept
          do
            local sm <close> = support.machine()
            sm:start()
            kept = sm
          end
          return kept
        ]]))
        local sm = chunk(csm, support)
        assert.is_true(sm:closed())
        assert.are.equal("stopped", sm:state())
        assert.are.same({ nil, "machine is closed", "closed" }, { sm:start() })
      end)
    end)

    describe("receives", function()
      -- (#heavy: floods of 10^4 and more receives, minutes under memcheck or
      -- a stressed collector; CI's runs of those leave them out)
      it("stay within small limits whatever peers send #heavy", function()
        local world = csm.sim { seed = 11 }
        local per_rank, window = 16, 8
        local sm = quiet { loop = world, limits = { peers_per_rank = per_rank, rank_window = window } }
        for _, event in ipairs { "start", "init_complete", "sync_complete", "collection_done",
                                 "prover_signal", "publish_timeout" } do
          sm:send_event(event)
        end
        world:run("nowait")
        assert.are.equal("voting", sm:state())
        local huge = { 2 ^ 53, 2 ^ 53 - 1, 2 ^ 40 }
        if support.lua54 then
          huge[#huge + 1] = 2 ^ 62
          huge[#huge + 1] = math.maxinteger
        end
        local kib = string.rep("k", 1024)
        local accepted, refused = 0, 0
        for i = 1, 20000 do
          local r = world:random()
          local rank
          if r < 0.6 then
            rank = 1 + math.floor(world:random() * 12)
          elseif r < 0.8 then
            rank = huge[1 + math.floor(world:random() * #huge)]
          else
            rank = math.floor(world:random() * 2 ^ 31)
          end
          local peer = (i % 7 == 0) and kib .. i or binary(world, 1 + i % 40)
          local identity = (i % 11 == 0) and kib or binary(world, 1 + i % 9)
          local v = csm.value(identity, rank, { i = i })
          local ok, err
          local which = i % 4
          if which == 0 then
            ok, err = sm:receive_liveness_check(peer, v)
          elseif which == 1 then
            ok, err = sm:receive_proposal(peer, v)
          elseif which == 2 then
            ok, err = sm:receive_vote(binary(world, 5), peer, v)
          else
            ok, err = sm:receive_confirmation(peer, v)
          end
          if ok then accepted = accepted + 1 else
            refused = refused + 1
            assert.is_string(err)
          end
          if i % 1000 == 0 then
            assert.is_true(sm:inspect().events_queued <= 4)
            world:run("nowait")
            assert_bounded(sm, per_rank, window)
            if i % 5000 == 0 then
              -- the round moves on: everything at or below the new rank goes
              local active = sm:active_state():rank() + 2
              sm:set_active_state(csm.value("s" .. active, active))
              assert_bounded(sm, per_rank, window)
            end
          end
        end
        local s = assert_bounded(sm, per_rank, window)
        assert.is_true(accepted > 0 and refused > 0)
        assert.are.equal(refused, s.receives_refused)
        assert.is_true(s.entries_held <= 4 * per_rank * window)
        assert.are.equal("voting", sm:state())
        assert.is_false(sm:closed())
      end)

      it("stay within the default limits with 10^5 distinct peers #heavy", function()
        local world = csm.sim { seed = 5 }
        local sm = quiet { loop = world }
        local per_rank, window = 4096, 64
        local full = 0
        for i = 1, 100000 do
          local peer = "peer-" .. i
          -- every peer at rank 1: the map fills at peers_per_rank
          local ok, err = sm:receive_proposal(peer, csm.value("p", 1))
          if not ok then
            assert.are.equal("proposals map full at rank 1 (peers_per_rank 4096)", err)
            full = full + 1
          end
          -- votes spread over the window and past it
          sm:receive_vote("p", peer, csm.value("v", 1 + i % 80))
        end
        assert.are.equal(4096, sm:count("proposals", 1))
        assert.are.equal(100000 - 4096, full)
        local s = assert_bounded(sm, per_rank, window)
        assert.are.equal(64, s.ranks_held)
        assert.is_true(s.events_queued <= 4)
        sm:set_active_state(csm.value("s", 64))
        s = sm:inspect()
        assert.are.equal(0, s.ranks_held)
        assert.are.equal(0, s.entries_held)
      end)

      it("leave memory flat across floods once their ranks are forgotten", function()
        local world = csm.sim { seed = 6 }
        local sm = quiet { loop = world, limits = { peers_per_rank = 256, rank_window = 8 } }
        local function flood(base)
          for i = 1, 4000 do
            local rank = base + 1 + i % 8
            sm:receive_vote("p", "peer" .. i, csm.value("v", rank, { pad = string.rep("x", 64) }))
            sm:receive_liveness_check("peer" .. i, csm.value("c", rank))
          end
          world:run("nowait")
          sm:set_active_state(csm.value("s", base + 8))
          assert.are.equal(0, sm:inspect().entries_held)
          full_gc()
          return collectgarbage("count")
        end
        flood(0)
        local first = flood(8)
        local last
        for round = 2, 6 do last = flood(round * 8) end
        assert.is_true(last <= first + 64, string.format("%.0f KiB then %.0f KiB", first, last))
      end)
    end)

    describe("set_active_state", function()
      it("forgets every rank up to the adopted one in every map", function()
        local sm = quiet { limits = { rank_window = 8 } }
        for rank = 1, 8 do
          sm:receive_liveness_check("a", csm.value("c", rank))
          sm:receive_proposal("a", csm.value("p", rank))
          sm:receive_vote("a", "a", csm.value("v", rank))
          sm:receive_confirmation("a", csm.value("f", rank))
        end
        assert.are.equal(8, sm:inspect().ranks_held)
        sm:set_active_state(csm.value("s", 5))
        local s = sm:inspect()
        assert.are.equal(3, s.ranks_held)
        assert.are.same({ liveness = 3, proposals = 3, votes = 3, confirmations = 3 }, s.sizes)
        for _, kind in ipairs { "liveness", "proposals", "votes", "confirmations" } do
          for rank = 1, 5 do assert.are.equal(0, sm:count(kind, rank)) end
          for rank = 6, 8 do assert.are.equal(1, sm:count(kind, rank)) end
        end
        -- a lower active state forgets nothing more and reopens no rank
        sm:set_active_state(csm.value("s", 2))
        assert.are.equal(3, sm:inspect().ranks_held)
      end)

      it("forgets, on going back, the ranks past the new window", function()
        local sm = quiet { initial = csm.value("s", 100), limits = { rank_window = 8 } }
        for rank = 101, 108 do sm:receive_vote("a", "a", csm.value("v", rank)) end
        assert.are.equal(8, sm:inspect().ranks_held)
        -- a sync back to rank 98: the window is 99..106, so 107 and 108 go
        sm:set_active_state(csm.value("s", 98))
        assert_bounded(sm, 4096, 8)
        assert.are.equal(6, sm:inspect().ranks_held)
        -- going back again and again cannot make the ledger hold more
        for back = 90, 10, -10 do
          sm:set_active_state(csm.value("s", back))
          for rank = back + 1, back + 8 do sm:receive_vote("b", "b", csm.value("w", rank)) end
          assert_bounded(sm, 4096, 8)
        end
        assert.are.equal(8, sm:inspect().ranks_held)
        -- and no active state at all admits ranks 0 .. window - 1 only
        sm:set_active_state(nil)
        assert_bounded(sm, 4096, 8)
        assert.are.equal(0, sm:inspect().ranks_held)
      end)
    end)
  end)
end)
