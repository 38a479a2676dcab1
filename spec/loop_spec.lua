-- csm.loop, csm.sim, csm.run and the loop and timer methods.
local csm = require "csm"
local minimal = require "csm.protocols.minimal"
local checker = require "csm.lab.checker"
local support = require "support"

local uv = require "luv"

local error_of = support.error_of

-- Runs fn with a luv guard that stops the real loop after seconds, so that a
-- broken run cannot hang the suite; returns whether the guard fired.
local function guarded(seconds, fn)
  local fired = false
  local guard = uv.new_timer()
  -- luv's timers count from the loop's cached time, which is as old as the
  -- loop's last run: bring it to now, or the guard fires early
  uv.update_time()
  guard:start(math.floor(seconds * 1000), 0, function()
    fired = true
    uv.stop()
  end)
  guard:unref()
  fn()
  guard:close()
  uv.run("nowait") -- finish the close (see the luv note below)
  return fired
end

-- The first line of an error message (callback errors carry a traceback).
local function first_line(err)
  return (tostring(err):match("^[^\n]*"))
end

-- A machine whose custom state "spin" re-enters itself until it has been
-- entered n times; log gets "from -event-> to @now" per transition.
local function spinner(world, n, log)
  local entered = 0
  local sm = csm.new {
    id = "spin", loop = world,
    states = {
      spin = {
        behavior = function(_, ctx)
          entered = entered + 1
          if entered < n then ctx:send_event("again") end
        end,
      },
    },
    transitions = {
      { from = "stopped", event = "start", to = "spin" },
      { from = "spin", event = "again", to = "spin" },
    },
  }
  sm:add_listener(function(from, to, event)
    log[#log + 1] = string.format("%s -%s-> %s @%g", from, event, to, world:now())
  end)
  return sm
end

describe("csm", function()
  describe("loop", function()
    it("returns the same real loop every time", function()
      local loop = csm.loop()
      assert.is_true(rawequal(loop, csm.loop()))
      assert.is_false(loop:is_sim())
    end)

    it("has a readable tostring", function()
      assert.are.equal("csm.loop", tostring(csm.loop()):sub(1, 8))
    end)
  end)

  describe("sim", function()
    it("returns a new world each time", function()
      local a, b = csm.sim { seed = 1 }, csm.sim { seed = 1 }
      assert.is_false(rawequal(a, b))
      assert.is_true(a:is_sim())
      assert.is_false(rawequal(a, csm.loop()))
    end)

    it("starts at virtual time 0", function()
      assert.are.equal(0, csm.sim { seed = 3 }:now())
      assert.are.equal(0, csm.sim():now())
    end)

    it("has a tostring naming the world", function()
      assert.are.equal("csm.sim (t=", tostring(csm.sim()):sub(1, 11))
    end)

    it("is deterministic without a seed", function()
      assert.are.equal(csm.sim():random(), csm.sim():random())
    end)

    it("raises on bad options", function()
      assert.are.equal("csm.sim: bad argument #1 'options' (table expected, got number)",
        error_of(csm.sim, 5))
      assert.are.equal("csm.sim: unknown option 'sed'", error_of(csm.sim, { sed = 1 }))
      assert.are.equal("csm.sim: option 'seed' must be an integer in [0, 2^53] (got string)",
        error_of(csm.sim, { seed = "1" }))
      assert.are.equal("csm.sim: option 'seed' must be an integer in [0, 2^53] (got 1.5)",
        error_of(csm.sim, { seed = 1.5 }))
      assert.is_truthy(error_of(csm.sim, { seed = 0 / 0 }))
      assert.are.equal("csm.sim: option 'seed' must be an integer in [0, 2^53] "
        .. "(got 1.152921504606847e+18)", error_of(csm.sim, { seed = 2 ^ 60 }))
      assert.are.equal("csm.sim: option 'seed' must be an integer in [0, 2^53] (got -7)",
        error_of(csm.sim, { seed = -7 }))
      assert.is_nil(error_of(csm.sim, { seed = 2 ^ 53 }))
    end)
  end)

  describe("run", function()
    it("runs the real loop", function()
      local fired = 0
      csm.loop():after(0, function() fired = fired + 1 end)
      csm.run("nowait")
      assert.are.equal(1, fired)
    end)
  end)
end)

describe("csm loop", function()
  describe("now", function()
    it("stays put in a sim until the world runs", function()
      local world = csm.sim { seed = 1 }
      world:after(5, function() end)
      assert.are.equal(0, world:now())
      world:run()
      assert.are.equal(5, world:now())
    end)

    it("never goes back on the real loop", function()
      local loop = csm.loop()
      local a = loop:now()
      loop:run("nowait")
      local b = loop:now()
      assert.is_true(a >= 0)
      assert.is_true(b >= a)
    end)

    it("raises when self is not a loop", function()
      local world = csm.sim()
      assert.are.equal("loop:now: bad self (csm loop expected, got nil)",
        error_of(world.now, nil))
      assert.are.equal("loop:now: bad self (csm loop expected, got table)",
        error_of(world.now, {}))
    end)
  end)

  describe("run", function()
    it("runs a sim until nothing is left and returns false", function()
      local world = csm.sim { seed = 1 }
      local seen = {}
      world:after(2, function() seen[#seen + 1] = world:now() end)
      world:after(1, function()
        seen[#seen + 1] = world:now()
        world:after(5, function() seen[#seen + 1] = world:now() end)
      end)
      assert.is_false(world:run())
      assert.are.same({ 1, 2, 6 }, seen)
      assert.are.equal(6, world:now())
    end)

    it("accepts the mode \"default\"", function()
      local world = csm.sim { seed = 1 }
      local fired = 0
      world:after(1, function() fired = fired + 1 end)
      world:after(2, function() fired = fired + 1 end)
      assert.is_false(world:run("default"))
      assert.are.equal(2, fired)
    end)

    it("runs the timers of the next instant in mode \"once\"", function()
      local world = csm.sim { seed = 1 }
      local seen = {}
      world:after(1, function() seen[#seen + 1] = "a" end)
      world:after(1, function() seen[#seen + 1] = "b" end)
      world:after(2, function() seen[#seen + 1] = "c" end)
      assert.is_true(world:run("once"))
      assert.are.same({ "a", "b" }, seen)
      assert.are.equal(1, world:now())
      assert.is_false(world:run("once"))
      assert.are.same({ "a", "b", "c" }, seen)
      assert.are.equal(2, world:now())
    end)

    it("runs ready work without advancing time in mode \"once\"", function()
      local world = csm.sim { seed = 1 }
      local log = {}
      local sm = spinner(world, 3, log)
      local fired = false
      world:after(1, function() fired = true end)
      sm:start()
      assert.is_true(world:run("once"))
      assert.are.equal(0, world:now())
      assert.is_false(fired)
      assert.are.same({ "stopped -start-> spin @0", "spin -again-> spin @0",
        "spin -again-> spin @0" }, log)
      sm:close()
    end)

    it("runs only what is due now in mode \"nowait\"", function()
      local world = csm.sim { seed = 1 }
      local seen = {}
      world:after(0, function() seen[#seen + 1] = "now" end)
      world:after(1, function() seen[#seen + 1] = "later" end)
      assert.is_true(world:run("nowait"))
      assert.are.same({ "now" }, seen)
      assert.are.equal(0, world:now())
      assert.is_true(world:run("nowait"))
      assert.are.same({ "now" }, seen)
    end)

    it("returns false in mode \"nowait\" when nothing is left", function()
      assert.is_false(csm.sim { seed = 1 }:run("nowait"))
    end)

    it("raises on a bad mode", function()
      local world = csm.sim()
      assert.are.equal(
        "loop:run: bad argument #1 'mode' (\"default\", \"once\" or \"nowait\" expected, got string)",
        error_of(world.run, world, "forever"))
      assert.are.equal(
        "loop:run: bad argument #1 'mode' (\"default\", \"once\" or \"nowait\" expected, got number)",
        error_of(world.run, world, 1))
    end)

    it("fires a due timer on the real loop in mode \"nowait\"", function()
      local loop = csm.loop()
      local fired = 0
      loop:after(0, function() fired = fired + 1 end)
      loop:run("nowait")
      assert.are.equal(1, fired)
    end)

    it("waits for the next timer on the real loop in mode \"once\"", function()
      local loop = csm.loop()
      local fired = 0
      loop:after(0.001, function() fired = fired + 1 end)
      -- libuv may end an iteration before the timer is due (a poll woken
      -- early): "once" blocks, but a few iterations may be needed
      local iterations = 0
      repeat
        loop:run("once")
        iterations = iterations + 1
      until fired > 0 or iterations == 100
      assert.are.equal(1, fired)
    end)

    it("runs the real loop until nothing is left", function()
      local loop = csm.loop()
      local seen = {}
      loop:after(0.003, function() seen[#seen + 1] = "second" end)
      loop:after(0.001, function()
        seen[#seen + 1] = "first"
        loop:after(0.001, function() seen[#seen + 1] = "third" end)
      end)
      local more
      assert.is_false(guarded(5, function() more = loop:run() end))
      assert.is_false(more)
      assert.is_truthy(support.find(seen, "third"))
      assert.are.equal("first", seen[1])
      assert.are.equal(3, #seen)
    end)
  end)

  describe("run_for", function()
    it("ends a sim exactly at the limit", function()
      local world = csm.sim { seed = 1 }
      world:run_for(2.5)
      assert.are.equal(2.5, world:now())
      world:run_for(0.5)
      assert.are.equal(3, world:now())
    end)

    it("fires the timers up to the limit, the one at the limit included", function()
      local world = csm.sim { seed = 1 }
      local seen = {}
      for _, t in ipairs { 1, 2, 3 } do
        world:after(t, function() seen[#seen + 1] = t end)
      end
      world:run_for(2)
      assert.are.same({ 1, 2 }, seen)
      assert.are.equal(2, world:now())
      world:run_for(10)
      assert.are.same({ 1, 2, 3 }, seen)
      assert.are.equal(12, world:now())
    end)

    it("runs zero seconds", function()
      local world = csm.sim { seed = 1 }
      local fired = 0
      world:after(0, function() fired = fired + 1 end)
      world:after(1, function() fired = fired + 1 end)
      world:run_for(0)
      assert.are.equal(1, fired)
      assert.are.equal(0, world:now())
    end)

    it("raises on bad seconds", function()
      local world = csm.sim()
      assert.are.equal(
        "loop:run_for: bad argument #1 'seconds' (number >= 0 expected, got number)",
        error_of(world.run_for, world, -1))
      assert.are.equal(
        "loop:run_for: bad argument #1 'seconds' (number >= 0 expected, got string)",
        error_of(world.run_for, world, "1"))
      assert.are.equal(
        "loop:run_for: bad argument #1 'seconds' (number >= 0 expected, got no value)",
        error_of(world.run_for, world))
      assert.are.equal(
        "loop:run_for: bad argument #1 'seconds' (number >= 0 expected, got number)",
        error_of(world.run_for, world, 0 / 0))
    end)

    it("fires a short timer on the real loop and not a long one", function()
      local loop = csm.loop()
      local short, long = 0, 0
      loop:after(0.001, function() short = short + 1 end)
      local t = loop:after(60, function() long = long + 1 end)
      loop:run_for(0.02)
      t:cancel()
      assert.are.equal(1, short)
      assert.are.equal(0, long)
    end)
  end)

  describe("run_until", function()
    it("returns true as soon as the predicate holds", function()
      local world = csm.sim { seed = 1 }
      local n = 0
      for t = 1, 5 do world:after(t, function() n = n + 1 end) end
      assert.is_true(world:run_until(function() return n == 3 end, 100))
      assert.are.equal(3, world:now())
      assert.are.equal(3, n)
    end)

    it("returns false on timeout with virtual time at the limit", function()
      local world = csm.sim { seed = 1 }
      local fired = 0
      world:after(1, function() fired = fired + 1 end)
      world:after(20, function() fired = fired + 1 end)
      assert.is_false(world:run_until(function() return false end, 7.5))
      assert.are.equal(7.5, world:now())
      assert.are.equal(1, fired)
    end)

    it("reaches the limit when nothing is armed", function()
      local world = csm.sim { seed = 1 }
      assert.is_false(world:run_until(function() return false end, 30))
      assert.are.equal(30, world:now())
    end)

    it("runs nothing when the predicate holds at once", function()
      local world = csm.sim { seed = 1 }
      local fired = false
      world:after(0, function() fired = true end)
      assert.is_true(world:run_until(function() return true end, 10))
      assert.is_false(fired)
      assert.are.equal(0, world:now())
    end)

    it("raises the predicate's error", function()
      local world = csm.sim { seed = 1 }
      world:after(1, function() end)
      assert.are.equal("bad predicate", error_of(world.run_until, world, function()
        if world:now() > 0 then error("bad predicate") end
        return false
      end, 10))
    end)

    it("raises on bad arguments", function()
      local world = csm.sim()
      assert.are.equal(
        "loop:run_until: bad argument #1 'predicate' (function expected, got nil)",
        error_of(world.run_until, world, nil, 1))
      assert.are.equal(
        "loop:run_until: bad argument #2 'timeout_seconds' (number >= 0 expected, got no value)",
        error_of(world.run_until, world, function() end))
      assert.are.equal(
        "loop:run_until: bad argument #2 'timeout_seconds' (number >= 0 expected, got number)",
        error_of(world.run_until, world, function() end, -2))
    end)

    it("returns true on the real loop when the predicate holds", function()
      local loop = csm.loop()
      local fired = false
      loop:after(0.001, function() fired = true end)
      assert.is_true(loop:run_until(function() return fired end, 5))
    end)

    it("returns as soon as a timer due before the step began made the predicate hold", function()
      -- the timer is due when uv.run("once") starts, so it fires before the
      -- poll; the step must not then wait in the poll for the deadline
      local loop = csm.loop()
      local fired = false
      loop:after(0.001, function() fired = true end)
      local start = uv.hrtime()
      while uv.hrtime() - start < 3e6 do end
      local calls = 0
      assert.is_true(loop:run_until(function()
        calls = calls + 1
        return fired
      end, 30))
      assert.are.equal(2, calls)
    end)

    it("returns false on the real loop on timeout", function()
      local loop = csm.loop()
      local calls = 0
      assert.is_false(loop:run_until(function()
        calls = calls + 1
        return false
      end, 0.005))
      assert.is_true(calls >= 1)
    end)
  end)

  describe("after", function()
    it("fires once after the delay", function()
      local world = csm.sim { seed = 1 }
      local at = {}
      world:after(1.5, function() at[#at + 1] = world:now() end)
      world:run()
      assert.are.same({ 1.5 }, at)
    end)

    it("fires timers in due order, ties in arming order", function()
      local world = csm.sim { seed = 1 }
      local seen = {}
      local function mark(name) return function() seen[#seen + 1] = name end end
      world:after(3, mark("c"))
      world:after(1, mark("a1"))
      world:after(2, mark("b"))
      world:after(1, mark("a2"))
      world:after(0, mark("zero"))
      world:run()
      assert.are.same({ "zero", "a1", "a2", "b", "c" }, seen)
    end)

    it("measures the delay from the time of arming", function()
      local world = csm.sim { seed = 1 }
      local at
      world:after(2, function()
        world:after(3, function() at = world:now() end)
      end)
      world:run()
      assert.are.equal(5, at)
    end)

    it("fires a timer nobody references", function()
      local world = csm.sim { seed = 1 }
      local fired = false
      world:after(1, function() fired = true end)
      collectgarbage()
      collectgarbage()
      world:run()
      assert.is_true(fired)
    end)

    it("fires timers in due order on the real loop", function()
      local loop = csm.loop()
      local seen = {}
      loop:after(0.05, function() seen[#seen + 1] = "late" end)
      loop:after(0.001, function() seen[#seen + 1] = "early" end)
      assert.is_true(loop:run_until(function() return #seen == 2 end, 5))
      assert.are.same({ "early", "late" }, seen)
    end)

    it("raises on bad arguments", function()
      local world = csm.sim()
      assert.are.equal(
        "loop:after: bad argument #1 'seconds' (number >= 0 expected, got number)",
        error_of(world.after, world, -1, function() end))
      assert.are.equal(
        "loop:after: bad argument #1 'seconds' (number >= 0 expected, got nil)",
        error_of(world.after, world, nil, function() end))
      assert.are.equal("loop:after: bad argument #2 'fn' (function expected, got no value)",
        error_of(world.after, world, 1))
      assert.are.equal("loop:after: bad argument #2 'fn' (function expected, got table)",
        error_of(world.after, world, 1, {}))
      assert.are.equal("loop:after: bad self (csm loop expected, got string)",
        error_of(world.after, "x", 1, function() end))
    end)
  end)

  describe("random", function()
    it("returns floats in [0,1)", function()
      local world = csm.sim { seed = 42 }
      for _ = 1, 1000 do
        local x = world:random()
        assert.is_true(x >= 0 and x < 1)
      end
      local y = csm.loop():random()
      assert.is_true(y >= 0 and y < 1)
    end)

    it("gives the same sequence for the same seed", function()
      local a, b = csm.sim { seed = 7 }, csm.sim { seed = 7 }
      for _ = 1, 20 do assert.are.equal(a:random(), b:random()) end
    end)

    it("gives different sequences for different seeds", function()
      local a, b = csm.sim { seed = 7 }, csm.sim { seed = 8 }
      local same = 0
      for _ = 1, 20 do
        if a:random() == b:random() then same = same + 1 end
      end
      assert.are.equal(0, same)
    end)

    it("is not constant", function()
      local world = csm.sim { seed = 1 }
      local first, differs = world:random(), false
      for _ = 1, 10 do
        if world:random() ~= first then differs = true end
      end
      assert.is_true(differs)
    end)
  end)

  describe("stop", function()
    it("ends a sim run from a callback, leaving later timers for the next run", function()
      local world = csm.sim { seed = 1 }
      local seen = {}
      world:after(1, function()
        seen[#seen + 1] = 1
        world:stop()
      end)
      world:after(2, function() seen[#seen + 1] = 2 end)
      assert.is_true(world:run())
      assert.are.same({ 1 }, seen)
      assert.are.equal(1, world:now())
      assert.is_false(world:run())
      assert.are.same({ 1, 2 }, seen)
    end)

    it("ends run_for early without moving time to the limit", function()
      local world = csm.sim { seed = 1 }
      world:after(1, function() world:stop() end)
      world:run_for(10)
      assert.are.equal(1, world:now())
    end)

    it("ends run_until with false", function()
      local world = csm.sim { seed = 1 }
      world:after(1, function() world:stop() end)
      assert.is_false(world:run_until(function() return false end, 10))
      assert.are.equal(1, world:now())
    end)

    it("ends a real loop run with a long timer pending", function()
      local loop = csm.loop()
      local long = loop:after(60, function() end)
      loop:after(0.001, function() loop:stop() end)
      assert.is_true(loop:run())
      assert.is_true(long:active())
      long:cancel()
    end)
  end)

  describe("errors in callbacks", function()
    it("come out of run with a traceback", function()
      local world = csm.sim { seed = 1 }
      world:after(1, function() error("boom") end)
      local err = error_of(world.run, world)
      assert.are.equal("boom", first_line(err))
      assert.is_truthy(err:find("stack traceback:", 1, true))
    end)

    it("come out of run_for", function()
      local world = csm.sim { seed = 1 }
      world:after(1, function() error("in run_for") end)
      assert.are.equal("in run_for", first_line(error_of(world.run_for, world, 5)))
      assert.are.equal(1, world:now())
    end)

    it("come out of run_until", function()
      local world = csm.sim { seed = 1 }
      world:after(1, function() error("in run_until") end)
      assert.are.equal("in run_until",
        first_line(error_of(world.run_until, world, function() return false end, 5)))
    end)

    it("keep a non-string error value as it is", function()
      local world = csm.sim { seed = 1 }
      local value = { code = 7 }
      world:after(1, function() error(value) end)
      local ok, err = pcall(world.run, world)
      assert.is_false(ok)
      assert.are.equal(value, err)
    end)

    it("leave the other timers for the next run", function()
      local world = csm.sim { seed = 1 }
      local later = false
      world:after(1, function() error("first") end)
      world:after(2, function() later = true end)
      assert.is_truthy(error_of(world.run, world))
      assert.is_false(later)
      assert.is_false(world:run())
      assert.is_true(later)
    end)

    it("come out of the real loop's run_until", function()
      local loop = csm.loop()
      loop:after(0.001, function() error("real boom") end)
      assert.are.equal("real boom",
        first_line(error_of(loop.run_until, loop, function() return false end, 5)))
    end)
  end)
end)

describe("csm timer", function()
  describe("active", function()
    it("is true while armed and false once fired", function()
      local world = csm.sim { seed = 1 }
      local t = world:after(1, function() end)
      assert.is_true(t:active())
      world:run()
      assert.is_false(t:active())
    end)
  end)

  describe("cancel", function()
    it("keeps the callback from running", function()
      local world = csm.sim { seed = 1 }
      local fired = false
      local t = world:after(1, function() fired = true end)
      t:cancel()
      assert.is_false(t:active())
      assert.is_false(world:run())
      assert.is_false(fired)
      assert.are.equal(0, world:now())
    end)

    it("is harmless twice and after firing", function()
      local world = csm.sim { seed = 1 }
      local n = 0
      local t = world:after(1, function() n = n + 1 end)
      world:run()
      t:cancel()
      t:cancel()
      assert.are.equal(1, n)
    end)

    it("works from inside another timer's callback", function()
      local world = csm.sim { seed = 1 }
      local fired = false
      local victim = world:after(2, function() fired = true end)
      world:after(1, function() victim:cancel() end)
      world:run()
      assert.is_false(fired)
    end)

    it("keeps a real loop callback from running", function()
      local loop = csm.loop()
      local fired = false
      local t = loop:after(0.001, function() fired = true end)
      t:cancel()
      loop:run_for(0.005)
      assert.is_false(fired)
    end)

    it("raises when self is not a timer", function()
      local t = csm.sim():after(1, function() end)
      assert.are.equal("timer:cancel: bad self (csm timer expected, got nil)",
        error_of(t.cancel, nil))
      assert.are.equal("timer:active: bad self (csm timer expected, got table)",
        error_of(t.active, {}))
      t:cancel()
    end)
  end)
end)

describe("csm sim world", function()
  describe("time", function()
    it("advances only when nothing is runnable", function()
      local world = csm.sim { seed = 1 }
      local log = {}
      local sm = spinner(world, 200, log)
      local timer_at, transitions_then
      world:after(1, function()
        timer_at = world:now()
        transitions_then = #log
      end)
      sm:start()
      world:run()
      assert.are.equal(200, #log)
      for _, line in ipairs(log) do assert.are.equal("@0", line:match("@%S+$")) end
      -- the timer waited for all the work ready at time 0
      assert.are.equal(200, transitions_then)
      assert.are.equal(1, timer_at)
    end)

    it("jumps to the next timer", function()
      local world = csm.sim { seed = 1 }
      local sm = csm.new {
        id = "sleeper", loop = world,
        states = { nap = { timeout = 3600, on_timeout = "wake_up" }, awake = {} },
        transitions = {
          { from = "stopped", event = "start", to = "nap" },
          { from = "nap", event = "wake_up", to = "awake" },
        },
      }
      local at
      sm:add_listener(function(_, to) if to == "awake" then at = world:now() end end)
      sm:start()
      assert.is_true(world:run_until(function() return sm:state() == "awake" end, 1e6))
      assert.are.equal(3600, at)
      assert.are.equal(3600, world:now())
      sm:close()
    end)
  end)

  describe("machines", function()
    it("share one world", function()
      local world = csm.sim { seed = 1 }
      -- proving takes a virtual second, so neither machine spins at one instant
      local slow = {
        leader = {
          prove_next_state = function(_, prior, _, ctx)
            assert(ctx:sleep(1))
            return csm.value("p" .. (prior:rank() + 1), prior:rank() + 1)
          end,
        },
      }
      local a = support.machine { id = "a", loop = world, overrides = slow }
      local b = support.machine { id = "b", loop = world, overrides = slow }
      a:start()
      b:start()
      assert.is_true(world:run_until(function()
        return a:active_state():rank() >= 5 and b:active_state():rank() >= 5
      end, 60))
      assert.is_true(world:now() >= 5)
      a:close()
      b:close()
      assert.is_nil(a:error())
      assert.is_nil(b:error())
    end)

    it("run only when their own world runs", function()
      local w1, w2 = csm.sim { seed = 1 }, csm.sim { seed = 1 }
      local log1, log2 = {}, {}
      local a, b = spinner(w1, 3, log1), spinner(w2, 3, log2)
      a:start()
      b:start()
      w1:run()
      assert.are.equal(3, #log1)
      assert.are.equal(0, #log2)
      w2:run()
      assert.are.equal(3, #log2)
      a:close()
      b:close()
    end)

    it("give the same transitions at the same times for the same seed", function()
      local function scenario(seed)
        local world = csm.sim { seed = seed }
        local c = minimal.cluster { nodes = 4, loop = world, latency = 0.01, timing = { scale = 0.1 } }
        -- jitter from the world's generator
        function c:deliver(fn)
          self.delivered = self.delivered + 1
          self.loop:after(self.latency + self.loop:random() * 0.01, fn)
        end
        local trace = {}
        for _, node in ipairs(c.nodes) do
          node.sm:add_listener(function(from, to, event)
            trace[#trace + 1] = string.format("%.17g %s %s -%s-> %s", world:now(), node.name, from,
              event, to)
          end)
        end
        c:start()
        local ok = world:run_until(function() return c:lowest_height() >= 3 end, 600)
        c:stop()
        assert.is_true(ok)
        assert.is_true(checker.logs_agree(c.nodes))
        return trace
      end
      local first, second, other = scenario(11), scenario(11), scenario(12)
      assert.is_true(#first > 50)
      assert.are.same(first, second)
      assert.are_not.same(first, other)
      -- virtual time did pass between transitions
      assert.are_not.equal(first[1]:match("^%S+"), first[#first]:match("^%S+"))
    end)
  end)
end)

describe("csm real loop", function()
  -- luv frees a closed handle when Lua closes even if the loop never ran its
  -- close callback, and walking the loop at exit then crashes (luv #244): let
  -- every close finish.
  after_each(function() uv.run("nowait") end)

  describe("with luv", function()
    it("fires a luv timer and a csm timer in one uv.run()", function()
      local seen = {}
      local t = uv.new_timer()
      t:start(2, 0, function()
        seen[#seen + 1] = "luv"
        t:close()
      end)
      csm.loop():after(0.001, function() seen[#seen + 1] = "csm" end)
      assert.is_false(guarded(5, function() uv.run() end))
      table.sort(seen)
      assert.are.same({ "csm", "luv" }, seen)
    end)

    it("runs a luv timer and a csm machine in one uv.run()", function()
      local seen = {}
      local sm = csm.new {
        id = "real", loop = csm.loop(),
        states = {
          work = {
            behavior = function(_, ctx)
              assert(ctx:sleep(0.001))
              ctx:send_event("done")
            end,
          },
        },
        transitions = {
          { from = "stopped", event = "start", to = "work" },
          { from = "work", event = "done", to = "stopped" },
        },
      }
      sm:add_listener(function(from, to, event) seen[#seen + 1] = from .. " -" .. event .. "-> " .. to end)
      local t = uv.new_timer()
      t:start(1, 0, function()
        seen[#seen + 1] = "luv"
        t:close()
      end)
      sm:start()
      assert.is_false(guarded(5, function() uv.run() end))
      assert.is_truthy(support.find(seen, "luv"))
      assert.is_truthy(support.find(seen, "stopped -start-> work"))
      assert.is_truthy(support.find(seen, "work -done-> stopped"))
      assert.are.equal(3, #seen)
      assert.is_nil(sm:error())
      sm:close()
    end)

    it("lets a behaviour await a luv callback", function()
      local got
      local sm = csm.new {
        id = "awaiter", loop = csm.loop(),
        states = {
          work = {
            behavior = function(_, ctx)
              got = { ctx:await(function(resolve)
                local t = uv.new_timer()
                t:start(1, 0, function()
                  t:close()
                  resolve("from luv", 2)
                end)
              end) }
              ctx:send_event("done")
            end,
          },
        },
        transitions = {
          { from = "stopped", event = "start", to = "work" },
          { from = "work", event = "done", to = "stopped" },
        },
      }
      sm:start()
      assert.is_true(csm.loop():run_until(function()
        return sm:transition_count() == 2
      end, 5))
      assert.are.same({ "from luv", 2 }, got)
      assert.are.equal("stopped", sm:state())
      sm:close()
    end)

    it("lets csm.run() drive a luv timer", function()
      local fired = 0
      local t = uv.new_timer()
      t:start(1, 0, function()
        fired = fired + 1
        t:close()
      end)
      assert.is_false(guarded(5, function() csm.run() end))
      assert.are.equal(1, fired)
    end)

    it("lets run_for and run_until drive luv timers", function()
      local fired = 0
      local t = uv.new_timer()
      t:start(1, 0, function()
        fired = fired + 1
        t:close()
      end)
      csm.loop():run_for(0.02)
      assert.are.equal(1, fired)
      local t2 = uv.new_timer()
      t2:start(1, 0, function()
        fired = fired + 1
        t2:close()
      end)
      assert.is_true(csm.loop():run_until(function() return fired == 2 end, 5))
    end)
  end)
end)
