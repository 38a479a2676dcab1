-- The lab's parts apart from the network and the harness: faults, the
-- checker, clusters, the trace, the timeline and the report; and the one
-- error rule every part of the lab follows.
local csm = require "csm"
local net = require "csm.lab.net"
local faults = require "csm.lab.faults"
local checker = require "csm.lab.checker"
local cluster = require "csm.lab.cluster"
local trace = require "csm.lab.trace"
local timeline = require "csm.lab.timeline"
local report = require "csm.lab.report"
local harness = require "csm.lab.harness"
local reference = require "csm.protocols.reference"
local support = require "support"

local error_of = support.error_of

describe("csm.lab", function()
  describe("net.names", function()
    it("numbers nodes so that names sort as they are numbered", function()
      assert.are.same({ "n01", "n02", "n03" }, net.names(3))
      assert.are.equal("n099", net.names(100)[99])
      assert.are.equal("n100", net.names(100)[100])
      assert.are.same({}, net.names(0))
      assert.are.same(net.names(5), net.names(5.0))
      assert.are.equal("net.names: bad argument #1 'n' (integer >= 0 expected, got number)",
        error_of(net.names, 1.5))
    end)
  end)

  describe("faults", function()
    local names = net.names(4)

    it("checks a schedule against the run's nodes", function()
      local list = { { kind = "crash", node = "n01", at = 5, restart_after = 10 },
                     { kind = "partition", at = 1, duration = 2, groups = { { "n01", "n02" }, { "n03" } } } }
      assert.are.equal(list, faults.check("f", list, names))
    end)

    it("raises naming the fault and what is wrong", function()
      assert.are.equal("f: faults[1] must be one of partition, one_way, isolate, heal, link, crash, restart, "
        .. "pause, gst, drop (got string \"flood\")",
        error_of(faults.check, "f", { { kind = "flood", at = 1 } }, names))
      assert.are.equal("f: faults[1]: unknown node 'n09'",
        error_of(faults.check, "f", { { kind = "crash", node = "n09", at = 1 } }, names))
      assert.are.equal("f: faults[1]: no duration (the seconds the partition lasts)",
        error_of(faults.check, "f", { { kind = "partition", at = 1, groups = { { "n01" } } } }, names))
      assert.are.equal("f: option 'faults[1].at' must be a number >= 0 (got nil)",
        error_of(faults.check, "f", { { kind = "crash", node = "n01" } }, names))
      assert.are.equal("f: faults[1]: node 'n01' is in two groups",
        error_of(faults.check, "f", { { kind = "partition", at = 1, duration = 1,
          groups = { { "n01" }, { "n01" } } } }, names))
      assert.are.equal("f: faults[1]: group 2 must be a non-empty list of node names",
        error_of(faults.check, "f", { { kind = "partition", at = 1, duration = 1,
          groups = { { "n01" }, {} } } }, names))
      assert.are.equal("f: the fault schedule must be a list (got 3)", error_of(faults.check, "f", 3, names))
    end)

    it("arm checks its network, schedule and hooks first", function()
      local world = csm.sim { seed = 1 }
      local network = net.new(world)
      for _, name in ipairs(names) do network:join(name, function() end) end
      assert.are.equal("faults.arm: bad argument #1 'network' (csm.lab.net network expected, got nil)",
        error_of(faults.arm, nil, {}, {}))
      assert.are.equal("faults.arm: faults[1]: unknown node 'zz'",
        error_of(faults.arm, network, { { kind = "crash", node = "zz", at = 1 } }, {}))
      assert.are.equal("faults.arm: hooks.restart must be a function (a crash restarts)",
        error_of(faults.arm, network, { { kind = "crash", node = "n01", at = 1, restart_after = 1 } },
          { crash = function() end }))
      assert.are.equal("faults.arm: bad argument #3 'hooks' (table expected, got nil)",
        error_of(faults.arm, network, {}))
    end)

    it("arms crashes (each before its restart) before partitions, which break ties", function()
      local world = csm.sim { seed = 1 }
      local network = net.new(world)
      for _, name in ipairs(names) do network:join(name, function() end) end
      local log = {}
      faults.arm(network, {
        { kind = "partition", at = 1, duration = 1, groups = { { "n01" } } },
        { kind = "crash", node = "n02", at = 1, restart_after = 1 },
      }, {
        crash = function(name) log[#log + 1] = string.format("crash %s %g", name, world:now()) end,
        restart = function(name) log[#log + 1] = string.format("restart %s %g", name, world:now()) end,
      })
      world:run_for(0.5)
      assert.is_true(network:connected("n01", "n03"))
      world:run_for(1)
      assert.are.same({ "crash n02 1" }, log)
      assert.is_true(network:is_down("n02"))
      assert.is_false(network:connected("n01", "n03"))
      world:run_for(1)
      assert.are.same({ "crash n02 1", "restart n02 2" }, log)
      assert.is_false(network:is_down("n02"))
      assert.is_true(network:connected("n01", "n03"))
    end)
  end)

  describe("checker", function()
    it("reports the first disagreement at a rank, naming both nodes", function()
      local agreement = checker.agreement()
      assert.is_nil(agreement:observe("n01", 3, "a"))
      assert.is_nil(agreement:observe("n02", 3, "a"))
      local v = agreement:observe("n03", 3, "b")
      assert.are.same({ rank = 3, nodes = { "n01", "n03" }, identities = { "a", "b" }, digests = {} }, v)
      assert.is_false(agreement:ok())
      assert.are.equal("rank 3: n01 finalized a, n03 finalized b", checker.describe(v))
    end)

    it("reports one identity finalized with different contents, by digest", function()
      local agreement = checker.agreement()
      local a = csm.value("7.0:n02", 7, { parent = "6.0:n01" })
      local b = csm.value("7.0:n02", 7, { parent = "6.1:n03" })
      assert.is_nil(agreement:observe("n01", 7, a:identity(), checker.digest(a)))
      assert.is_nil(agreement:observe("n02", 7, a:identity(), checker.digest(csm.value("7.0:n02", 7,
        { parent = "6.0:n01" }))))
      local v = agreement:observe("n03", 7, b:identity(), checker.digest(b))
      assert.are.same({ "n01", "n03" }, v.nodes)
      assert.are_not.equal(v.digests[1], v.digests[2])
      assert.are.equal("rank 7: n01 and n03 finalized 7.0:n02 with different contents (digests differ)",
        checker.describe(v))
      -- the digest is canonical: table order does not matter, types do
      assert.are.equal(checker.digest(csm.value("x", 1, { a = 1, b = { 2, "3" } })),
        checker.digest(csm.value("x", 1, { b = { 2, "3" }, a = 1 })))
      assert.are_not.equal(checker.digest(csm.value("x", 1, { a = 1 })),
        checker.digest(csm.value("x", 1, { a = "1" })))
      assert.are.equal("checker.digest: bad argument #1 'state' (csm value expected, got string)",
        error_of(checker.digest, "x"))
      assert.are.equal("agreement:observe: bad argument #4 'digest' (string or nil expected, got number)",
        error_of(agreement.observe, agreement, "n01", 8, "x", 5))
    end)

    it("forgets ranks below one, so a long run stays bounded", function()
      local agreement = checker.agreement()
      for rank = 1, 10 do agreement:observe("n01", rank, "x" .. rank) end
      agreement:forget_below(8)
      assert.is_nil(agreement:observe("n02", 3, "other"))
      assert.is_not_nil(agreement:observe("n02", 9, "other"))
    end)

    it("checks finalized logs and whether nodes reached a height", function()
      local logs = { { name = "a", finalized = { "x", "y" }, height = 2 },
                     { name = "b", finalized = { "x" }, height = 1 } }
      assert.is_true(checker.logs_agree(logs))
      logs[2].finalized[2] = "z"
      assert.are.same({ nil, "rank 2: a finalized y, b finalized z" }, { checker.logs_agree(logs) })
      assert.is_true(checker.reached(logs, 1))
      assert.is_false(checker.reached(logs, 2))
      assert.are.equal("checker.logs_agree: logs[1] must have a name and a finalized table",
        error_of(checker.logs_agree, { {} }))
      assert.are.equal("checker.reached: nodes[1] has no height", error_of(checker.reached, { {} }, 1))
      assert.are.equal("checker.describe: bad argument #1 'violation' (violation expected, got nil)",
        error_of(checker.describe, nil))
    end)
  end)

  describe("cluster", function()
    it("builds n named nodes of a protocol on one world and network", function()
      local world = csm.sim { seed = 1 }
      local nodes, network = cluster.new { protocol = reference, n = 4, world = world }
      assert.are.equal(4, #nodes)
      assert.are.same(net.names(4), network:nodes())
      for _, node in ipairs(nodes) do node:start() end
      assert.is_true(world:run_until(function() return checker.reached(nodes, 3) end, 600))
      for _, node in ipairs(nodes) do node.sm:close() end
    end)

    it("raises on bad options", function()
      local world = csm.sim { seed = 1 }
      assert.are.equal("cluster.new: option 'n' must be an integer >= 1 (got string \"4\")",
        error_of(cluster.new, { protocol = reference, n = "4", world = world }))
      assert.are.equal("cluster.new: option 'world' must be a sim world (got nil)",
        error_of(cluster.new, { protocol = reference, n = 4 }))
      assert.are.equal("cluster.new: option 'protocol' must be a table (got nil)",
        error_of(cluster.new, { n = 4, world = world }))
      assert.are.equal("cluster.new: option 'network' must be a network (with join; got 5)",
        error_of(cluster.new, { protocol = reference, n = 4, world = world, network = 5 }))
      assert.are.equal("cluster.new: unknown option 'nodes'",
        error_of(cluster.new, { protocol = reference, nodes = 4, world = world }))
      assert.are.equal("cluster.new: bad argument #1 'options' (table expected, got nil)",
        error_of(cluster.new))
    end)
  end)

  describe("trace", function()
    it("writes one JSON object a line, fields in order, integers as integers", function()
      assert.are.equal('{"t":1.500000,"kind":"x","rank":3}\n',
        trace.line { "t", 1.5, "kind", "x", "rank", 3 })
      assert.are.equal('{"a":"q\\""}\n', trace.line { "a", 'q"', "b", nil })
    end)

    it("says when what it wrote did not reach the file", function()
      local world = csm.sim { seed = 1 }
      local t = assert(trace.open("/dev/full", world))
      t:finalize("n01", 1, "x")
      local ok, err, code = t:close()
      assert.is_nil(ok)
      assert.is_truthy(err:find("cannot write the trace", 1, true))
      assert.are.equal("io", code)
      local r, why, io_code = harness.run { ranks = 1, trace = "/dev/full" }
      assert.is_true(r.agreement)
      assert.is_truthy(why:find("cannot write the trace", 1, true))
      assert.are.equal("io", io_code)
      r, why = harness.run { ranks = 1, svg = "/dev/full" }
      assert.is_true(r.progress)
      assert.is_truthy(why:find("cannot write the timeline", 1, true))
    end)

    it("refuses a path it cannot write, with a code", function()
      local world = csm.sim { seed = 1 }
      local t, err, code = trace.open("/nonexistent/dir/trace.jsonl", world)
      assert.is_nil(t)
      assert.is_truthy(err:find("cannot write the trace", 1, true))
      assert.are.equal("io", code)
      assert.are.equal("trace.open: bad argument #1 'path' (string expected, got number)",
        error_of(trace.open, 5))
    end)
  end)

  describe("timeline and report", function()
    it("draw and describe a run", function()
      local r = harness.run { nodes = 4, ranks = 3 }
      local svg = timeline.svg(r)
      assert.are.equal("<svg", svg:sub(1, 4))
      assert.is_truthy(svg:find("n04", 1, true))
      assert.is_truthy(report.format(r):find("agreement: ok", 1, true))
      local ok, err, code = timeline.write(r, "/nonexistent/dir/t.svg")
      assert.is_nil(ok)
      assert.is_truthy(err:find("cannot write the timeline", 1, true))
      assert.are.equal("io", code)
      ok, err = timeline.write(r, "/dev/full")
      assert.is_nil(ok)
      assert.is_truthy(err:find("cannot write the timeline", 1, true))
    end)

    it("computes percentiles and latency", function()
      assert.are.equal(0, report.percentile({}, 0.5))
      assert.are.equal(2, report.percentile({ 1, 2, 3 }, 0.5))
      assert.are.same({ mean = 2, p50 = 2, p99 = 3, samples = 3 }, report.latency({ 3, 1, 2 }))
    end)
  end)

  describe("the error rule", function()
    it("the checker, report, timeline and pictures refuse what is not theirs", function()
      assert.are.equal("checker.reached: bad argument #1 'nodes' (list of nodes expected, got nil)",
        error_of(checker.reached, nil, 1))
      local agreement = checker.agreement()
      assert.are.equal("agreement:observe: bad argument #1 'node' (node name expected, got nil)",
        error_of(agreement.observe, agreement, nil, 1, "x"))
      assert.are.equal("agreement:observe: bad argument #2 'rank' (integer >= 0 expected, got string)",
        error_of(agreement.observe, agreement, "n01", "1", "x"))
      assert.are.equal("report.format: bad argument #1 'report' (report of harness.run expected, got table)",
        error_of(report.format, {}))
      assert.are.equal("timeline.svg: bad argument #1 'report' (report of harness.run expected, got number)",
        error_of(timeline.svg, 3))
      assert.are.equal("timeline.svg: bad argument #1 'report' (report of harness.run expected, got table)",
        error_of(timeline.svg, { config = {}, nodes = {} }))
      assert.are.equal("checker.describe: bad argument #1 'violation' (violation expected, got table)",
        error_of(checker.describe, { nodes = {}, identities = {} }))
      local path = os.tmpname()
      assert.are.equal("trace.open: bad argument #2 'world' (csm loop expected, got number)",
        error_of(trace.open, path, 5))
      os.remove(path)
      for _, name in ipairs { "mermaid", "dot", "transition_table", "stats", "current_state_info" } do
        assert.are.equal("csm.viz." .. name .. ": bad argument #1 'sm' (csm machine expected, got number)",
          error_of(csm.viz[name], 5))
      end
    end)

    it("harness.run refuses bad options, naming them", function()
      assert.are.equal("harness: option 'ranks' must be an integer >= 0 (got string \"x\")",
        error_of(harness.run, { ranks = "x" }))
      assert.are.equal("harness: option 'seed' must be an integer in [0, 2^53] (got 1.5)",
        error_of(harness.run, { seed = 1.5 }))
      assert.are.equal("harness: option 'loss' must be a number in [0, 1] (got 2)",
        error_of(harness.run, { loss = 2 }))
      assert.are.equal("harness: partitions[1]: no duration (the seconds the partition lasts)",
        error_of(harness.run, { partitions = { { at = 1, groups = { { "n01" } } } } }))
      assert.are.equal("harness: partitions[1]: unknown node 'n09' in group 2",
        error_of(harness.run, { partitions = { { at = 1, duration = 1,
          groups = { { "n01" }, { "n09" } } } } }))
      assert.are.equal("harness: option 'timing': unknown timing 'votes'",
        error_of(harness.run, { timing = { votes = 1 } }))
      assert.are.equal("harness: option 'timing': timing.vote_resend must be > 0 (got 0)",
        error_of(harness.run, { timing = { vote_resend = 0 } }))
      assert.are.equal("harness: bad argument #1 'options' (table expected, got string)",
        error_of(harness.run, "x"))
    end)

    it("reference.node refuses missing and bad options", function()
      local world = csm.sim { seed = 1 }
      local network = net.new(world)
      assert.are.equal("reference.node: bad argument #1 'options' (table expected, got nil)",
        error_of(reference.node))
      assert.are.equal("reference.node: option 'name' must be a string (got nil)",
        error_of(reference.node, {}))
      assert.are.equal("reference.node: option 'world' must be a csm loop (got nil)",
        error_of(reference.node, { name = "a", names = { "a" } }))
      assert.are.equal("reference.node: option 'network' must be a network (with join; got table)",
        error_of(reference.node, { name = "a", names = { "a" }, world = world, network = {} }))
      assert.are.equal("reference.node: option 'name' ('b') is not in 'names'",
        error_of(reference.node, { name = "b", names = { "a" }, world = world, network = network }))
      assert.are.equal("reference.node: option 'names' lists 'a' twice",
        error_of(reference.node, { name = "a", names = { "a", "a" }, world = world, network = network }))
      assert.are.equal("reference.node: option 'view_timeout' must be a number >= 0 (got -1)",
        error_of(reference.node, { name = "a", names = { "a" }, world = world, network = network,
          view_timeout = -1 }))
      assert.are.equal("reference.node: option 'view_timeout' must be > 0 (got 0)",
        error_of(reference.node, { name = "a", names = { "a" }, world = world, network = network,
          view_timeout = 0 }))
      assert.are.equal("reference.node: option 'signer' must be a signer (sign and verify; got nil)",
        error_of(reference.node, { name = "a", names = { "a" }, world = world, network = network }))
      local keyring = require("csm.lab.signer").keyring(1, { "a" })
      assert.are.equal("reference.node: option 'store' must be a store (append, sync, records, rewrite; "
        .. "got 1)", error_of(reference.node, { name = "a", names = { "a" }, world = world,
          network = network, signer = keyring:signer("a"), store = 1 }))
      local node = reference.node { name = "a", names = { "a" }, world = world, network = network,
                                    signer = keyring:signer("a") }
      assert.are.equal("node:start: bad self (reference node expected, got nil)", error_of(node.start))
      node.sm:close()
      assert.are.equal("reference.node: unknown option 'bogus'",
        error_of(reference.node, { name = "a", names = { "a" }, world = world, network = network,
          bogus = 1 }))
    end)
  end)
end)
