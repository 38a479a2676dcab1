-- csm.lab.faults: explicit fault schedules, at virtual times or protocol
-- points, armed on the lab network (and csm experiment --fault/--schedule:
-- cmd_spec.lua).
local csm = require "csm"
local net = require "csm.lab.net"
local faults = require "csm.lab.faults"
local harness = require "csm.lab.harness"
local support = require "spec.support"

local error_of = support.error_of
local names = net.names(4)

-- A network of four nodes on a fresh world, each delivery logged.
local function fixture()
  local world = csm.sim { seed = 1 }
  local network = net.new(world, { latency = 0.1 }, { unauthenticated = true })
  local got = {}
  for _, name in ipairs(names) do
    network:join(name, function(from, msg) got[#got + 1] = string.format("%s>%s %s", from, name, msg) end)
  end
  return world, network, got
end

describe("csm.lab.faults", function()
  describe("check", function()
    it("takes every kind, at a time or at a protocol point", function()
      local list = {
        { kind = "partition", at = 1, duration = 2, groups = { { "n01", "n02" } } },
        { kind = "one_way", at = 1, duration = 2, from = { "n01" }, to = { "n02", "n03" } },
        { kind = "isolate", when = { node = "n02", finalized = 3 }, duration = 1, node = "n02" },
        { kind = "heal", at = 5 },
        { kind = "link", at = 0, duration = 9, a = "n01", b = "n02", loss = 0.5, latency = 0.2 },
        { kind = "crash", node = "n01", at = 2, restart_after = 1, durable = false },
        { kind = "restart", node = "n01", when = { attempt = 2, rank = 4 } },
        { kind = "pause", node = "n03", when = { state = "voting", rank = 2 }, duration = 1 },
        { kind = "gst", at = 30 },
      }
      assert.are.equal(list, faults.check("f", list, names))
    end)

    it("raises naming the fault and what is wrong", function()
      local function bad(fault) return error_of(faults.check, "f", { fault }, names) end
      assert.are.equal("f: faults[1]: 'at' and 'when' both given (one start only)",
        bad { kind = "heal", at = 1, when = { finalized = 1 } })
      assert.are.equal("f: faults[1]: 'when' must name one point: finalized = rank, attempt = n, state "
        .. "= name or write = n",
        bad { kind = "heal", when = { node = "n01" } })
      assert.are.equal("f: faults[1]: unknown key 'height' in 'when' (node, finalized, attempt, rank, state, "
        .. "write)",
        bad { kind = "heal", when = { height = 1 } })
      assert.are.equal("f: faults[1]: unknown node 'n09' in 'to'",
        bad { kind = "one_way", at = 1, duration = 1, from = { "n01" }, to = { "n09" } })
      assert.are.equal("f: faults[1]: a link fault sets loss, latency, jitter, duplicate or reorder",
        bad { kind = "link", at = 1, duration = 1, a = "n01", b = "n02" })
      assert.are.equal("f: option 'faults[1].loss' must be a number in [0, 1] (got 2)",
        bad { kind = "link", at = 1, duration = 1, a = "n01", b = "n02", loss = 2 })
      assert.are.equal("f: faults[1]: no duration (the seconds the pause lasts)",
        bad { kind = "pause", at = 1, node = "n01" })
      assert.are.equal("f: option 'faults[1].durable' must be a boolean (got string \"no\")",
        bad { kind = "crash", at = 1, node = "n01", durable = "no" })
      assert.are.equal("f: faults[1]: a gst is at a time ('at'), not a protocol point",
        bad { kind = "gst", when = { finalized = 1 } })
      assert.are.equal("f: faults[2] starts at 5 s, after the gst at 3 s (no fault starts after it)",
        error_of(faults.check, "f", { { kind = "gst", at = 3 }, { kind = "heal", at = 5 } }, names))
    end)
  end)

  describe("on the network", function()
    it("cuts one way, isolates, adds cuts up, and heals", function()
      local world, network, got = fixture()
      faults.arm(network, {
        { kind = "one_way", at = 0, duration = 1, from = { "n01" }, to = { "n02" } },
        { kind = "isolate", at = 0.5, duration = 1, node = "n02" },
      }, {})
      network:send("n01", "n02", "a") -- cut
      network:send("n02", "n01", "b") -- the other way is open
      world:run_for(0.6)
      network:send("n03", "n02", "c") -- n02 is isolated
      world:run_for(0.5)              -- t = 1.1: the one-way cut ended, the isolation not
      network:send("n01", "n02", "d")
      world:run_for(0.5)              -- t = 1.6: all open again
      network:send("n01", "n02", "e")
      world:run_for(1)
      assert.are.same({ "n02>n01 b", "n01>n02 e" }, got)
      assert.are.equal(3, network.stats.dropped)
    end)

    it("holds a paused node's messages and hands them over, in order, when it ends", function()
      local world, network, got = fixture()
      faults.arm(network, { { kind = "pause", at = 0, duration = 2, node = "n03" } }, {})
      network:send("n01", "n03", "first")
      network:send("n03", "n02", "second")
      network:send("n01", "n02", "other")
      world:run_for(1)
      assert.are.same({ "n01>n02 other" }, got)
      assert.are.equal(2, network:in_flight())
      world:run_for(1.5)
      assert.are.same({ "n01>n02 other", "n01>n03 first", "n03>n02 second" }, got)
    end)

    it("sets a link for a window, then puts it back", function()
      local world, network = fixture()
      faults.arm(network, { { kind = "link", at = 1, duration = 1, a = "n01", b = "n02", latency = 5 } }, {})
      world:run_for(1.5)
      assert.are.equal(5, network.links.n01.n02.latency)
      world:run_for(1)
      assert.is_nil(network.links.n01 and network.links.n01.n02)
    end)

    it("ends every fault at the gst, and starts none after it", function()
      local world, network = fixture()
      local crashed = {}
      network.params.loss = 0.5
      faults.arm(network, {
        { kind = "partition", at = 0, duration = 100, groups = { { "n01" } } },
        { kind = "crash", node = "n02", when = { finalized = 1 } },
        { kind = "gst", at = 1 },
      }, { crash = function(name) crashed[#crashed + 1] = name end })
      world:run_for(0.5)
      assert.is_false(network:connected("n01", "n02"))
      world:run_for(1)
      assert.is_true(network:connected("n01", "n02"))
      assert.are.equal(0, network.params.loss)
    end)
  end)

  describe("named drops", function()
    it("drop the occurrence-th copy of one kind of message from one node to another, and no other", function()
      local trace_path = os.tmpname()
      -- with loss, n01 announces its liveness at rank 2 again: the second
      -- copy to n04 is the one dropped by name
      local r = harness.run { nodes = 4, ranks = 3, seed = 1, loss = 0.3, trace = trace_path, schedule = {
        { kind = "drop", from = "n01", to = "n04", message = "liveness", rank = 2, occurrence = 2 } } }
      assert.is_true(r.messages.dropped > 1)
      local ids, dropped = {}, {}
      for line in io.lines(trace_path) do
        local id = line:match('"id":(%d+),"node":"n01","to":"n04","message":"liveness","rank":2')
        if id and line:find('"kind":"send"', 1, true) then ids[#ids + 1] = id end
        if line:find('"why":"schedule"', 1, true) then dropped[#dropped + 1] = line:match('"id":(%d+)') end
      end
      assert.is_true(#ids >= 2, #ids)
      assert.are.same({ ids[2] }, dropped)
      os.remove(trace_path)
    end)

    it("are refused with a time, or without their message", function()
      local function bad(fault) return error_of(faults.check, "f", { fault }, names) end
      assert.are.equal("f: faults[1]: a drop names a message (from, to, message, rank, attempt, occurrence), "
        .. "not a time", bad { kind = "drop", at = 1, from = "n01", to = "n02", message = "vote" })
      assert.are.equal("f: option 'faults[1].message' must be a string (got nil)",
        bad { kind = "drop", from = "n01", to = "n02" })
      assert.are.equal("f: option 'faults[1].occurrence' must be an integer >= 1 (got 0)",
        bad { kind = "drop", from = "n01", to = "n02", message = "vote", occurrence = 0 })
      assert.are.equal("f: faults[1]: unknown node 'n09'",
        bad { kind = "drop", from = "n09", to = "n02", message = "vote" })
    end)
  end)

  describe("in the harness", function()
    it("starts a fault at a protocol point: when a node finalizes a rank", function()
      local path = os.tmpname()
      local r = harness.run { nodes = 4, ranks = 6, seed = 2, trace = path,
        schedule = { { kind = "isolate", node = "n02", when = { node = "n02", finalized = 3 },
                       duration = 2 } } }
      assert.is_true(r.agreement and r.progress)
      local at_three, isolated
      for line in io.lines(path) do
        if line:find('"kind":"finalize","node":"n02","rank":3,', 1, true) then
          at_three = line:match('"t":([%d.]+)')
        elseif line:find('"kind":"isolate"', 1, true) then
          isolated = line:match('"t":([%d.]+)')
        end
      end
      os.remove(path)
      assert.is_not_nil(at_three)
      assert.are.equal(at_three, isolated)
    end)

    it("crashes an honest node without its durable state: it restarts with nothing and syncs", function()
      local r = harness.run { nodes = 4, ranks = 20, seed = 3, schedule = {
        { kind = "crash", node = "n02", at = 1.5, restart_after = 1, durable = false } } }
      assert.is_true(r.progress)
      -- n02 is held to the target like the others (the run ends when all
      -- have it, so some may be past it)
      assert.are.equal("honest", r.nodes[2].part)
      assert.is_true(r.nodes[2].finalized >= 20)
    end)

    it("lets progress resume after the gst, whatever the adversary did to honest messages", function()
      local drop_all = { name = "drop_all", message = function() return "drop" end }
      local r = harness.run { nodes = 4, ranks = 3, seed = 1, time = 60, adversary = drop_all,
        schedule = { { kind = "gst", at = 20 } } }
      assert.is_true(r.progress, harness.format(r))
      assert.is_true(r.virtual > 20)
    end)

    it("judges liveness after the gst: ok, violated, or unknown when the run ends before the bound",
      function()
      -- the reference protocol recovers once the partition ends at the gst
      local r = harness.run { nodes = 4, ranks = 40, seed = 1, time = 300,
        schedule = { { kind = "partition", at = 1, duration = 1000, groups = { { "n01", "n02" } } },
                     { kind = "gst", at = 20 } } }
      assert.are.equal("ok", r.liveness.verdict)
      assert.is_true(r.progress)
      assert.is_truthy(harness.format(r):find("liveness after the gst: ok (every honest node finalized "
        .. "within 60 s of the gst at 20 s)", 1, true))
      -- the minimal protocol never asks again for a proposal it lost
      r = harness.run { protocol = "minimal", nodes = 4, ranks = 50, seed = 1, time = 100, loss = 0.3,
        schedule = { { kind = "gst", at = 5 } } }
      assert.are.equal("violated", r.liveness.verdict)
      assert.is_truthy(harness.format(r):find("liveness after the gst VIOLATED: n01, n02, n03, n04 "
        .. "finalized nothing within 60 s of the gst at 5 s", 1, true))
      r = harness.run { protocol = "minimal", nodes = 4, ranks = 50, seed = 1, time = 30, loss = 0.3,
        liveness_bound = 60, schedule = { { kind = "gst", at = 5 } } }
      assert.are.equal("unknown", r.liveness.verdict)
      assert.is_nil(harness.run { nodes = 4, ranks = 2 }.liveness)
    end)

    it("breaks the planted f + 1 quorum with a partition keyed to a rank's proposals", function()
      local broken = dofile("examples/protocols/broken_quorum.lua")
      local r = harness.run { protocol = broken, nodes = 4, ranks = 6, seed = 1, time = 60,
        schedule = { { kind = "partition", when = { state = "publishing", rank = 3 }, duration = 1,
                       groups = { { "n01", "n02" }, { "n03", "n04" } } } } }
      assert.is_false(r.agreement)
      assert.are.equal(3, r.violations[1].rank)
    end)
  end)
end)
