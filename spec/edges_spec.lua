-- The engine's edges: nothing a Lua program does crashes, leaks or hangs
-- csm. One describe per edge found; the lifetime, livelock and luv edges
-- have their own below.
local csm = require "csm"
local support = require "support"

local error_of = support.error_of

-- A machine that stays in loading, on a fresh world.
local function quiet(opts)
  local o = { id = "n1", loop = csm.sim { seed = 1 }, initial = csm.value("g", 0),
              states = { loading = { behavior = false } } }
  for k, v in pairs(opts or {}) do o[k] = v end
  return csm.new(o), o.loop
end

describe("csm's edges", function()
  describe("internals", function()
    it("are on no machine's or loop's methods", function()
      local sm, world = quiet()
      for name in pairs(getmetatable(sm).__index) do
        assert.is_falsy(name:find("^_"), "sm:" .. name)
      end
      for name in pairs(getmetatable(world).__index) do
        assert.is_falsy(name:find("^_"), "loop:" .. name)
      end
      assert.is_nil(sm._data)
      assert.is_nil(world._post)
    end)

    it("are handed out once, to csm", function()
      assert.are.equal("csm.core.internals: already taken (csm.core is csm's own: require \"csm\")",
        error_of(require("csm.core").internals))
    end)

    it("cannot make the core read out of bounds, however they are misused", function()
      local internal = require("csm.internal").machine
      local sm = quiet()
      local fields = internal.data(sm)
      internal.set_events(sm, { start = 999, stop = -3, induce_sync = 1.5 })
      assert.are.equal("sm:send_event: event 'start' has an id out of range",
        error_of(sm.send_event, sm, "start"))
      assert.are.equal("sm:send_event: event 'stop' has an id out of range",
        error_of(sm.send_event, sm, "stop"))
      internal.set_events(sm, nil)
      assert.are.equal("sm:send_event: the machine's event names are missing",
        error_of(sm.send_event, sm, "x"))
      fields.state_names = nil
      assert.are.equal("sm:state: the machine's state names are missing", error_of(sm.state, sm))
      local layout = internal.layout(11, 23)
      assert.are.equal("layout:_set_transition: state id out of range",
        error_of(internal.set_transition, layout, 99, 0, 0))
      assert.are.equal("layout:_set_transition: event id out of range",
        error_of(internal.set_transition, layout, 0, 2 ^ 40, 0))
      assert.are.equal("layout:_set_state: state id out of range",
        error_of(internal.set_state, layout, 11, false, false, false))
      assert.are.equal("sm:_enter: state id out of range", error_of(internal.enter, sm, -1, 0))
      assert.are.equal("sm:_taken: edge out of range", error_of(internal.taken, sm, 1e9))
      assert.are.equal("layout:_set_timeout: event id out of range",
        error_of(internal.set_timeout, layout, 0, 1, 9999))
      assert.are.equal("csm.new: the number of states out of range",
        error_of(internal.layout, 1e9, 30))
      assert.are.equal("core.machine: bad argument #2 'layout' (csm layout expected, got nil)",
        error_of(internal.machine, csm.sim(), nil, nil))
      sm:close()
    end)
  end)

  describe("an id longer than limits.identity_bytes", function()
    it("is refused by csm.new", function()
      assert.are.equal("csm.new: option 'id' is 300 bytes, more than limits.identity_bytes (256)",
        error_of(csm.new, { id = string.rep("x", 300), loop = csm.sim() }))
      assert.are.equal("csm.new: option 'id' is 5 bytes, more than limits.identity_bytes (4)",
        error_of(csm.new, { id = "n0001", loop = csm.sim(), limits = { identity_bytes = 4 } }))
      assert.is_nil(error_of(csm.new, { id = "n001", loop = csm.sim(), limits = { identity_bytes = 4 } }))
    end)
  end)

  describe("stop", function()
    it("stops a machine in a custom state: every state has a stop edge", function()
      local world = csm.sim { seed = 1 }
      local sm = csm.new { id = "a", loop = world, states = { waiting = { behavior = false } },
        transitions = { { from = "stopped", event = "go", to = "waiting" } } }
      sm:send_event("go")
      world:run("nowait")
      assert.are.equal("waiting", sm:state())
      assert.is_true(sm:stop())
      world:run_for(1)
      assert.are.equal("stopped", sm:state())
    end)

    it("refuses, with code state, where the machine's transitions removed the edge", function()
      local world = csm.sim { seed = 1 }
      local sm = csm.new { id = "a", loop = world, states = { waiting = { behavior = false } },
        transitions = { { from = "stopped", event = "go", to = "waiting" },
                        { from = "waiting", event = "stop", to = false } } }
      sm:send_event("go")
      world:run("nowait")
      assert.are.same({ nil, "no stop transition from state 'waiting'", "state" }, { sm:stop() })
      assert.are.equal("waiting", sm:state())
      sm:close()
    end)
  end)

  describe("a closed machine", function()
    it("refuses every change, as it refuses receives", function()
      local sm = quiet()
      sm:close()
      local closed = { nil, "machine is closed", "closed" }
      assert.are.same(closed, { sm:set_active_state(csm.value("x", 3)) })
      assert.are.same(closed, { sm:set_next_state(csm.value("x", 1)) })
      assert.are.same(closed, { sm:set_collected(csm.value("x", 1)) })
      assert.are.same(closed, { sm:set_next_provers({ "a" }) })
      assert.are.same(closed, { sm:set_chosen_proposer("a") })
      assert.are.same(closed, { sm:prune(1) })
      assert.are.same(closed, { sm:store("votes", 1, "p", csm.value("x", 1)) })
      assert.are.same(closed, { sm:receive_vote("p", "q", csm.value("x", 1)) })
      assert.are.equal("g", sm:active_state():identity())
    end)
  end)

  describe("csm.sorted_pairs", function()
    it("iterates numbers, then strings, then false and true, each in order", function()
      local seen = {}
      for k, v in csm.sorted_pairs { b = 1, a = 2, [3] = 3, [1] = 4, [true] = 5, [false] = 6, [2.5] = 7 } do
        seen[#seen + 1] = tostring(k) .. "=" .. v
      end
      assert.are.same({ "1=4", "2.5=7", "3=3", "a=2", "b=1", "false=6", "true=5" }, seen)
      assert.are.equal("csm.sorted_pairs: a key of type table has no fixed order",
        error_of(csm.sorted_pairs, { [{}] = 1 }))
      assert.are.equal("csm.sorted_pairs: bad argument #1 't' (table expected, got nil)",
        error_of(csm.sorted_pairs))
    end)
  end)

  describe("a livelock in virtual time", function()
    it("raises after the world's bound of steps at one instant, naming the machine and its state", function()
      -- one node whose providers take no time: its rounds never let time move on
      local sm, world = support.machine { loop = csm.sim { seed = 1, steps_per_instant = 20000 } }
      sm:start()
      local err = error_of(world.run_for, world, 3)
      assert.is_truthy(err:find("^loop:run_for: no virtual time passed in 20000 steps at t = 1"), err)
      assert.is_truthy(err:find("machine 'n1' in state '%a+' ran last"), err)
      assert.is_truthy(err:find("csm.sim{steps_per_instant = n} sets the bound", 1, true), err)
      -- the world runs again, and raises again
      assert.is_truthy(error_of(world.run_until, world, function() return false end, 3)
        :find("^loop:run_until: no virtual time passed in 20000 steps"))
      sm:close()
    end)

    it("names the machine whose behaviour sleeps for no time, for ever", function()
      local world = csm.sim { seed = 1, steps_per_instant = 3000 }
      local sm = csm.new { id = "spinner", loop = world, states = { loading = { behavior = function(_, ctx)
        while true do ctx:sleep(0) end
      end } } }
      sm:start()
      local err = error_of(world.run_for, world, 5)
      assert.is_truthy(err:find("machine 'spinner' in state 'loading' ran last", 1, true), err)
      sm:close()
    end)

    it("names a loop:after callback that re-arms itself at once", function()
      local world = csm.sim { seed = 1, steps_per_instant = 5000 }
      local function again() world:after(0, again) end
      again()
      local err = error_of(world.run, world)
      assert.is_truthy(err:find("^loop:run: no virtual time passed in 5000 steps at t = 0"), err)
      assert.is_truthy(err:find("a loop:after callback ran last", 1, true), err)
    end)

    it("is bounded at 1,000,000 steps by default, and math.huge lifts the bound", function()
      local world = csm.sim { seed = 1, steps_per_instant = math.huge }
      local n = 0
      local function again() n = n + 1; if n < 30000 then world:after(0, again) end end
      again()
      world:run()
      assert.are.equal(30000, n)
      assert.are.equal("csm.sim: option 'steps_per_instant' must be an integer >= 1 or math.huge",
        error_of(csm.sim, { steps_per_instant = 0 }))
    end)

    it("lets time that moves, however slowly, go on", function()
      local world = csm.sim { seed = 1, steps_per_instant = 100 }
      local n = 0
      local function again() n = n + 1; world:after(1e-6, again) end
      again()
      world:run_for(0.01)
      assert.is_true(n > 1000)
    end)
  end)

  describe("lifetimes", function()
    local full_gc = support.full_gc

    -- Everything is made inside functions, so no register of the spec's
    -- holds it when the collector scans the stack (LuaJIT scans a frame's
    -- every slot).
    local function dropped_world(weak)
      local world = csm.sim { seed = 1 }
      world:after(10, function() end)
      world:after(0, function() end)
      local sm = csm.new { id = "n1", loop = world, states = { loading = { behavior = function(_, ctx)
        ctx:sleep(1e9)
      end } } }
      assert(sm:start())
      world:run_for(1)
      weak.world, weak.sm = world, sm
    end

    it("collects a dropped sim world with timers armed and a machine busy", function()
      local weak = setmetatable({}, { __mode = "v" })
      dropped_world(weak)
      full_gc()
      assert.is_nil(weak.world)
      assert.is_nil(weak.sm)
    end)

    local function closed_sleeper(world, weak, i, how)
      local sm
      sm = csm.new { id = "n" .. i, loop = world, states = { loading = { behavior = function(_, ctx)
        if how == "sleep" then
          ctx:sleep(1e9)
        elseif how == "await" then
          ctx:await(function() end) -- a resolve nobody calls
        elseif how == "spawn" then
          ctx:spawn(function() ctx:wait(1e9) end)
          ctx:wait(1e9)
        else -- closes itself, then keeps waiting
          sm:close()
          while true do ctx:sleep(1) end
        end
      end } } }
      assert(sm:start())
      world:run("nowait")
      if how ~= "self" then sm:close() end
      weak[i] = sm
    end

    for _, how in ipairs { "sleep", "await", "spawn", "self" } do
      it("collects a closed machine that was in ctx:" .. how .. ", while its world lives", function()
        local world = csm.sim { seed = 2 }
        local weak = setmetatable({}, { __mode = "v" })
        closed_sleeper(world, weak, 1, how)
        world:run_for(5)
        full_gc()
        assert.is_nil(weak[1])
        assert.is_false(world:run())
      end)
    end

    it("lets a closed machine's behaviour clean up once; a wait after that never returns", function()
      local world = csm.sim { seed = 6 }
      local seen = {}
      local sm = csm.new { id = "n1", loop = world, states = { loading = { behavior = function(_, ctx)
        local ok, why = ctx:sleep(1e9)
        seen[#seen + 1] = tostring(ok) .. " " .. tostring(why)
        while true do -- ignores the cancel: parks at its next wait
          seen[#seen + 1] = "again"
          ctx:sleep(1)
        end
      end } } }
      assert(sm:start())
      world:run_for(1)
      sm:close()
      world:run_for(10)
      assert.are.same({ "nil canceled", "again" }, seen)
    end)

    it("keeps a flat heap over thousands of closed sleeping machines #sweep", function()
      local world = csm.sim { seed = 3 }
      local weak = setmetatable({}, { __mode = "v" })
      local function batch(from)
        for i = from, from + 499 do closed_sleeper(world, weak, i, "sleep") end
        world:run("nowait")
      end
      batch(1)
      full_gc()
      local base = collectgarbage("count")
      for b = 1, 5 do batch(b * 500 + 1) end
      full_gc()
      assert.is_nil(next(weak))
      -- 2,500 machines more: a leak of even 0.1 KiB each would show
      assert.is_true(collectgarbage("count") - base < 100, collectgarbage("count") - base)
    end)

    it("keeps a flat heap over hundreds of harness.run calls #sweep", function()
      local harness = require "csm.lab.harness"
      for i = 1, 20 do harness.run { nodes = 4, ranks = 3, seed = i } end
      full_gc()
      local base = collectgarbage("count")
      for i = 1, 200 do harness.run { nodes = 4, ranks = 3, seed = i } end
      full_gc()
      -- each run held about 80 KiB for good before worlds were collectable
      assert.is_true(collectgarbage("count") - base < 200, collectgarbage("count") - base)
    end)

    describe("world:close", function()
      it("closes the world's machines and timers; later calls raise, naming the method", function()
        local world = csm.sim { seed = 4 }
        local fired = 0
        local timer = world:after(1, function() fired = fired + 1 end)
        local sm = csm.new { id = "n1", loop = world, states = { loading = { behavior = function(_, ctx)
          ctx:sleep(1e9)
        end } } }
        assert(sm:start())
        world:run_for(0.5)
        world:close()
        assert.is_true(sm:closed())
        assert.is_false(timer:active())
        assert.are.equal(0, fired)
        assert.are.equal(0.5, world:now()) -- reads still answer
        assert.are.equal("loop:run: the loop is closed", error_of(world.run, world))
        assert.are.equal("loop:run_for: the loop is closed", error_of(world.run_for, world, 1))
        assert.are.equal("loop:run_until: the loop is closed",
          error_of(world.run_until, world, function() return true end, 1))
        assert.are.equal("loop:after: the loop is closed", error_of(world.after, world, 1, print))
        assert.are.equal("csm.new: option 'loop' is closed", error_of(csm.new, { id = "n2", loop = world }))
        assert.are.same({ nil, "machine is closed", "closed" }, { sm:start() })
        timer:cancel() -- harmless
        world:close() -- and so is a second close
      end)

      it("may be called from one of the world's own callbacks", function()
        local world = csm.sim { seed = 5 }
        local after = 0
        world:after(1, function() world:close() end)
        world:after(2, function() after = after + 1 end)
        world:run()
        assert.are.equal(0, after)
        assert.are.equal(1, world:now())
      end)

      it("is refused on the real loop, which lives as long as the Lua state", function()
        local loop = csm.loop()
        assert.are.equal("loop:close: the real loop lives as long as the Lua state (close its "
          .. "machines instead)", error_of(loop.close, loop))
      end)
    end)
  end)

  describe("luv on the real loop", function()
    -- A machine that sleeps on the real loop, and a timer: csm's wake-ups on
    -- luv's loop are then all in use (a ready task and an armed timer).
    local BUSY = [[
local loop = csm.loop()
local fired = {}
loop:after(0.002, function() fired[#fired + 1] = "timer" end)
local sm = csm.new { id = "w", loop = loop,
  states = { work = { behavior = function(_, ctx) assert(ctx:sleep(0.003)); ctx:send_event("done") end } },
  transitions = { { from = "stopped", event = "start", to = "work" },
                  { from = "work", event = "done", to = "stopped" } } }
assert(sm:start())
]]

    for _, order in ipairs { "csm", "luv" } do
      it("may be walked and closed handle by handle when " .. order .. " is loaded first", function()
        local first = order == "csm" and 'local csm = require "csm"; local uv = require "luv"\n'
          or 'local uv = require "luv"; local csm = require "csm"\n'
        local out, status = support.run_source(first .. BUSY .. [[
local n = 0
uv.walk(function(h) n = n + 1; assert(tostring(h):match("^uv_")) end)
print("walked " .. n)
-- a luv program that closes every handle it sees, as one does on exit
uv.walk(function(h) if not h:is_closing() then h:close() end end)
assert(uv.run() == false)
-- csm makes its handles anew when it next needs them
assert(loop:run_until(function() return #fired == 1 and sm:state() == "stopped" end, 5))
-- and again, from inside one of csm's callbacks
loop:after(0.001, function() uv.walk(function(h) if not h:is_closing() then h:close() end end) end)
loop:after(0.004, function() fired[#fired + 1] = "after the walk" end)
assert(loop:run_until(function() return #fired == 2 end, 5))
uv.run()
print("done " .. fired[2])
]])
        assert.are.equal(0, status, out)
        assert.are.equal("walked 2\ndone after the walk\n", out)
      end)
    end

    it("reports a csm callback's error under uv.run() as luv reports its own", function()
      local program = [[
local uv = require "luv"
local csm = require "csm"
local which = ...
if which == "csm" then
  csm.loop():after(0.002, function() error("boom from " .. which) end)
else
  local t = uv.new_timer()
  t:start(2, 0, function() error("boom from " .. which) end)
end
uv.run()
print("not reached")
]]
      local luv_out, luv_status = support.run_source(program, "luv")
      local out, status = support.run_source(program, "csm")
      assert.is_truthy(luv_out:find("^Uncaught Error: [^\n]*boom from luv\n"), luv_out)
      assert.is_truthy(out:find("^Uncaught Error: [^\n]*boom from csm\n"), out)
      assert.are.equal(luv_status, status)
      assert.is_nil(out:find("not reached", 1, true))
    end)

    it("keeps luv's loop running for the rest under a host that goes on after errors", function()
      -- csm_luv_host handles luv's callback errors as an editor does: it
      -- reports each and returns to the loop
      local host = support.build_dir() .. "/csm_luv_host"
      local out, status = support.run_source([[
local csm = require "csm"
local uv = require "luv"
local ticks, seen = 0, {}
local t = uv.new_timer()
t:start(1, 1, function() ticks = ticks + 1; if ticks == 20 then t:close() end end)
local loop = csm.loop()
loop:after(0.002, function() error("boom from csm") end)
loop:after(0.010, function() seen[#seen + 1] = "later" end)
uv.run()
print(ticks, seen[1], host_errors())
]], nil, host)
      assert.are.equal(0, status, out)
      assert.is_truthy(out:find("host: a callback raised: [^\n]*boom from csm"), out)
      assert.is_truthy(out:find("20\tlater\t1\n", 1, true), out)
    end)

    it("raises a callback's error from the csm run that drove it, and luv's loop goes on", function()
      local uv = require "luv"
      local loop = csm.loop()
      loop:after(0.001, function() error("boom", 0) end)
      local err = error_of(loop.run_for, loop, 1)
      assert.is_truthy(err and err:find("^boom"), err)
      local fired = 0
      local t = uv.new_timer()
      t:start(1, 0, function()
        fired = fired + 1
        t:close()
      end)
      uv.run()
      assert.are.equal(1, fired)
    end)

    it("refuses a run of csm's inside luv's running loop, naming the function", function()
      local uv = require "luv"
      local loop = csm.loop()
      local err
      local t = uv.new_timer()
      t:start(0, 0, function()
        t:close()
        err = error_of(loop.run_for, loop, 0.01)
      end)
      uv.run()
      assert.is_truthy(err and err:find("^loop:run_for: "), err)
    end)
  end)

  describe("the smaller ones", function()
    it("csm.new refuses unknown trace fields, transitions with a hash part, a fractional grace", function()
      assert.are.equal("csm.new: trace: unknown field 'bogus'",
        error_of(csm.new, { id = "a", loop = csm.sim(), trace = { bogus = print } }))
      assert.are.equal("csm.new: option 'transitions' must be a list (key string \"x\")",
        error_of(csm.new, { id = "a", loop = csm.sim(), transitions = { x = {} } }))
      assert.are.equal("csm.new: timing.proving_grace must be a whole number of polls (got 1.5)",
        error_of(csm.new, { id = "a", loop = csm.sim(), timing = { proving_grace = 1.5 } }))
    end)

    it("finalize_votes returning a state of another rank is a provider error", function()
      local sm, world, log = support.machine {
        overrides = { voting = { finalize_votes = function() return csm.value("far", 40), "n1" end } },
      }
      sm:start()
      -- (the machine retries at once, for ever: stop at the first error)
      world:run_until(function() return #log.errors > 0 end, 3)
      local found
      for _, e in ipairs(log.errors) do
        found = found or e:find("finalize_votes returned a state of rank 40 deciding rank 1", 1, true)
      end
      assert.is_truthy(found, table.concat(log.errors, "\n"))
      assert.are.equal(0, sm:active_state():rank())
      sm:close()
    end)

    it("the conflicting-vote refusal names the voter and the rank", function()
      local sm = quiet()
      assert.is_true(sm:receive_vote("p", "n7", csm.value("x", 2)))
      assert.are.same({ nil, "conflicting vote from 'n7' at rank 2", "conflict" },
        { sm:receive_vote("p", "n7", csm.value("y", 2)) })
      local odd = "a\0b'" .. string.rep("z", 40)
      assert.is_true(sm:receive_vote("p", odd, csm.value("x", 3)))
      assert.are.same({ nil, "conflicting vote from 'a\\x00b\\x27zzzzzzzzzzzzzzzzzzzz...' at rank 3",
        "conflict" }, { sm:receive_vote("p", odd, csm.value("y", 3)) })
    end)

    it("tostring(sm) shows the id and the state", function()
      local sm = quiet()
      assert.are.equal('csm.machine("n1", stopped)', tostring(sm))
      sm:close()
      assert.are.equal('csm.machine("n1", stopped, closed)', tostring(sm))
    end)

    it("loop:random(n) and (m, n) give integers, as math.random does", function()
      local world = csm.sim { seed = 5 }
      local seen = {}
      for _ = 1, 200 do
        local r = world:random(6)
        assert.is_true(r >= 1 and r <= 6 and r % 1 == 0)
        seen[r] = true
        local s = world:random(-2, 2)
        assert.is_true(s >= -2 and s <= 2 and s % 1 == 0)
      end
      for r = 1, 6 do assert.is_true(seen[r]) end
      assert.are.equal("loop:random: empty interval [3, 1]", error_of(world.random, world, 3, 1))
      assert.are.equal("loop:random: bad argument #1 'n' (integer expected, got number)",
        error_of(world.random, world, 1.5))
      -- the same seed, the same numbers
      local a, b = csm.sim { seed = 9 }, csm.sim { seed = 9 }
      for _ = 1, 10 do assert.are.equal(a:random(1000), b:random(1000)) end
    end)

    it("mermaid quotes a state name that is not an identifier", function()
      local world = csm.sim { seed = 1 }
      local sm = csm.new { id = "a", loop = world, states = { ["wait here"] = { behavior = false } },
        transitions = { { from = "stopped", event = "go", to = "wait here" } } }
      local text = csm.viz.mermaid(sm)
      assert.is_truthy(text:find('state "wait here" as state12', 1, true), text)
      assert.is_truthy(text:find("stopped --> state12 : go", 1, true), text)
    end)

    it("scripts/env.sh works under dash too", function()
      local pipe = assert(io.popen("cd " .. support.quote(support.root)
        .. " && /bin/sh -c '. scripts/env.sh && echo \"$LUA_PATH\"' 2>&1"))
      local out = pipe:read("*a")
      pipe:close()
      assert.is_truthy(out:find("/lua/?.lua;", 1, true), out)
    end)
  end)
end)
