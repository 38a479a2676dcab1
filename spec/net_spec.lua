-- csm.net: the simulated pub/sub network on a sim world.
local csm = require "csm"
local net = require "csm.lab.net"
local support = require "spec.support"

local EPS = 1e-9

-- A network on a fresh world with nodes joined by name; every delivery is
-- logged as { t, from, to, msg } in log (all nodes) and log[name] (one node).
-- Its channels are unauthenticated, so the specs of routing and faults send
-- as any node (the "wire" specs use endpoints).
local function fixture(params, names, seed)
  local world = csm.sim { seed = seed or 1 }
  local network = net.new(world, params, { unauthenticated = true })
  local log = { by = {} }
  for _, name in ipairs(names or { "a", "b", "c" }) do
    log.by[name] = {}
    network:join(name, function(from, msg)
      local entry = { t = world:now(), from = from, to = name, msg = msg }
      log[#log + 1] = entry
      local own = log.by[name]
      own[#own + 1] = entry
    end)
  end
  return network, world, log
end

-- The log as one string per delivery, full precision, for comparisons.
local function lines(log)
  local out = {}
  for i, e in ipairs(log) do
    out[i] = string.format("%.17g %s>%s %s", e.t, e.from, e.to, tostring(e.msg))
  end
  return out
end

-- The counters add up: what was sent (plus duplicates) was delivered,
-- dropped, or is still in flight.
local function balanced(network)
  local s = network.stats
  return s.sent + s.duplicated == s.delivered + s.dropped + network:in_flight()
end

describe("csm.net", function()
  describe("join", function()
    it("adds nodes by name in joining order, once each", function()
      local network = fixture({}, { "x", "y" })
      network:join("z", function() end)
      network:join("x", function() end)
      assert.are.same({ "x", "y", "z" }, network:nodes())
    end)

    it("replaces the handler of a name that joins again", function()
      local network, world = fixture({}, { "a", "b" })
      local got = {}
      network:join("b", function(from, msg) got[#got + 1] = from .. ":" .. msg end)
      network:send("a", "b", "hi")
      world:run()
      assert.are.same({ "a:hi" }, got)
    end)

    it("raises on a name that is not a string or a handler that is not a function", function()
      local network = fixture()
      assert.are.equal("network:join: bad argument #1 'name' (non-empty string expected, got number)",
        support.error_of(network.join, network, 1, function() end))
      assert.are.equal("network:join: bad argument #2 'handler' (function expected, got string)",
        support.error_of(network.join, network, "d", "not a function"))
    end)
  end)

  describe("publish", function()
    it("reaches every other node and never the sender", function()
      local network, world, log = fixture({}, { "a", "b", "c", "d" })
      network:publish("b", "m")
      world:run()
      assert.are.equal(0, #log.by.b)
      for _, name in ipairs { "a", "c", "d" } do
        assert.are.equal(1, #log.by[name])
        assert.are.equal("b", log.by[name][1].from)
        assert.are.equal("m", log.by[name][1].msg)
      end
      assert.are.same({ sent = 3, delivered = 3, dropped = 0, duplicated = 0 }, network.stats)
    end)

    it("delivers messages of one instant in joining, then sending, order without jitter", function()
      local network, world, log = fixture({ latency = 0.1 }, { "a", "b", "c" })
      network:publish("a", 1)
      network:publish("a", 2)
      world:run()
      assert.are.same({ "0.10000000000000001 a>b 1", "0.10000000000000001 a>c 1",
                        "0.10000000000000001 a>b 2", "0.10000000000000001 a>c 2" }, lines(log))
    end)

    it("hands every receiver a copy of its own", function()
      local network, world, log = fixture()
      local msg = { kind = "ping", value = csm.value("v", 1, { list = { 1, 2 } }) }
      network:publish("a", msg)
      world:run()
      local b, c = log.by.b[1].msg, log.by.c[1].msg
      assert.are.same(msg.kind, b.kind)
      assert.are_not.equal(msg, b)
      assert.are_not.equal(b, c)
      assert.are_not.equal(b.value.payload, c.value.payload)
      assert.are.same({ 1, 2 }, c.value.payload.list)
    end)
  end)

  describe("as a wire", function()
    -- a network whose senders are authenticated, as net.new makes by default
    local function wired()
      local world = csm.sim { seed = 1 }
      local network = net.new(world, { latency = 0.01 })
      local got, ep = {}, {}
      for _, name in ipairs { "a", "b", "c" } do
        got[name] = {}
        ep[name] = network:join(name, function(from, msg)
          table.insert(got[name], { from = from, msg = msg })
        end)
      end
      return network, world, ep, got
    end

    it("sends through the endpoint join returns, as its node only", function()
      local network, world, ep, got = wired()
      ep.a:publish { kind = "hello" }
      ep.b:send("c", { kind = "direct" })
      world:run()
      assert.are.same({ { from = "a", msg = { kind = "hello" } } }, got.b)
      assert.are.same({ { from = "a", msg = { kind = "hello" } }, { from = "b", msg = { kind = "direct" } } },
        got.c)
      assert.are.same({ "a", "b", "c" }, ep.a:nodes())
      -- nobody speaks for another on an authenticated network
      assert.are.equal("network:send: this network authenticates senders: a node sends through the "
        .. "endpoint network:join returned (net.new(world, params, { unauthenticated = true }) lets anyone "
        .. "claim any sender)", support.error_of(network.send, network, "a", "b", { kind = "forged" }))
      assert.is_truthy(support.error_of(network.publish, network, "a", {}):find("^network:publish: this "
        .. "network authenticates senders"))
      assert.are.equal("endpoint:send: bad self (network endpoint expected, got table)",
        support.error_of(ep.a.send, {}, "b", {}))
    end)

    it("keeps what a receiver does to its copy from the sender and the others", function()
      local world = csm.sim { seed = 1 }
      local network = net.new(world)
      local seen = {}
      local vote = { kind = "vote", value = csm.value("x", 3, { attempt = 1 }), extra = { n = 1 } }
      local a = network:join("a", function() end)
      network:join("b", function(_, msg) msg.extra.n = 99; msg.kind = "rewritten" end)
      network:join("c", function(_, msg) seen[#seen + 1] = msg end)
      a:publish(vote)
      local held = vote
      vote.extra.n = 2 -- the sender changes its table after sending: what is on the wire stays
      world:run()
      assert.are.equal("vote", seen[1].kind)
      assert.are.equal(1, seen[1].extra.n)
      assert.are.equal(1, seen[1].value.attempt)
      assert.are.equal(2, held.extra.n)
      assert.are.equal("vote", held.kind)
    end)

    it("refuses, at the sender, a message that is not plain data", function()
      local _, _, ep = wired()
      local cyclic = { kind = "loop" }
      cyclic.self = cyclic
      local deep = {}
      local t = deep
      for _ = 1, net.max_depth + 1 do t.next = {}; t = t.next end
      local cases = {
        { { kind = "f", fn = print }, "msg.fn is a function" },
        { { kind = "co", list = { 1, coroutine.create(print) } }, "msg.list[2] is a thread" },
        { setmetatable({}, {}), "msg is a table with a metatable" },
        { cyclic, "msg.self.self.self", "(or is cyclic)" },
        { { [{}] = 1 }, "msg has a key of type table" },
        { { value = csm.value("v", 1, { f = print }) }, "msg.value.payload.f is a function" },
        { { loop = csm.sim { seed = 1 } }, "msg.loop is a userdata" },
        { deep, "nests deeper than " .. net.max_depth .. " tables" },
        { { a = { [true] = 1 } }, "msg.a has a key of type boolean" },
        { { [1.5] = "x" }, "msg has a key 1.5 (a number that is not an integer)" },
        { { t = 0 / 0 }, "msg.t is NaN" },
      }
      for _, case in ipairs(cases) do
        local err = support.error_of(ep.a.publish, ep.a, case[1])
        assert.is_truthy(err:find("^endpoint:publish: bad argument #1 'msg' %(") , err)
        assert.is_truthy(err:find(case[2], 1, true), err)
        assert.is_truthy(err:find(case[3] or "", 1, true), err)
        assert.is_truthy(err:find("a message is plain data", 1, true), err)
      end
      assert.is_truthy(support.error_of(ep.a.send, ep.a, "b", { print }):find(
        "^endpoint:send: bad argument #2 'msg' %(msg%[1%] is a function"))
      assert.are.equal("endpoint:send: bad argument #2 'msg' (message expected, got nil)",
        support.error_of(ep.a.send, ep.a, "b"))
      local copy, why = net.copy { a = { 1, "x", true }, v = csm.value("v", 2) }
      assert.are.same({ 1, "x", true }, copy.a)
      assert.are.equal(csm.value("v", 2), copy.v)
      assert.is_nil(why)
      assert.are.same({ nil, "msg.f is a function" }, { net.copy { f = print } })
      -- what a receiver gets is what the codec decodes from the message's bytes
      local codec = require "csm.codec"
      local msg = { kind = "k", n = 2.0, v = csm.value("v", 1, "p"), [3] = { x = 1.5 } }
      assert.are.same(codec.decode(codec.encode(msg)), net.copy(msg))
      assert.are.equal(math.type and "integer" or nil, math.type and math.type(net.copy(msg).n) or nil)
      assert.are.equal(8, net.max_depth)
      -- a table met twice is copied twice, as a wire would
      local shared = { 1 }
      local dag = net.copy { a = shared, b = shared }
      assert.are.same({ 1 }, dag.b)
      assert.are_not.equal(dag.a, dag.b)
    end)
  end)

  describe("send", function()
    it("raises on a sender or receiver that is not a name, or no message", function()
      local network = fixture()
      assert.are.equal("network:send: bad argument #1 'from' (a joined node's name expected, got nil)",
        support.error_of(network.send, network, nil, "a", "m"))
      assert.are.equal("network:send: bad argument #1 'from' (unknown node 'zz')",
        support.error_of(network.send, network, "zz", "a", "m"))
      assert.are.equal("network:send: bad argument #2 'to' (node name expected, got number)",
        support.error_of(network.send, network, "a", 2, "m"))
      assert.are.equal("network:send: bad argument #3 'msg' (message expected, got nil)",
        support.error_of(network.send, network, "a", "b"))
      assert.are.equal("network:publish: bad argument #1 'from' (a joined node's name expected, got table)",
        support.error_of(network.publish, network, {}, "m"))
      assert.are.equal("network:publish: bad argument #1 'from' (unknown node 'zz')",
        support.error_of(network.publish, network, "zz", "m"))
    end)

    it("reaches the one addressed node only", function()
      local network, world, log = fixture()
      network:send("a", "c", "only c")
      world:run()
      assert.are.equal(1, #log)
      assert.are.same({ "c", "a", "only c" }, { log[1].to, log[1].from, log[1].msg })
      assert.are.equal(0, #log.by.b)
      assert.are.equal(1, network.stats.sent)
    end)

    it("drops a message to a name that never joined, counted", function()
      local network, world, log = fixture()
      network:send("a", "nobody", "x")
      world:run()
      assert.are.equal(0, #log)
      assert.are.same({ sent = 1, delivered = 0, dropped = 1, duplicated = 0 }, network.stats)
    end)
  end)

  describe("latency and jitter", function()
    it("delivers at now + latency in virtual time", function()
      local network, world, log = fixture { latency = 0.25 }
      network:at(1, function() network:send("a", "b", "x") end)
      world:run()
      assert.are.equal(1, #log)
      assert.is_true(math.abs(log[1].t - 1.25) < EPS)
      assert.is_true(math.abs(world:now() - 1.25) < EPS)
    end)

    it("delivers at once with no latency", function()
      local network, world, log = fixture()
      network:send("a", "b", "x")
      assert.are.equal(1, network:in_flight())
      world:run()
      assert.are.equal(0, log[1].t)
      assert.are.equal(0, network:in_flight())
    end)

    it("adds a uniform extra delay within [latency, latency + jitter]", function()
      local network, world, log = fixture { latency = 0.1, jitter = 0.05 }
      for i = 1, 200 do network:send("a", "b", i) end
      world:run()
      assert.are.equal(200, #log)
      local low, high = math.huge, -math.huge
      for _, e in ipairs(log) do
        assert.is_true(e.t >= 0.1 - EPS and e.t <= 0.15 + EPS)
        low, high = math.min(low, e.t), math.max(high, e.t)
      end
      -- the draws spread over the interval
      assert.is_true(low < 0.11 and high > 0.14)
    end)

    it("may reorder messages when jitter exceeds the gap between them", function()
      local network, world, log = fixture { latency = 0.01, jitter = 0.05 }
      for i = 1, 50 do network:send("a", "b", i) end
      world:run()
      local inversions = 0
      for i = 2, #log do
        if log[i].msg < log[i - 1].msg then inversions = inversions + 1 end
      end
      assert.is_true(inversions > 0)
    end)
  end)

  describe("loss", function()
    it("with loss = 1, delivers nothing and counts every message dropped", function()
      local network, world, log = fixture { loss = 1 }
      for i = 1, 10 do network:publish("a", i) end
      world:run()
      assert.are.equal(0, #log)
      assert.are.same({ sent = 20, delivered = 0, dropped = 20, duplicated = 0 }, network.stats)
    end)

    it("with loss = 0.3, drops roughly that share of many messages", function()
      local network, world, log = fixture { loss = 0.3 }
      for i = 1, 2000 do network:send("a", "b", i) end
      world:run()
      local s = network.stats
      assert.are.equal(2000, s.sent)
      assert.is_true(s.dropped >= 500 and s.dropped <= 700, "dropped " .. s.dropped)
      assert.are.equal(2000 - s.dropped, s.delivered)
      assert.are.equal(s.delivered, #log)
    end)
  end)

  describe("duplicate", function()
    it("with duplicate = 1, delivers each message twice, counted", function()
      local network, world, log = fixture { duplicate = 1, latency = 0.01 }
      for i = 1, 10 do network:send("a", "b", i) end
      world:run()
      local got = {}
      for _, e in ipairs(log) do got[e.msg] = (got[e.msg] or 0) + 1 end
      for i = 1, 10 do assert.are.equal(2, got[i]) end
      assert.are.equal(20, #log)
      assert.are.same({ sent = 10, delivered = 20, dropped = 0, duplicated = 10 }, network.stats)
    end)

    it("with duplicate = 0.5, duplicates some messages only", function()
      local network, world, log = fixture { duplicate = 0.5 }
      for i = 1, 400 do network:send("a", "b", i) end
      world:run()
      local d = network.stats.duplicated
      assert.is_true(d > 120 and d < 280, "duplicated " .. d)
      assert.are.equal(400 + d, #log)
    end)
  end)

  describe("reorder", function()
    it("holds some messages back so that later-sent ones arrive earlier", function()
      local network, world, log = fixture { latency = 0.01, reorder = 0.3 }
      local sent_at = {}
      for i = 1, 100 do
        network:at(i * 0.001, function()
          sent_at[i] = world:now()
          network:send("a", "b", i)
        end)
      end
      world:run()
      assert.are.equal(100, #log)
      local earlier = 0
      for k = 2, #log do
        if log[k].msg < log[k - 1].msg then earlier = earlier + 1 end
      end
      assert.is_true(earlier > 0)
      -- a held-back message waits at most reorder_delay (default 4 x latency) more
      for _, e in ipairs(log) do
        local delay = e.t - sent_at[e.msg]
        assert.is_true(delay >= 0.01 - EPS and delay <= 0.05 + EPS)
      end
    end)

    it("keeps sending order without reorder or jitter", function()
      local network, world, log = fixture { latency = 0.01 }
      for i = 1, 100 do
        network:at(i * 0.001, function() network:send("a", "b", i) end)
      end
      world:run()
      for k = 1, 100 do assert.are.equal(k, log[k].msg) end
    end)

    it("honours an explicit reorder_delay", function()
      local network, world, log = fixture { latency = 0.01, reorder = 1, reorder_delay = 2 }
      for i = 1, 100 do network:send("a", "b", i) end
      world:run()
      local late = 0
      for _, e in ipairs(log) do
        assert.is_true(e.t >= 0.01 - EPS and e.t <= 2.01 + EPS)
        if e.t > 1 then late = late + 1 end
      end
      assert.is_true(late > 20)
    end)
  end)

  describe("link", function()
    it("sets parameters for both directions of one link only", function()
      local network, world, log = fixture { latency = 0.01 }
      network:link("a", "b", { latency = 1 })
      network:send("a", "b", "ab")
      network:send("b", "a", "ba")
      network:send("a", "c", "ac")
      network:send("c", "b", "cb")
      world:run()
      local at = {}
      for _, e in ipairs(log) do at[e.msg] = e.t end
      assert.is_true(math.abs(at.ab - 1) < EPS)
      assert.is_true(math.abs(at.ba - 1) < EPS)
      assert.is_true(math.abs(at.ac - 0.01) < EPS)
      assert.is_true(math.abs(at.cb - 0.01) < EPS)
    end)

    it("keeps the network's parameters for those the link does not set", function()
      local network, world, log = fixture { latency = 0.5 }
      network:link("a", "b", { loss = 1 })
      network:publish("a", "x")
      world:run()
      assert.are.equal(1, #log)
      assert.are.equal("c", log[1].to)
      assert.is_true(math.abs(log[1].t - 0.5) < EPS)
      assert.are.equal(1, network.stats.dropped)
    end)

    it("raises on bad parameters", function()
      local network = fixture()
      assert.are.equal("network:link: unknown parameter 'speed'",
        support.error_of(network.link, network, "a", "b", { speed = 1 }))
      assert.are.equal("network:link: parameter 'loss' is a probability (got 2)",
        support.error_of(network.link, network, "a", "b", { loss = 2 }))
      assert.is_not_nil(support.error_of(network.link, network, "a", "b", { latency = -1 })
        :find("parameter 'latency' must be a finite number >= 0", 1, true))
    end)
  end)

  describe("partition and heal", function()
    it("raises on groups that are not lists of joined nodes, or name a node twice", function()
      local network = fixture()
      assert.are.equal("network:partition: bad argument #1 'groups' (list of lists expected, got string)",
        support.error_of(network.partition, network, "a|b"))
      assert.are.equal("network:partition: bad argument #1 'groups' (unknown node 'zz')",
        support.error_of(network.partition, network, { { "a" }, { "zz" } }))
      assert.are.equal("network:partition: bad argument #1 'groups' (node 'a' is in two groups)",
        support.error_of(network.partition, network, { { "a" }, { "b", "a" } }))
      assert.are.equal("network:partition: bad argument #1 'groups' (group 2 is a string, a list of names "
        .. "expected)", support.error_of(network.partition, network, { { "a" }, "b" }))
      assert.are.equal("network:connected: bad argument #2 'b' (unknown node 'x')",
        support.error_of(network.connected, network, "a", "x"))
    end)

    it("blocks messages across groups and lets them through within one", function()
      local network, world, log = fixture({}, { "a", "b", "c", "d" })
      network:partition { { "a", "b" }, { "c", "d" } }
      network:publish("a", "from a")
      network:publish("c", "from c")
      world:run()
      local got = {}
      for _, e in ipairs(log) do got[#got + 1] = e.from .. ">" .. e.to end
      table.sort(got)
      assert.are.same({ "a>b", "c>d" }, got)
      assert.are.equal(4, network.stats.dropped)
      assert.is_false(network:connected("a", "c"))
      assert.is_true(network:connected("a", "b"))
    end)

    it("puts the nodes in no group into one more group together", function()
      local network, world, log = fixture({}, { "a", "b", "c", "d" })
      network:partition { { "a" } }
      network:publish("b", "x")
      network:send("a", "c", "y")
      world:run()
      local got = {}
      for _, e in ipairs(log) do got[#got + 1] = e.from .. ">" .. e.to end
      table.sort(got)
      assert.are.same({ "b>c", "b>d" }, got)
      assert.is_true(network:connected("c", "d"))
      assert.is_false(network:connected("a", "d"))
    end)

    it("heal restores every link", function()
      local network, world, log = fixture({}, { "a", "b", "c" })
      network:partition { { "a" }, { "b" }, { "c" } }
      network:publish("a", 1)
      world:run()
      assert.are.equal(0, #log)
      network:heal()
      assert.is_true(network:connected("a", "c"))
      network:publish("a", 2)
      world:run()
      assert.are.equal(2, #log)
      assert.are.equal(2, log[1].msg)
    end)

    it("drops at delivery a message in flight when the partition starts", function()
      local network, world, log = fixture({ latency = 1 }, { "a", "b" })
      network:send("a", "b", "x")
      network:at(0.5, function() network:partition { { "a" }, { "b" } } end)
      world:run()
      assert.are.equal(0, #log)
      assert.are.same({ sent = 1, delivered = 0, dropped = 1, duplicated = 0 }, network.stats)
    end)

    it("delivers a message whose partition healed before it arrived", function()
      local network, world, log = fixture({ latency = 1 }, { "a", "b" })
      network:send("a", "b", "x")
      network:at(0.2, function() network:partition { { "a" }, { "b" } } end)
      network:at(0.6, function() network:heal() end)
      world:run()
      assert.are.equal(1, #log)
    end)
  end)

  describe("crash and restart", function()
    it("raise on a name that is not a joined node's", function()
      local network = fixture()
      assert.are.equal("network:crash: bad argument #1 'name' (a joined node's name expected, got nil)",
        support.error_of(network.crash, network, nil))
      assert.are.equal("network:crash: bad argument #1 'name' (unknown node 'zz')",
        support.error_of(network.crash, network, "zz"))
      assert.are.equal("network:restart: bad argument #1 'name' (a joined node's name expected, got number)",
        support.error_of(network.restart, network, 3))
      assert.are.equal("network:is_down: bad argument #1 'name' (unknown node 'q')",
        support.error_of(network.is_down, network, "q"))
    end)

    it("a crashed node sends and receives nothing until it restarts", function()
      local network, world, log = fixture()
      network:crash("b")
      assert.is_true(network:is_down("b"))
      network:publish("a", 1)
      network:publish("b", 2)
      world:run()
      assert.are.equal(1, #log)
      assert.are.same({ "a", "c", 1 }, { log[1].from, log[1].to, log[1].msg })
      assert.are.equal(3, network.stats.dropped)
      network:restart("b")
      assert.is_false(network:is_down("b"))
      network:publish("b", 3)
      world:run()
      assert.are.equal(3, #log)
      assert.are.equal(3, log[3].msg)
    end)

    it("drops a message in flight to a node that crashes before delivery, not one it sent before", function()
      local network, world, log = fixture({ latency = 1 }, { "a", "b", "c" })
      network:send("a", "b", "to b")
      network:send("b", "c", "from b")
      network:send("a", "c", "a to c")
      network:at(0.5, function() network:crash("b") end)
      world:run()
      assert.are.equal(2, #log)
      assert.are.equal("from b", log[1].msg)
      assert.are.equal("a to c", log[2].msg)
      assert.are.equal(1, network.stats.dropped)
    end)

    it("a node that joins again is up again", function()
      local network, world, log = fixture()
      network:crash("b")
      network:join("b", function(from, msg) log[#log + 1] = { from = from, msg = msg } end)
      assert.is_false(network:is_down("b"))
      network:send("a", "b", "x")
      world:run()
      assert.are.equal(1, #log)
    end)
  end)

  describe("stats", function()
    it("sent + duplicated = delivered + dropped + in flight, at every point", function()
      local network, world = fixture({ latency = 0.05, jitter = 0.05, loss = 0.2, duplicate = 0.2,
                                       reorder = 0.2 }, { "a", "b", "c", "d" })
      for i = 1, 50 do
        network:at(i * 0.01, function()
          network:publish(i % 2 == 0 and "a" or "c", i)
          if i == 20 then network:partition { { "a", "b" } } end
          if i == 30 then network:crash("d") end
          if i == 40 then network:heal(); network:restart("d") end
          assert.is_true(balanced(network))
        end)
      end
      world:run_for(0.25)
      assert.is_true(network:in_flight() > 0)
      assert.is_true(balanced(network))
      world:run()
      assert.are.equal(0, network:in_flight())
      assert.is_true(balanced(network))
      local s = network.stats
      assert.are.equal(150, s.sent)
      assert.is_true(s.dropped > 0 and s.duplicated > 0 and s.delivered > 0)
    end)
  end)

  describe("observer", function()
    it("is told of every send, drop (and why), duplicate and delivery, each copy by its id", function()
      local network, world = fixture({ loss = 0 }, { "a", "b", "c", "d" })
      local seen = {}
      network.observer = function(what, from, to, msg, id, why)
        seen[#seen + 1] = string.format("%s #%d %s>%s %s%s", what, id, from, to, msg,
          why and " " .. why or "")
      end
      network:crash("c")
      network:publish("a", "m")
      network:link("a", "b", { duplicate = 1 })
      network:send("a", "b", "n")
      network:partition { { "a" } }
      network:send("a", "d", "o")
      network:heal()
      network:send("a", "d", "p")
      network:partition { { "a" } }
      world:run()
      assert.are.same({ "send #1 a>b m", "send #2 a>c m", "drop #2 a>c m down", "send #3 a>d m",
        "send #4 a>b n", "duplicate #4 a>b n", "send #5 a>d o", "drop #5 a>d o partition", "send #6 a>d p",
        -- a is cut off again while all of it is in flight: each copy is dropped on arrival
        "drop #1 a>b m partition", "drop #3 a>d m partition", "drop #4 a>b n partition",
        "drop #4 a>b n partition", "drop #6 a>d p partition" }, seen)
    end)
  end)

  describe("intercept", function()
    it("lets a function pass, drop, delay, duplicate or replace each message before the network's faults",
      function()
      local network, world, log = fixture({ latency = 1 }, { "a", "b", "c" })
      local decided = {}
      network:intercept(function(id, from, to, msg)
        decided[#decided + 1] = string.format("#%d %s>%s %s", id, from, to, msg)
        if msg == "drop" then return "drop" end
        if msg == "late" then return { delay = 2 } end
        if msg == "twice" then return { duplicate = 1 } end
        if msg == "swap" and to == "c" then return { replace = "swapped" } end
        return nil
      end)
      for _, m in ipairs { "drop", "late", "twice", "swap" } do network:send("a", "b", m) end
      network:send("a", "c", "swap")
      world:run()
      assert.are.same({ "1 a>b swap", "1 a>b twice", "1 a>b twice", "1 a>c swapped", "3 a>b late" },
        (function()
          local out = {}
          for i, e in ipairs(log) do out[i] = string.format("%g %s>%s %s", e.t, e.from, e.to, e.msg) end
          table.sort(out)
          return out
        end)())
      assert.are.same({ "#1 a>b drop", "#2 a>b late", "#3 a>b twice", "#4 a>b swap", "#5 a>c swap" }, decided)
      assert.are.same({ sent = 5, delivered = 5, dropped = 1, duplicated = 1 }, network.stats)
      assert.are.same({}, network:pending())
    end)

    it("refuses a decision that is none, and a replacement that is not plain data", function()
      local network = fixture()
      network:intercept(function() return 5 end)
      assert.are.equal("network interceptor: decision must be nil, \"pass\", \"drop\" or a table (got 5)",
        support.error_of(network.send, network, "a", "b", "m"))
      network:intercept(function() return { delay = -1 } end)
      assert.are.equal("network interceptor: delay must be a finite number >= 0 (got -1)",
        support.error_of(network.send, network, "a", "b", "m"))
      network:intercept(function() return { replace = { print } } end)
      assert.is_truthy(support.error_of(network.send, network, "a", "b", "m"):find(
        "^network interceptor: bad argument #1 'msg' %(msg%[1%] is a function"))
      assert.are.equal("network:intercept: bad argument #1 'fn' (function or nil expected, got number)",
        support.error_of(network.intercept, network, 1))
    end)

    it("lists what is in flight, in delivery order", function()
      local network = fixture({ latency = 1 }, { "a", "b" })
      network:send("a", "b", "x")
      network:link("a", "b", { latency = 0.5 })
      network:send("a", "b", "y")
      local pending = network:pending()
      assert.are.same({ 2, "y", 0.5 }, { pending[1].id, pending[1].msg, pending[1].due })
      assert.are.same({ 1, "x", 1 }, { pending[2].id, pending[2].msg, pending[2].due })
    end)
  end)

  describe("at", function()
    it("raises on a time that is not a number or fn that is not a function", function()
      local network = fixture()
      assert.are.equal("network:at: bad argument #1 't' (number expected, got string)",
        support.error_of(network.at, network, "1", function() end))
      assert.are.equal("network:at: bad argument #2 'fn' (function expected, got nil)",
        support.error_of(network.at, network, 1))
    end)

    it("runs a function at a virtual time, or now when the time has passed", function()
      local network, world = fixture()
      local ran = {}
      network:at(2, function()
        ran[#ran + 1] = world:now()
        network:at(1, function() ran[#ran + 1] = world:now() end)
      end)
      world:run()
      assert.are.same({ 2, 2 }, ran)
    end)
  end)

  describe("randomness", function()
    local function run(seed)
      local network, world, log = fixture({ latency = 0.01, jitter = 0.02, loss = 0.2, duplicate = 0.2,
                                            reorder = 0.2 }, { "a", "b", "c", "d" }, seed)
      for i = 1, 100 do
        network:at(i * 0.003, function() network:publish(({ "a", "b", "c", "d" })[i % 4 + 1], i) end)
      end
      world:run()
      return lines(log), network.stats
    end

    it("comes from the world's seed: one seed gives an identical delivery log", function()
      local a, astats = run(42)
      local b, bstats = run(42)
      assert.is_true(#a > 100)
      assert.are.same(a, b)
      assert.are.same(astats, bstats)
    end)

    it("differs with a different seed", function()
      local a = run(42)
      local b = run(43)
      assert.are_not.same(a, b)
    end)
  end)

  describe("new", function()
    it("fills in defaults, and reorder_delay as 4 x (latency + jitter)", function()
      local network = net.new(csm.sim { seed = 1 }, { latency = 0.1, jitter = 0.05 })
      assert.are.same({ latency = 0.1, jitter = 0.05, loss = 0, duplicate = 0, reorder = 0,
                        reorder_delay = 4 * (0.1 + 0.05) }, network.params)
      assert.are.same({ latency = 0, jitter = 0, loss = 0, duplicate = 0, reorder = 0, reorder_delay = 0 },
        net.new(csm.sim { seed = 1 }).params)
    end)

    it("raises on bad parameters", function()
      local world = csm.sim { seed = 1 }
      assert.are.equal("net.new: unknown parameter 'lag'", support.error_of(net.new, world, { lag = 1 }))
      assert.are.equal("net.new: parameter 'latency' must be a finite number >= 0 (got -0.1)",
        support.error_of(net.new, world, { latency = -0.1 }))
      assert.are.equal("net.new: parameter 'jitter' must be a finite number >= 0 (got string \"fast\")",
        support.error_of(net.new, world, { jitter = "fast" }))
      assert.are.equal("net.new: parameter 'latency' must be a finite number >= 0 (got inf)",
        support.error_of(net.new, world, { latency = math.huge }):gsub("got [%-]?inf%a*", "got inf"))
      assert.are.equal("net.new: bad argument #1 'world' (csm sim world expected, got nil)",
        support.error_of(net.new, nil))
      assert.are.equal("net.new: bad argument #2 'params' (table expected, got number)",
        support.error_of(net.new, world, 5))
      assert.is_not_nil(support.error_of(net.new, world, { loss = 0 / 0 }))
      for _, k in ipairs { "loss", "duplicate", "reorder" } do
        assert.are.equal("net.new: parameter '" .. k .. "' is a probability (got 1.5)",
          support.error_of(net.new, world, { [k] = 1.5 }))
      end
      assert.is_nil(support.error_of(net.new, world, { loss = 1, duplicate = 1, reorder = 1 }))
    end)
  end)
end)
