-- csm.harness: N reference nodes on a sim world, faults, the report, the
-- JSON-lines trace and the SVG timeline (the csm command: cmd_spec.lua).
local csm = require "csm"
local cjson = require "cjson"
local harness = require "csm.lab.harness"
local reference = require "csm.protocols.reference"
local support = require "spec.support"

local function slurp(path)
  local fh = assert(io.open(path, "rb"))
  local text = fh:read("*a")
  fh:close()
  return text
end

-- What to undo when the current test ends, last first (busted's finally
-- keeps only one function per test).
local cleanups = {}
local function defer(fn)
  cleanups[#cleanups + 1] = fn
end

-- A fresh temporary file name, removed when the test ends.
local function tmpname()
  local path = os.tmpname()
  defer(function() os.remove(path) end)
  return path
end

-- The trace file's lines, decoded.
local function records(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = cjson.decode(line) end
  return out
end

-- Per node, rank -> identity, from the trace's "finalize" lines.
local function finalized_by(path)
  local out = {}
  for _, r in ipairs(records(path)) do
    if r.kind == "finalize" then
      out[r.node] = out[r.node] or {}
      out[r.node][r.rank] = r.identity
    end
  end
  return out
end

-- Rank -> the earliest time any node finalized it, from the report.
local function decided_at(report)
  local out = {}
  for _, times in pairs(report.finalized_at) do
    for rank, t in pairs(times) do
      if out[rank] == nil or t < out[rank] then out[rank] = t end
    end
  end
  return out
end

-- Replaces reference.node for one test with wrap(node, options) applied to
-- every node the harness builds.
local function wrap_nodes(wrap)
  local original = reference.node
  reference.node = function(options)
    return wrap(original, options)
  end
  defer(function() reference.node = original end)
end

local function entry(report, name)
  for _, n in ipairs(report.nodes) do
    if n.name == name then return n end
  end
end

local PARTITION = { at = 2, duration = 60, groups = { { "n01", "n02" }, { "n03", "n04" } } }

-- (#sweep: many protocol runs; scripts/gcstress.sh leaves them out of its
-- slowest collector)
describe("csm.harness #sweep", function()

  describe("with any protocol", function()
    local minimal = require "csm.protocols.minimal"

    it("runs the minimal protocol, by name or as a module, with silent and crashed nodes", function()
      for _, protocol in ipairs { "minimal", minimal } do
        local r = harness.run { protocol = protocol, nodes = 4, ranks = 10, seed = 3 }
        assert.is_true(r.agreement and r.progress)
        assert.are.equal(10, r.rounds)
      end
      local r = harness.run { protocol = "minimal", nodes = 4, ranks = 5, seed = 3,
        byzantine = { silent = 1 } }
      assert.is_true(r.agreement and r.progress)
      assert.are.equal("stopped", r.nodes[1].state) -- never started
      r = harness.run { protocol = "minimal", nodes = 4, ranks = 60, seed = 3, byzantine = { crash = 1 },
        crash_at = 0.5, restart_after = 1 }
      assert.is_true(r.agreement and r.progress, harness.format(r))
    end)

    it("reports two honest nodes finalizing one identity with different contents", function()
      -- n02 records a copy of every state it finalizes with another parent
      local forked = { name = "forked" }
      function forked.node(options)
        if options.name == "n02" then
          local report = options.on_finalize
          options.on_finalize = function(node, rank, state)
            report(node, rank, csm.value(state:identity(), rank, { parent = "elsewhere" }))
          end
        end
        return minimal.node(options)
      end
      local r = harness.run { protocol = forked, nodes = 4, ranks = 3, seed = 1 }
      assert.is_false(r.agreement)
      assert.is_truthy(harness.format(r):find("agreement VIOLATED at rank 1: n0%d and n0%d finalized 1/n0%d "
        .. "with different contents %(digests differ%)"), harness.format(r))
    end)

    it("refuses a protocol that is not one, naming what is wrong", function()
      assert.are.equal("harness: unknown protocol 'x' (shipped: minimal, reference; or a module table)",
        support.error_of(harness.run, { protocol = "x" }))
      assert.are.equal("harness: option 'protocol' must be a module table (got 5)",
        support.error_of(harness.run, { protocol = 5 }))
      assert.are.equal("harness: option 'protocol': field 'digest' must be a function (got string \"d\")",
        support.error_of(harness.run, { protocol = { node = minimal.node, digest = "d" } }))
      assert.are.equal("harness: protocol 'minimal' has no byzantine role 'double_vote'",
        support.error_of(harness.run, { protocol = "minimal", byzantine = { double_vote = 1 } }))
      assert.are.equal("harness: protocol 'junk': node() must return a table with sm (a csm machine) and "
        .. "start (got table)", support.error_of(harness.run, { protocol = { name = "junk",
          node = function() return {} end } }))
    end)
  end)
  after_each(function()
    for i = #cleanups, 1, -1 do cleanups[i]() end
    cleanups = {}
  end)

  describe("config", function()
    it("fills in the defaults", function()
      local c = harness.config {}
      assert.are.equal(4, c.nodes)
      assert.are.equal(1, c.seed)
      assert.are.equal(100, c.ranks)
      assert.are.equal(3600, c.time)
      assert.are.equal(0.01, c.latency)
      assert.are.equal(0.005, c.jitter)
      assert.are.equal(0, c.loss)
      assert.are.same({}, c.byzantine)
      assert.are.same({}, c.partitions)
      assert.are.same(c, harness.config(nil))
    end)

    it("keeps what it is given", function()
      local c = harness.config { nodes = 7, seed = 9, byzantine = { silent = 2 }, loss = 0.1 }
      assert.are.equal(7, c.nodes)
      assert.are.equal(9, c.seed)
      assert.are.equal(0.1, c.loss)
      assert.are.same({ silent = 2 }, c.byzantine)
    end)

    it("raises on an unknown option", function()
      assert.are.equal("harness: unknown option 'speed'", support.error_of(harness.config, { speed = 2 }))
      assert.are.equal("harness: unknown option 'speed'", support.error_of(harness.run, { speed = 2 }))
    end)

    it("raises on an unknown byzantine kind", function()
      assert.are.equal("harness: unknown byzantine kind 'evil'",
        support.error_of(harness.run, { byzantine = { evil = 1 } }))
    end)

    it("raises on bad counts: byzantine, nodes, and no honest node left", function()
      assert.are.equal("harness: option 'byzantine.silent' must be an integer >= 0 (got 1.5)",
        support.error_of(harness.config, { byzantine = { silent = 1.5 } }))
      assert.are.equal("harness: option 'byzantine.silent' must be an integer >= 0 (got -1)",
        support.error_of(harness.config, { byzantine = { silent = -1 } }))
      for bad, shown in pairs { [0] = "0", [2.5] = "2.5", ["4"] = 'string "4"', [1e6] = "1000000" } do
        assert.are.equal("harness: option 'nodes' must be an integer in [1, 10000] (got " .. shown .. ")",
          support.error_of(harness.config, { nodes = bad }))
      end
      assert.are.equal("harness: option 'view_timeout' must be > 0 (got 0)",
        support.error_of(harness.config, { view_timeout = 0 }))
      assert.are.equal("harness: 4 byzantine nodes leave no honest one of 4",
        support.error_of(harness.config, { byzantine = { silent = 2, equivocate = 2 } }))
    end)

    it("names every byzantine kind", function()
      assert.are.same({ "equivocate", "double_vote", "silent", "crash", "adversary" },
        harness.byzantine_kinds)
    end)
  end)

  describe("run", function()
    it("reports ranks, latency, messages, rates and the invariants of an honest run", function()
      local r = harness.run { nodes = 4, ranks = 20 }
      assert.is_true(r.finished)
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      assert.are.same({}, r.violations)
      assert.are.same({}, r.stuck)
      assert.are.equal(20, r.rounds)
      assert.are.equal(4, #r.nodes)
      for i, n in ipairs(r.nodes) do
        assert.are.equal(string.format("n%02d", i), n.name)
        assert.are.equal("honest", n.part)
        assert.are.equal(20, n.finalized)
        assert.are.equal("string", type(n.state))
        assert.are.equal("number", type(n.refused))
        -- finalization times, rank by rank, never going back
        local times = r.finalized_at[n.name]
        assert.are.equal(20, #times)
        for rank = 2, 20 do assert.is_true(times[rank] >= times[rank - 1]) end
      end
      assert.are.same({ "n01", "n02", "n03", "n04" }, r.names)
      -- latency: one sample per honest node per rank after the first
      local l = r.latency
      assert.are.equal(4 * 19, l.samples)
      assert.is_true(l.mean > 0 and l.p50 > 0)
      assert.is_true(l.p50 <= l.p99)
      -- three message hops of 10..15 ms each per round at least
      assert.is_true(l.p50 >= 0.03 and l.p50 < 1)
      -- messages: the network's counters
      local m = r.messages
      assert.is_true(m.sent > 0 and m.delivered > 0)
      assert.are.equal(0, m.duplicated)
      -- what is still in flight when the run stops is neither
      assert.is_true(m.sent >= m.delivered + m.dropped)
      assert.is_true(m.delivered + m.dropped > 0.9 * m.sent)
      -- times: virtual is the sim world's, wall and the rate are numbers
      assert.is_true(r.virtual > 1 and r.virtual < 10)
      assert.are.equal("number", type(r.wall))
      assert.is_true(r.rounds_per_second >= 0)
    end)

    it("stops at the time limit and names the state of a node that cannot reach the target", function()
      -- 2 of 4 silent: 2 live nodes never make the 3 a quorum needs
      local r = harness.run { nodes = 4, byzantine = { silent = 2 }, ranks = 5, time = 30 }
      assert.is_false(r.finished)
      assert.is_false(r.progress)
      assert.is_true(r.agreement)
      assert.are.equal(30, r.virtual)
      assert.are.equal(0, r.rounds)
      assert.are.equal(2, #r.stuck)
      local stuck = {}
      for _, s in ipairs(r.stuck) do
        stuck[#stuck + 1] = s.node
        assert.are.equal("liveness_check", s.state)
        assert.are.equal(0, s.finalized)
      end
      -- silent nodes are spread over the ring; only honest ones are listed
      assert.are.same({ "n02", "n04" }, stuck)
      assert.are.equal("silent", entry(r, "n01").part)
      assert.are.equal("stopped", entry(r, "n01").state)
    end)

    it("makes progress with a 2|2 partition for 60 virtual s: no rank decided during it", function()
      local path = tmpname()
      local r = harness.run { nodes = 4, ranks = 30, partitions = { PARTITION }, trace = path }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      local from, to = PARTITION.at, PARTITION.at + PARTITION.duration
      local before, during, after = 0, 0, 0
      for _, t in pairs(decided_at(r)) do
        if t < from then before = before + 1
        elseif t <= to then during = during + 1
        else after = after + 1 end
      end
      assert.is_true(before > 0)
      assert.are.equal(0, during)
      assert.is_true(after > 0)
      assert.are.equal(30, before + after)
      -- the trace's "finalize" lines: during the partition at most a node
      -- learning (by a sync) a rank decided before it
      local lines = 0
      for _, rec in ipairs(records(path)) do
        if rec.kind == "finalize" then
          lines = lines + 1
          if rec.t >= from and rec.t <= to then assert.is_true(decided_at(r)[rec.rank] < from) end
        end
      end
      assert.are.equal(4 * 30, lines)
      -- and messages across the cut were dropped meanwhile
      assert.is_true(r.messages.dropped > 0)
    end)

    it("accepts groups that leave nodes out: those form one more group", function()
      local r = harness.run { nodes = 4, ranks = 10,
        partitions = { { at = 1.5, duration = 20, groups = { { "n01" } } } } }
      -- n02..n04 are a quorum on their own side
      assert.is_true(r.progress)
      assert.is_true(r.agreement)
      local n02 = r.finalized_at.n02
      assert.is_true(n02[10] < 21.5)
    end)

    it("restarts a crashed node, which syncs, catches up and agrees", function()
      local path = tmpname()
      local crash_at, restart_after = 2, 2
      local built = {}
      wrap_nodes(function(original, options)
        local node = original(options)
        built[#built + 1] = node
        return node
      end)
      local r = harness.run { nodes = 4, ranks = 40, byzantine = { crash = 1 }, crash_at = crash_at,
                              restart_after = restart_after, trace = path }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      local crashed = entry(r, "n01")
      assert.are.equal("crash", crashed.part)
      -- the run stops when the honest nodes are done: it may be a rank behind
      assert.is_true(crashed.finalized >= 39)
      local fin = finalized_by(path)
      -- the honest ones went on while it was down
      local back = crash_at + restart_after
      local missed = {}
      for rank, t in pairs(r.finalized_at.n02) do
        if t > crash_at and t < back then missed[#missed + 1] = rank end
      end
      assert.is_true(#missed > 0)
      -- the restarted node agrees with the others on every rank
      for rank = 1, crashed.finalized do
        assert.is_not_nil(fin.n01[rank])
        assert.are.equal(fin.n02[rank], fin.n01[rank])
        assert.are.equal(fin.n03[rank], fin.n01[rank])
      end
      -- it adopted the ranks it missed through a sync after the restart
      local synced_at
      for _, rec in ipairs(records(path)) do
        if rec.node == "n01" and rec.event == "sync_complete" and rec.t > back then
          synced_at = synced_at or rec.t
        end
      end
      assert.is_not_nil(synced_at)
      -- (the trace prints times to the microsecond)
      for _, rank in ipairs(missed) do
        assert.is_true(math.abs(synced_at - r.finalized_at.n01[rank]) < 1e-6)
      end
      -- the restarted node is a fifth node object; it read back from its
      -- store what the first one finalized before the crash, with the
      -- certificates it answers syncs with
      assert.are.equal(5, #built)
      local old, fresh = built[1], built[5]
      assert.are.equal("n01", fresh.name)
      assert.is_true(fresh.recovered > 0)
      assert.are.equal(old.finalized[1], fresh.finalized[1])
      assert.is_not_nil(fresh.certs[1].cert)
    end)

    it("restarts N honest nodes with their stores at points drawn from the seed, and writes them down",
      function()
      local c = { nodes = 4, ranks = 20, seed = 5, loss = 0.1, restarts = 2 }
      local r = harness.run(c)
      assert.are.equal("valid", harness.verdict(r), harness.format(r))
      local crashes, restarts = 0, 0
      for _, f in ipairs(r.faults) do
        if f[2] == "crash" then crashes = crashes + 1 end
        if f[2] == "restart" then restarts = restarts + 1 end
      end
      assert.are.equal(2, crashes)
      assert.are.equal(2, restarts)
      local rf = require("csm.lab.runfile").make(c, r, { protocol = { name = "reference" } })
      local written = 0
      for _, f in ipairs(rf.schedule) do
        if f.kind == "crash" then
          written = written + 1
          assert.are.equal(f.node, f.when.node)
        end
      end
      assert.are.equal(2, written)
      assert.is_nil(rf.config.restarts)
    end)

    it("a crashed node that does not restart finalizes nothing more; the others go on", function()
      local r = harness.run { nodes = 4, ranks = 20, byzantine = { crash = 1 }, crash_at = 1.3 }
      assert.is_true(r.progress)
      assert.is_true(r.virtual > 1.3)
      local crashed = entry(r, "n01")
      assert.is_true(crashed.finalized > 0 and crashed.finalized < 20)
      for _, t in pairs(r.finalized_at.n01) do assert.is_true(t <= 1.3) end
      -- the SVG lane marks the crash, and nothing after it
      local lane = r.lanes.n01
      assert.are.same({ 1.3, "crashed" }, lane[#lane])
    end)

    it("is deterministic: one config and seed give a byte-identical trace file", function()
      local a, b = tmpname(), tmpname()
      local config = { nodes = 4, ranks = 15, loss = 0.05, reorder = 0.1, duplicate = 0.05,
                       byzantine = { equivocate = 1 }, seed = 11 }
      config.trace = a
      local ra = harness.run(config)
      config.trace = b
      local rb = harness.run(config)
      local ta, tb = slurp(a), slurp(b)
      assert.is_true(#ta > 1000)
      assert.are.equal(ta, tb)
      assert.are.same(ra.finalized_at, rb.finalized_at)
      assert.are.same(ra.messages, rb.messages)
    end)

    it("gives a different trace file with a different seed", function()
      local a, b = tmpname(), tmpname()
      harness.run { nodes = 4, ranks = 10, seed = 1, trace = a }
      harness.run { nodes = 4, ranks = 10, seed = 2, trace = b }
      assert.are_not.equal(slurp(a), slurp(b))
    end)

    it("writes the trace as JSON lines: a header, then transitions, messages by id and fate, notes, "
      .. "finalizations, in order", function()
      local path = tmpname()
      local r = harness.run { nodes = 4, ranks = 5, trace = path, loss = 0.2, seed = 4 }
      local kinds, last, finals = {}, -1, 0
      local list = records(path)
      local header = table.remove(list, 1)
      assert.are.equal("header", header.kind)
      assert.are.equal(csm._VERSION, header.csm)
      assert.are.equal("reference", header.protocol)
      assert.are.same({ n01 = "honest", n02 = "honest", n03 = "honest", n04 = "honest" }, header.parts)
      assert.are.equal(0.2, header.config.loss)
      assert.are.equal(4, header.config.seed)
      local fates = {}
      for _, rec in ipairs(list) do
        kinds[rec.kind] = (kinds[rec.kind] or 0) + 1
        assert.is_true(rec.t >= last)
        last = rec.t
        assert.is_truthy(rec.node:match("^n0[1-4]$"))
        if rec.kind == "transition" then
          assert.are.equal("string", type(rec.from))
          assert.are.equal("string", type(rec.event))
          assert.are.equal("string", type(rec.to))
        elseif ({ send = true, deliver = true, drop = true, in_flight = true })[rec.kind] then
          assert.are.equal("string", type(rec.to))
          assert.are.equal("string", type(rec.message))
          assert.are.equal("number", type(rec.id))
          if rec.kind == "send" then
            assert.is_nil(fates[rec.id])
            fates[rec.id] = "sent"
          else
            assert.are.equal("sent", fates[rec.id]) -- a copy's fate follows its sending
            fates[rec.id] = rec.kind
            if rec.kind == "drop" then assert.is_truthy(({ loss = true, down = true })[rec.why], rec.why) end
          end
          if rec.message == "prevote" or rec.message == "vote" then
            assert.are.equal("number", type(rec.attempt))
          end
        elseif rec.kind == "finalize" then
          finals = finals + 1
          assert.are.equal("number", type(rec.rank))
          assert.are.equal("string", type(rec.identity))
          assert.are.equal(string.format("%s|%d", rec.identity, rec.rank), rec.digest:match("^[^|]+|%d+"))
        elseif rec.kind == "note" then
          assert.is_truthy(({ attempt = true, lock = true })[rec.note])
          assert.are.equal("number", type(rec.fields.rank))
        end
      end
      for _, k in ipairs { "deliver", "drop", "finalize", "note", "send", "transition" } do
        assert.is_true((kinds[k] or 0) > 0, k)
      end
      assert.are.equal(4 * 5, finals)
      assert.are.equal(r.messages.sent, kinds.send)
      assert.are.equal(r.messages.delivered, kinds.deliver)
      assert.are.equal(r.messages.dropped, kinds.drop)
      -- every copy has a fate: delivered, dropped, or in flight at the end
      for id, fate in pairs(fates) do assert.are_not.equal("sent", fate, "copy " .. id) end
      -- the first line after the header, field for field
      local lines = io.lines(path)
      lines()
      assert.are.equal('{"t":0,"kind":"transition","node":"n01","from":"stopped","event":"start",'
        .. '"to":"starting","rank":1}', lines())
    end)

    it("traces the faults of the schedule, which the header lists", function()
      local path = tmpname()
      harness.run { nodes = 4, ranks = 5, trace = path, byzantine = { crash = 1 }, crash_at = 0.5,
        restart_after = 1, partitions = { { at = 2, duration = 1, groups = { { "n01", "n02" } } } } }
      local list = records(path)
      assert.are.same({ { at = 0.5, kind = "crash", node = "n01", restart_after = 1 },
        { at = 2, duration = 1, groups = { { "n01", "n02" } }, kind = "partition" } }, list[1].schedule)
      local faults = {}
      for _, rec in ipairs(list) do
        if rec.kind == "crash" or rec.kind == "restart" or rec.kind == "partition" or rec.kind == "heal" then
          faults[#faults + 1] = string.format("%g %s", rec.t, rec.kind)
        end
      end
      assert.are.same({ "0.5 crash", "1.5 restart", "2 partition", "3 heal" }, faults)
    end)

    it("reports an agreement violation with its rank and nodes", function()
      -- n03 reports a different state at rank 5 to the harness
      wrap_nodes(function(original, options)
        if options.name == "n03" then
          local on_finalize = options.on_finalize
          options.on_finalize = function(node, rank, state)
            if rank == 5 then state = csm.value("forged", 5) end
            return on_finalize(node, rank, state)
          end
        end
        return original(options)
      end)
      local r = harness.run { nodes = 4, ranks = 8 }
      assert.is_false(r.agreement)
      assert.is_true(#r.violations >= 1)
      for _, v in ipairs(r.violations) do
        assert.are.equal(5, v.rank)
        assert.are.equal(2, #v.nodes)
        assert.is_truthy(support.find(v.nodes, "n03"))
        assert.is_truthy(support.find(v.identities, "forged"))
      end
      local text = harness.format(r)
      assert.is_truthy(text:find("agreement VIOLATED at rank 5: ", 1, true))
      assert.is_nil(text:find("agreement: ok", 1, true))
    end)
  end)

  describe("format", function()
    it("describes the run and says that agreement and progress hold", function()
      local r = harness.run { nodes = 4, ranks = 10, byzantine = { equivocate = 1 }, seed = 3 }
      local text = harness.format(r)
      assert.is_truthy(text:find("csm experiment: 4 reference nodes (1 equivocate), seed 3, target 10 ranks",
        1, true))
      assert.is_truthy(text:find("\nn01    equivocate ", 1, true))
      assert.is_truthy(text:find("\nn02    honest ", 1, true))
      assert.is_truthy(text:find("round latency (virtual): mean ", 1, true))
      assert.is_truthy(text:find(string.format("messages: %d sent, %d delivered", r.messages.sent,
        r.messages.delivered), 1, true))
      assert.is_truthy(text:find("\nagreement: ok ", 1, true))
      assert.is_truthy(text:find("\nprogress: ok (every honest node finalized 10 ranks)", 1, true))
      assert.are.equal("\n", text:sub(-1))
    end)

    it("names the stuck nodes and their state when progress fails", function()
      local r = harness.run { nodes = 4, byzantine = { silent = 2 }, ranks = 3, time = 10 }
      local text = harness.format(r)
      assert.is_truthy(text:find("progress: n02 finalized 0 of 3 ranks, stuck in liveness_check", 1, true))
      assert.is_truthy(text:find("progress: n04 finalized 0 of 3 ranks, stuck in liveness_check", 1, true))
      assert.is_nil(text:find("progress: ok", 1, true))
    end)

    it("names the rank, nodes and identities of a violation in a hand-made report", function()
      local r = harness.run { nodes = 4, ranks = 2 }
      r.agreement = false
      r.violations = { { rank = 7, nodes = { "n01", "n04" }, identities = { "7.0:n01", "7.1:n04" } } }
      local text = harness.format(r)
      assert.is_truthy(text:find("agreement VIOLATED at rank 7: n01 finalized 7.0:n01, n04 finalized 7.1:n04",
        1, true))
    end)
  end)

  describe("svg", function()
    it("writes a timeline that starts with <svg and names the byzantine nodes", function()
      local path = tmpname()
      local r = harness.run { nodes = 4, ranks = 5, byzantine = { double_vote = 1 }, svg = path }
      local text = slurp(path)
      assert.are.equal("<svg", text:sub(1, 4))
      assert.are.equal("</svg>\n", text:sub(-7))
      assert.is_truthy(text:find(">n01 (double_vote)</text>", 1, true))
      assert.is_truthy(text:find(">n02</text>", 1, true))
      assert.is_truthy(text:find("agreement ok", 1, true))
      -- a lane of coloured states per node, and finalization marks
      assert.is_truthy(text:find("<title>n03 voting ", 1, true))
      assert.is_truthy(text:find('stroke="black" stroke-width="1"', 1, true))
      -- harness.svg writes the same from the report
      local again = tmpname()
      harness.svg(r, again)
      assert.are.equal(text, slurp(again))
    end)
  end)
end)
