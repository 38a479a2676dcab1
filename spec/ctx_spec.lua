-- ctx: what a behaviour gets to sleep, wait, await, spawn and send events
-- (guide: "ctx"), tested through custom states on a sim world.
local csm = require "csm"
local support = require "support"

local error_of = support.error_of
local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

-- A machine on world whose state "work" runs behavior. start enters work;
-- "leave" goes to "other", "again" re-enters work, "go" leads to "third"
-- from work and from other. log.transitions gets "from -event-> to @now",
-- log.errors the trace.error calls.
local function machine(world, behavior, id)
  local log = { transitions = {}, errors = {} }
  local sm = csm.new {
    id = id or "n1", loop = world,
    trace = {
      error = function(msg, err) log.errors[#log.errors + 1] = msg .. ": " .. tostring(err) end,
    },
    states = { work = { behavior = behavior }, other = {}, third = {} },
    transitions = {
      { from = "stopped", event = "start", to = "work" },
      { from = "work", event = "leave", to = "other" },
      { from = "work", event = "again", to = "work" },
      { from = "work", event = "go", to = "third" },
      { from = "other", event = "go", to = "third" },
    },
  }
  sm:add_listener(function(from, to, event)
    log.transitions[#log.transitions + 1] =
      string.format("%s -%s-> %s @%g", from, event, to, world:now())
  end)
  return sm, log
end

-- Records, in list, the results of a call with the virtual time after it.
local function record(list, world, name, ...)
  local r = pack(...)
  list[#list + 1] = { name = name, at = world:now(), n = r.n, unpack(r, 1, r.n) }
end

local function run(world, seconds)
  world:run_until(function() return false end, seconds or 100)
end

describe("csm ctx", function()
  describe("cancelled", function()
    it("is false while the state lasts and true once it is left", function()
      local world = csm.sim { seed = 1 }
      local ctx, during
      local sm = machine(world, function(_, c)
        ctx = c
        during = c:cancelled()
        c:sleep(100)
      end)
      sm:start()
      run(world, 1)
      assert.is_false(during)
      assert.is_false(ctx:cancelled())
      sm:send_event("leave")
      run(world, 1)
      assert.is_true(ctx:cancelled())
      assert.are.equal("other", sm:state())
    end)

    it("gives each run of a behaviour its own ctx", function()
      local world = csm.sim { seed = 1 }
      local ctxs = {}
      local sm = machine(world, function(_, c)
        ctxs[#ctxs + 1] = c
        if #ctxs == 1 then c:send_event("again") end
      end)
      sm:start()
      run(world, 1)
      assert.are.equal(2, #ctxs)
      assert.are_not.equal(ctxs[1], ctxs[2])
      assert.is_true(ctxs[1]:cancelled())
      assert.is_false(ctxs[2]:cancelled())
    end)

    it("is true after the machine is closed", function()
      local world = csm.sim { seed = 1 }
      local ctx
      local sm = machine(world, function(_, c)
        ctx = c
        c:sleep(100)
      end)
      sm:start()
      run(world, 1)
      sm:close()
      assert.is_true(ctx:cancelled())
    end)
  end)

  describe("sleep", function()
    it("returns true after the virtual delay", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "sleep", ctx:sleep(2.5))
        record(out, world, "sleep", ctx:sleep(0))
      end)
      sm:start()
      run(world)
      assert.are.equal(2, #out)
      assert.are.same({ name = "sleep", at = 2.5, n = 1, true }, out[1])
      assert.are.same({ name = "sleep", at = 2.5, n = 1, true }, out[2])
    end)

    it("returns nil, \"canceled\" when the state is left meanwhile", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "sleep", ctx:sleep(10))
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({ { name = "sleep", at = 1, n = 2, nil, "canceled" } }, out)
      assert.are.equal("other", sm:state())
    end)

    it("returns nil, \"canceled\" at once on a cancelled ctx", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        ctx:sleep(10)
        record(out, world, "sleep", ctx:sleep(5))
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({ { name = "sleep", at = 1, n = 2, nil, "canceled" } }, out)
    end)

    it("lets timers and other machines go on", function()
      local world = csm.sim { seed = 1 }
      local a = machine(world, function(_, ctx) ctx:sleep(100) end, "a")
      local b = machine(world, function(_, ctx)
        ctx:sleep(1)
        ctx:send_event("go")
      end, "b")
      a:start()
      b:start()
      run(world, 5)
      assert.are.equal("work", a:state())
      assert.are.equal("third", b:state())
      a:close()
    end)

    it("works inside a pcall in the behaviour", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "pcall", pcall(ctx.sleep, ctx, 3))
      end)
      sm:start()
      run(world)
      assert.are.same({ { name = "pcall", at = 3, n = 2, true, true } }, out)
    end)

    it("raises outside a behaviour of its ctx", function()
      local world = csm.sim { seed = 1 }
      local ctx
      local sm = machine(world, function(_, c) ctx = c end)
      sm:start()
      run(world, 1)
      assert.are.equal("ctx:sleep: called outside a behaviour of this ctx",
        error_of(ctx.sleep, ctx, 1))
    end)

    it("raises in a timer callback while the behaviour is suspended", function()
      local world = csm.sim { seed = 1 }
      local ctx, err
      local sm = machine(world, function(_, c)
        ctx = c
        c:sleep(10)
      end)
      sm:start()
      world:after(1, function() err = error_of(ctx.sleep, ctx, 1) end)
      run(world, 2)
      assert.are.equal("ctx:sleep: called outside a behaviour of this ctx", err)
      sm:close()
    end)

    it("raises in the behaviour of another machine", function()
      local world = csm.sim { seed = 1 }
      local ctx_a, err
      local a = machine(world, function(_, c)
        ctx_a = c
        c:sleep(10)
      end, "a")
      local b = machine(world, function()
        err = error_of(ctx_a.sleep, ctx_a, 1)
      end, "b")
      a:start()
      run(world, 1)
      b:start()
      run(world, 1)
      assert.are.equal("ctx:sleep: called outside a behaviour of this ctx", err)
      a:close()
    end)

    it("raises in a coroutine of the behaviour's own", function()
      local world = csm.sim { seed = 1 }
      local err
      local sm = machine(world, function(_, ctx)
        local co = coroutine.create(function() return ctx:sleep(1) end)
        local ok, e = coroutine.resume(co)
        err = not ok and (tostring(e):gsub("^[^\n]-:%d+: ", "")) or "no error"
      end)
      sm:start()
      run(world, 2)
      assert.are.equal("ctx:sleep: called outside a behaviour of this ctx", err)
      assert.is_nil(sm:error())
    end)

    it("raises on bad seconds", function()
      local world = csm.sim { seed = 1 }
      local ctx, errs = nil, {}
      local sm = machine(world, function(_, c)
        ctx = c
        errs[1] = error_of(c.sleep, c, "1")
        errs[2] = error_of(c.sleep, c, -1)
        errs[3] = error_of(c.sleep, c)
        errs[4] = error_of(c.sleep, c, 0 / 0)
      end)
      sm:start()
      run(world, 1)
      assert.are.same({
        "ctx:sleep: bad argument #1 'seconds' (number >= 0 expected, got string)",
        "ctx:sleep: bad argument #1 'seconds' (number >= 0 expected, got number)",
        "ctx:sleep: bad argument #1 'seconds' (number >= 0 expected, got nil)",
        "ctx:sleep: bad argument #1 'seconds' (number >= 0 expected, got number)",
      }, errs)
      -- the same check outside the behaviour comes first
      assert.are.equal("ctx:sleep: bad argument #1 'seconds' (number >= 0 expected, got string)",
        error_of(ctx.sleep, ctx, "1"))
      assert.is_nil(sm:error())
    end)
  end)

  describe("await", function()
    it("returns what resolve got", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "await", ctx:await(function(resolve)
          world:after(2, function() resolve("a", nil, 3, nil) end)
        end))
      end)
      sm:start()
      run(world)
      assert.are.same({ { name = "await", at = 2, n = 4, "a", nil, 3, nil } }, out)
    end)

    it("returns nothing when resolve got nothing", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "await", ctx:await(function(resolve) world:after(1, resolve) end))
      end)
      sm:start()
      run(world)
      assert.are.same({ { name = "await", at = 1, n = 0 } }, out)
    end)

    it("works when resolve is called at once", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "await", ctx:await(function(resolve) resolve("now", 1) end))
        record(out, world, "sleep", ctx:sleep(1))
      end)
      sm:start()
      run(world)
      assert.are.same({
        { name = "await", at = 0, n = 2, "now", 1 },
        { name = "sleep", at = 1, n = 1, true },
      }, out)
    end)

    it("ignores a second resolve", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local second
      local sm = machine(world, function(_, ctx)
        record(out, world, "await", ctx:await(function(resolve)
          world:after(1, function() resolve("first") end)
          world:after(2, function() second = pack(pcall(resolve, "second")) end)
        end))
        record(out, world, "sleep", ctx:sleep(5))
      end)
      sm:start()
      run(world)
      assert.are.same({
        { name = "await", at = 1, n = 1, "first" },
        { name = "sleep", at = 6, n = 1, true },
      }, out)
      assert.is_true(second[1])
    end)

    it("ignores a second resolve called at once", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "await", ctx:await(function(resolve)
          resolve(1)
          resolve(2)
        end))
        record(out, world, "sleep", ctx:sleep(1))
      end)
      sm:start()
      run(world)
      assert.are.same({
        { name = "await", at = 0, n = 1, 1 },
        { name = "sleep", at = 1, n = 1, true },
      }, out)
    end)

    it("returns nil, \"canceled\" when the state is left and ignores a later resolve", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local late
      local sm = machine(world, function(_, ctx)
        record(out, world, "await", ctx:await(function(resolve)
          world:after(3, function() late = pack(pcall(resolve, "late")) end)
        end))
        record(out, world, "cancelled", ctx:cancelled())
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({
        { name = "await", at = 1, n = 2, nil, "canceled" },
        { name = "cancelled", at = 1, n = 1, true },
      }, out)
      assert.is_true(late[1])
      assert.are.equal("other", sm:state())
      assert.is_nil(sm:error())
    end)

    it("returns nil, \"canceled\" at once on a cancelled ctx without calling fn", function()
      local world = csm.sim { seed = 1 }
      local out, called = {}, false
      local sm = machine(world, function(_, ctx)
        ctx:sleep(10)
        record(out, world, "await", ctx:await(function() called = true end))
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({ { name = "await", at = 1, n = 2, nil, "canceled" } }, out)
      assert.is_false(called)
    end)

    it("raises outside a behaviour of its ctx", function()
      local world = csm.sim { seed = 1 }
      local ctx
      local sm = machine(world, function(_, c) ctx = c end)
      sm:start()
      run(world, 1)
      assert.are.equal("ctx:await: called outside a behaviour of this ctx",
        error_of(ctx.await, ctx, function() end))
    end)

    it("raises on a bad fn", function()
      local world = csm.sim { seed = 1 }
      local errs = {}
      local sm = machine(world, function(_, ctx)
        errs[1] = error_of(ctx.await, ctx, 5)
        errs[2] = error_of(ctx.await, ctx)
      end)
      sm:start()
      run(world, 1)
      assert.are.same({
        "ctx:await: bad argument #1 'fn' (function expected, got number)",
        "ctx:await: bad argument #1 'fn' (function expected, got nil)",
      }, errs)
    end)
  end)

  describe("send_event", function()
    it("queues an event while the state lasts", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm, log = machine(world, function(_, ctx)
        record(out, world, "send", ctx:send_event("go"))
      end)
      sm:start()
      run(world, 1)
      assert.are.same({ { name = "send", at = 0, n = 1, true } }, out)
      assert.are.same({ "stopped -start-> work @0", "work -go-> third @0" }, log.transitions)
    end)

    it("drops the event once the state is left (departure 2)", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm, log = machine(world, function(_, ctx)
        ctx:sleep(10)
        -- "go" would move other to third: a stale event must not
        record(out, world, "send", ctx:send_event("go"))
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({ { name = "send", at = 1, n = 2, nil, "canceled" } }, out)
      assert.are.equal("other", sm:state())
      assert.are.same({ "stopped -start-> work @0", "work -leave-> other @1" }, log.transitions)
    end)

    it("drops the event of a spawned task once the state is left", function()
      local world = csm.sim { seed = 1 }
      local sent
      local sm = machine(world, function(_, ctx)
        ctx:spawn(function()
          ctx:sleep(5)
          sent = pack(ctx:send_event("go"))
        end)
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({ n = 2, nil, "canceled" }, sent)
      assert.are.equal("other", sm:state())
    end)

    it("raises on an unknown event", function()
      local world = csm.sim { seed = 1 }
      local errs = {}
      local sm = machine(world, function(_, ctx)
        errs[1] = error_of(ctx.send_event, ctx, "nope")
        errs[2] = error_of(ctx.send_event, ctx, 5)
      end)
      sm:start()
      run(world, 1)
      assert.are.same({
        "sm:send_event: unknown event 'nope'",
        "sm:send_event: bad argument #1 'event' (string expected, got number)",
      }, errs)
    end)
  end)

  describe("methods called without self", function()
    it("raise naming the method", function()
      local world = csm.sim { seed = 1 }
      local errs
      local sm = machine(world, function(_, ctx)
        errs = {
          error_of(ctx.sleep, 1), error_of(ctx.wait, 1), error_of(ctx.await, function() end),
          error_of(ctx.cancelled), error_of(ctx.send_event, "x"), error_of(ctx.spawn, print),
        }
      end)
      sm:start()
      run(world, 1)
      assert.are.same({
        "ctx:sleep: bad self (csm ctx expected, got number)",
        "ctx:wait: bad self (csm ctx expected, got number)",
        "ctx:await: bad self (csm ctx expected, got function)",
        "ctx:cancelled: bad self (csm ctx expected, got nil)",
        "ctx:send_event: bad self (csm ctx expected, got string)",
        "ctx:spawn: bad self (csm ctx expected, got function)",
      }, errs)
    end)
  end)

  describe("spawn", function()
    it("runs fn with its arguments at once and keeps its results", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        local steps = {}
        local task = ctx:spawn(function(a, b)
          steps[#steps + 1] = "started"
          ctx:sleep(2)
          return a + b, nil, "x"
        end, 40, 2)
        steps[#steps + 1] = "spawned"
        record(out, world, "steps", unpack(steps))
        record(out, world, "done", task:done())
        record(out, world, "result", task:result())
        ctx:sleep(3)
        record(out, world, "done", task:done())
        record(out, world, "result", task:result())
      end)
      sm:start()
      run(world)
      assert.are.same({
        { name = "steps", at = 0, n = 2, "started", "spawned" },
        { name = "done", at = 0, n = 1, false },
        { name = "result", at = 0, n = 2, nil, "not done" },
        { name = "done", at = 3, n = 1, true },
        { name = "result", at = 3, n = 3, 42, nil, "x" },
      }, out)
    end)

    it("finishes a task that never blocks before spawn returns", function()
      local world = csm.sim { seed = 1 }
      local done, result
      local sm = machine(world, function(_, ctx)
        local task = ctx:spawn(function(x) return x * 2 end, 21)
        done, result = task:done(), task:result()
      end)
      sm:start()
      run(world, 1)
      assert.is_true(done)
      assert.are.equal(42, result)
    end)

    it("shares the ctx: tasks are cancelled with the state", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local task
      local sm = machine(world, function(_, ctx)
        task = ctx:spawn(function()
          record(out, world, "task sleep", ctx:sleep(10))
          record(out, world, "task wait", ctx:wait(10))
          return "ended"
        end)
        record(out, world, "main sleep", ctx:sleep(20))
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      table.sort(out, function(a, b) return a.name < b.name end)
      assert.are.same({
        { name = "main sleep", at = 1, n = 2, nil, "canceled" },
        { name = "task sleep", at = 1, n = 2, nil, "canceled" },
        { name = "task wait", at = 1, n = 2, nil, "canceled" },
      }, out)
      assert.is_true(task:done())
      assert.are.equal("ended", task:result())
    end)

    it("does not run fn on a cancelled ctx", function()
      local world = csm.sim { seed = 1 }
      local ran, task = false, nil
      local sm = machine(world, function(_, ctx)
        ctx:sleep(10)
        task = ctx:spawn(function() ran = true end)
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.is_false(ran)
      assert.is_true(task:done())
    end)

    it("closes the machine when a task raises; the task's result is its error", function()
      local world = csm.sim { seed = 1 }
      local task
      local sm, log = machine(world, function(_, ctx)
        task = ctx:spawn(function()
          ctx:sleep(1)
          error("task bug")
        end)
        ctx:sleep(10)
      end)
      sm:start()
      run(world)
      assert.is_true(task:done())
      local none, err = task:result()
      assert.is_nil(none)
      assert.is_truthy(err:find("task bug", 1, true))
      assert.is_true(sm:closed())
      assert.are.equal("stopped", sm:state())
      assert.is_truthy(sm:error():find("task bug", 1, true))
      assert.are.equal(1, #log.errors)
      assert.is_truthy(log.errors[1]:find("^fatal error encountered: "))
    end)

    it("raises on a bad fn", function()
      local world = csm.sim { seed = 1 }
      local err
      local sm = machine(world, function(_, ctx) err = error_of(ctx.spawn, ctx, "f") end)
      sm:start()
      run(world, 1)
      assert.are.equal("ctx:spawn: bad argument #1 'fn' (function expected, got string)", err)
    end)
  end)

  describe("wait", function()
    it("returns \"timeout\" when nothing happens", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "wait", ctx:wait(4))
        record(out, world, "wait", ctx:wait(0))
      end)
      sm:start()
      run(world)
      assert.are.same({
        { name = "wait", at = 4, n = 1, "timeout" },
        { name = "wait", at = 4, n = 1, "timeout" },
      }, out)
    end)

    it("returns \"wake\" when the machine receives a vote", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm
      sm = machine(world, function(_, ctx)
        record(out, world, "wait", ctx:wait(10))
      end)
      sm:start()
      world:after(1, function()
        assert(sm:receive_vote("p", "v", csm.value("x", 1)))
      end)
      run(world)
      assert.are.same({ { name = "wait", at = 1, n = 1, "wake" } }, out)
    end)

    it("returns \"wake\" on a proposal, a liveness check and a confirmation", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        for _ = 1, 3 do record(out, world, "wait", ctx:wait(10)) end
      end)
      sm:start()
      world:after(1, function() assert(sm:receive_proposal("p", csm.value("x", 1))) end)
      world:after(2, function() assert(sm:receive_liveness_check("p", csm.value("l", 1))) end)
      world:after(3, function() assert(sm:receive_confirmation("p", csm.value("x", 1))) end)
      run(world)
      assert.are.same({
        { name = "wait", at = 1, n = 1, "wake" },
        { name = "wait", at = 2, n = 1, "wake" },
        { name = "wait", at = 3, n = 1, "wake" },
      }, out)
    end)

    it("does not wake on a refused message", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "wait", ctx:wait(10))
      end)
      sm:set_active_state(csm.value("genesis", 5))
      sm:start()
      local refused
      world:after(1, function() refused = pack(sm:receive_vote("p", "v", csm.value("x", 5))) end)
      run(world)
      assert.is_nil(refused[1])
      assert.are.same({ { name = "wait", at = 10, n = 1, "timeout" } }, out)
    end)

    it("returns \"wake\" when a spawned task finishes", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        local task = ctx:spawn(function()
          ctx:sleep(2)
          return "proof"
        end)
        record(out, world, "wait", ctx:wait(10))
        record(out, world, "result", task:result())
      end)
      sm:start()
      run(world)
      assert.are.same({
        { name = "wait", at = 2, n = 1, "wake" },
        { name = "result", at = 2, n = 1, "proof" },
      }, out)
    end)

    it("returns \"wake\" at once for a message that came before the wait", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        ctx:sleep(2)
        record(out, world, "wait", ctx:wait(10))
        record(out, world, "wait", ctx:wait(10))
      end)
      sm:start()
      world:after(1, function() assert(sm:receive_vote("p", "v", csm.value("x", 1))) end)
      run(world)
      assert.are.same({
        { name = "wait", at = 2, n = 1, "wake" },
        { name = "wait", at = 12, n = 1, "timeout" },
      }, out)
    end)

    it("forgets the timeout of a wait that woke", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "wait", ctx:wait(10))
        record(out, world, "wait", ctx:wait(20))
      end)
      sm:start()
      world:after(1, function() assert(sm:receive_vote("p", "v", csm.value("x", 1))) end)
      run(world)
      assert.are.same({
        { name = "wait", at = 1, n = 1, "wake" },
        { name = "wait", at = 21, n = 1, "timeout" },
      }, out)
    end)

    it("wakes every task that waits", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        ctx:spawn(function() record(out, world, "task", ctx:wait(10)) end)
        record(out, world, "main", ctx:wait(10))
      end)
      sm:start()
      world:after(1, function() assert(sm:receive_vote("p", "v", csm.value("x", 1))) end)
      run(world)
      assert.are.same({
        { name = "task", at = 1, n = 1, "wake" },
        { name = "main", at = 1, n = 1, "wake" },
      }, out)
    end)

    it("returns nil, \"canceled\" when the state is left", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = machine(world, function(_, ctx)
        record(out, world, "wait", ctx:wait(10))
        record(out, world, "wait", ctx:wait(10))
      end)
      sm:start()
      world:after(1, function() sm:send_event("leave") end)
      run(world)
      assert.are.same({
        { name = "wait", at = 1, n = 2, nil, "canceled" },
        { name = "wait", at = 1, n = 2, nil, "canceled" },
      }, out)
    end)

    it("raises outside a behaviour of its ctx", function()
      local world = csm.sim { seed = 1 }
      local ctx
      local sm = machine(world, function(_, c) ctx = c end)
      sm:start()
      run(world, 1)
      assert.are.equal("ctx:wait: called outside a behaviour of this ctx",
        error_of(ctx.wait, ctx, 1))
    end)

    it("raises on bad seconds", function()
      local world = csm.sim { seed = 1 }
      local errs = {}
      local sm = machine(world, function(_, ctx)
        errs[1] = error_of(ctx.wait, ctx, {})
        errs[2] = error_of(ctx.wait, ctx, -0.5)
      end)
      sm:start()
      run(world, 1)
      assert.are.same({
        "ctx:wait: bad argument #1 'seconds' (number >= 0 expected, got table)",
        "ctx:wait: bad argument #1 'seconds' (number >= 0 expected, got number)",
      }, errs)
    end)
  end)

  describe("in built-in states", function()
    it("replaces a seed state's behaviour", function()
      local world = csm.sim { seed = 1 }
      local out = {}
      local sm = csm.new {
        id = "n1", loop = world, initial = csm.value("genesis", 0),
        timing = { starting = 0.5 },
        sync = { synchronize = function(_, existing) return existing end },
        leader = { get_next_leaders = function() return { "n1" } end },
        states = {
          collecting = {
            behavior = function(_, ctx, data)
              record(out, world, "data", data:identity())
              record(out, world, "sleep", ctx:sleep(3))
              ctx:send_event("stop")
            end,
          },
        },
      }
      sm:start()
      assert.is_true(world:run_until(function()
        return sm:transition_count() > 0 and sm:state() == "stopped"
      end, 100))
      assert.are.same({
        { name = "data", at = 0.5, n = 1, "genesis" },
        { name = "sleep", at = 3.5, n = 1, true },
      }, out)
    end)
  end)
end)
