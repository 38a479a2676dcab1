-- csm sweep, csm shrink and csm replay: many seeds in worker processes,
-- run files, shrinking a failure and replaying it; and the schedules a
-- seed draws (csm.lab.generate).
local cjson = require "cjson"
local harness = require "csm.lab.harness"
local generate = require "csm.lab.generate"
local runfile = require "csm.lab.runfile"
local trace = require "csm.lab.trace"
local support = require "support"

local quote = support.quote

local function csm(args)
  return support.run("bin/csm", args)
end

local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -p " .. quote(path)))
  return path
end

local function usage_error(args, text)
  local out, status = csm(args)
  assert.are.equal(2, status, out)
  assert.is_truthy(out:find(text, 1, true), "wanted '" .. text .. "' in: " .. out)
  assert.is_falsy(out:find("stack traceback", 1, true), out)
end

local BROKEN = "--protocol examples/protocols/broken_quorum.lua --nodes 4 --ranks 10 --partitions 0-3 "

describe("csm.lab.generate", function()
  it("draws the same schedule for a seed in every process, and different ones for neighbouring seeds",
    function()
    local names = { "n01", "n02", "n03", "n04" }
    local a = trace.json(generate.partitions(generate.draw(7), names, 0, 3, 2))
    assert.are.equal(a, trace.json(generate.partitions(generate.draw(7), names, 0, 3, 2)))
    local counts = {}
    for seed = 1, 40 do
      local list = generate.partitions(generate.draw(seed), names, 0, 3, 2)
      counts[#list] = (counts[#list] or 0) + 1
      for _, f in ipairs(list) do
        assert.is_true(f.at >= 0 and f.at < 2 and f.duration >= 0.1 and f.duration <= 1, trace.json(f))
        assert.are.equal(2, #f.groups)
        assert.are.equal(4, #f.groups[1] + #f.groups[2])
      end
    end
    for k = 0, 3 do assert.is_true((counts[k] or 0) > 0, "no seed drew " .. k .. " partitions") end
    local rates, schedule = generate.swarm(generate.draw(3), names, 10)
    assert.are.equal("table", type(schedule))
    for _, k in ipairs { "loss", "duplicate", "reorder" } do
      assert.is_true(rates[k] >= 0 and rates[k] < 1)
    end
  end)
end)

describe("csm sweep #sweep", function()
  it("finds broken_quorum's agreement violations, groups them and writes run files that replay", function()
    local dir = tmpdir()
    local out, status = csm("sweep " .. BROKEN .. "--seeds 1-60 -j 2 --out " .. quote(dir))
    assert.are.equal(1, status, out)
    assert.is_truthy(out:find("csm sweep: seeds 1-60, 60 runs on 2 worker(s)", 1, true), out)
    local fastest = out:match("  agreement: %d+ run%(s%), seeds [%d ]+[^\n]*\n    fastest: seed (%d+)")
    assert.is_truthy(fastest, out)
    local line = "reproduce: csm replay " .. dir .. "/fail-" .. fastest .. ".json"
    assert.is_truthy(out:find(line, 1, true), out)
    local summary = cjson.decode(support.slurp(dir .. "/summary.json"))
    assert.are.equal(60, summary.runs)
    local group
    for _, g in ipairs(summary.groups) do if g.signature == "agreement" then group = g end end
    assert.is_truthy(group)
    assert.are.equal(tonumber(fastest), group.fastest)
    -- the run file is self-contained: the same violation, run after run
    local path = dir .. "/fail-" .. fastest .. ".json"
    local rf = assert(runfile.read(path))
    assert.are.equal("csm-run 1", rf.format)
    assert.are.equal("agreement", rf.expect.signature)
    assert.is_truthy(rf.protocol.source:match("^fnv1a32:"))
    for _ = 1, 10 do
      local r = harness.run((runfile.config(rf, path)))
      assert.is_true(runfile.matches(rf, runfile.outcome(r)))
    end
    out, status = csm("replay " .. quote(path))
    assert.are.equal(1, status, out)
    assert.is_truthy(out:find("replay: as recorded (invalid, agreement)", 1, true), out)
    os.execute("rm -rf " .. quote(dir))
  end)

  it("gives each seed the same verdict whatever the number of workers, and exits 0 when all hold", function()
    local a, b = tmpdir(), tmpdir()
    local out, status = csm("sweep --ranks 10 --loss 0.2 --seeds 1-12 -j 1 --out " .. quote(a))
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("12 runs on 1 worker(s)", 1, true), out)
    out, status = csm("sweep --ranks 10 --loss 0.2 --seeds 1-12 -j 2 --out " .. quote(b))
    assert.are.equal(0, status, out)
    -- coverage: the machine's transitions taken over the runs, and the
    -- reference protocol's marks
    local taken = tonumber(out:match("coverage: (%d+) of the machine's 37 transitions taken in some run"))
    assert.is_truthy(taken and taken > 10 and taken < 37, out)
    assert.is_truthy(out:find("never taken: [^\n]*starting %-%-stop%-%-> stopping"), out)
    assert.is_truthy(out:find("marks: [^\n]*attempt: view timeout %d+"), out)
    local cov = cjson.decode(support.slurp(b .. "/summary.json")).coverage
    assert.are.equal(taken, cov.taken)
    assert.are.equal(37, cov.transitions)
    assert.are.same(cjson.decode(support.slurp(a .. "/summary.json")).results,
                    cjson.decode(support.slurp(b .. "/summary.json")).results)
    os.execute("rm -rf " .. quote(a) .. " " .. quote(b))
  end)

  it("sweeps parameters: a CSV row per point and seed, the same for any -j, and a plot per metric", function()
    local a, b = tmpdir(), tmpdir()
    local sweep = "sweep --param timing.scale=1,0.5 --param loss=0,0.05 --seeds 1-4 --ranks 10 "
    local out, status = csm(sweep .. "-j 1 --out " .. quote(a))
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("seeds 1-4 at 4 points, 16 runs on 1 worker(s)", 1, true), out)
    out, status = csm(sweep .. "-j 2 --out " .. quote(b))
    assert.are.equal(0, status, out)
    local csv = support.slurp(a .. "/points.csv")
    assert.are.equal(csv, support.slurp(b .. "/points.csv"))
    local lines = {}
    for line in csv:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.are.equal(17, #lines)
    assert.are.equal("timing.scale,loss,seed,verdict,signature,p50,p99,ranks_per_s,messages_per_rank",
      lines[1])
    assert.is_truthy(lines[2]:match("^1,0,1,valid,,[%d.]+,[%d.]+,[%d.]+,[%d.]+$"), lines[2])
    for _, metric in ipairs { "p50", "p99", "ranks_per_s", "messages_per_rank" } do
      local svg = support.slurp(a .. "/" .. metric .. ".svg")
      assert.is_truthy(svg:find("^<svg "), metric)
      local _, medians = svg:gsub("<title>median ", "")
      assert.are.equal(4, medians, metric) -- two values of each of two parameters
    end
    os.execute("rm -rf " .. quote(a) .. " " .. quote(b))
    usage_error("sweep --seeds 1-2 --param loss=0,0.1", "--param needs --out DIR")
    usage_error("sweep --seeds 1-2 --param speed=1 --out /tmp", "unknown parameter 'speed'")
    usage_error("sweep --seeds 1-2 --param loss=2 --out /tmp", "'2' is not a probability in [0, 1]")
    usage_error("sweep --seeds 1-2 --param timing.nothing=1 --out /tmp", "unknown timing 'nothing'")
  end)

  it("hands its jobs to GNU parallel with --hosts, and merges the same results", function()
    local a, b = tmpdir(), tmpdir()
    local hosts = a .. "/hosts"
    local fh = assert(io.open(hosts, "wb"))
    fh:write(":\n") -- this machine, as GNU parallel's --sshloginfile names it
    fh:close()
    local sweep = "sweep " .. BROKEN .. "--seeds 1-12 -j 2 --time 60 "
    local out, status = csm(sweep .. "--hosts " .. quote(hosts) .. " --out " .. quote(a))
    assert.are.equal(1, status, out)
    out, status = csm(sweep .. "--out " .. quote(b))
    assert.are.equal(1, status, out)
    assert.are.same(cjson.decode(support.slurp(b .. "/summary.json")).results,
                    cjson.decode(support.slurp(a .. "/summary.json")).results)
    os.execute("rm -rf " .. quote(a) .. " " .. quote(b))
    usage_error("sweep --seeds 1-2 --hosts /nonexistent/hosts", "--hosts: cannot read /nonexistent/hosts")
  end)

  it("refuses bad ranges and options before any worker starts", function()
    usage_error("sweep --ranks 5", "--seeds A-B is required")
    usage_error("sweep --seeds 5-2", "bad --seeds '5-2' (A-B expected")
    usage_error("sweep --seeds 1-2 --partitions x", "bad --partitions 'x'")
    usage_error("sweep --seeds 1-2 --nodes 4 --byzantine 4:silent", "--byzantine: 4 byzantine nodes")
  end)
end)

describe("csm shrink #sweep", function()
  it("cuts a failing broken_quorum run to one short partition, no loss, the same signature", function()
    local dir = tmpdir()
    -- a run file as a sweep writes it, with loss and three partitions
    local rf = runfile.make({ nodes = 4, ranks = 10, loss = 0.02, seed = 72, byzantine = {},
      schedule = generate.partitions(generate.draw(72), { "n01", "n02", "n03", "n04" }, 3, 3, 2) }, nil,
      { protocol = { name = "broken_quorum", file = "examples/protocols/broken_quorum.lua" } })
    local path = dir .. "/run.json"
    local c = runfile.config(rf, path)
    rf.expect = runfile.outcome(harness.run(c))
    assert.are.equal("agreement", rf.expect.signature)
    assert(runfile.write(rf, path))
    local out, status = csm("shrink " .. quote(path) .. " --out " .. quote(dir .. "/small.json"))
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("kept: deleted", 1, true), out)
    local small = assert(runfile.read(dir .. "/small.json"))
    assert.is_true(#small.schedule <= 3 and #small.schedule >= 1, out)
    assert.are.equal(0, small.config.loss)
    assert.are.equal("agreement", small.expect.signature)
    out, status = csm("replay " .. quote(dir .. "/small.json"))
    assert.are.equal(1, status, out)
    assert.is_truthy(out:find("replay: as recorded (invalid, agreement)", 1, true), out)
    os.execute("rm -rf " .. quote(dir))
  end)

  it("refuses a run file with no failure to keep, or one that no longer fails as recorded", function()
    local dir = tmpdir()
    local rf = runfile.make({ nodes = 4, ranks = 3, seed = 1, byzantine = {} }, nil,
      { protocol = { name = "reference" } })
    rf.expect = { verdict = "valid" }
    assert(runfile.write(rf, dir .. "/valid.json"))
    usage_error("shrink " .. quote(dir .. "/valid.json"), "records no failure to keep")
    rf.expect = { verdict = "invalid", signature = "agreement" }
    assert(runfile.write(rf, dir .. "/wrong.json"))
    usage_error("shrink " .. quote(dir .. "/wrong.json"), "does not fail as recorded")
    os.execute("rm -rf " .. quote(dir))
  end)
end)

describe("csm replay #sweep", function()
  it("records a run's trace and names the first line where a changed run differs", function()
    local dir = tmpdir()
    local rf = runfile.make({ nodes = 4, ranks = 5, seed = 3, loss = 0.1, byzantine = {} }, nil,
      { protocol = { name = "reference" } })
    assert(runfile.write(rf, dir .. "/a.json"))
    local out, status = csm("replay " .. quote(dir .. "/a.json") .. " --record " .. quote(dir .. "/b.json"))
    assert.are.equal(0, status, out)
    local b = assert(runfile.read(dir .. "/b.json"))
    assert.is_true(b.trace.lines > 100)
    assert.are.equal(8 * b.trace.lines, #b.trace.hashes)
    out, status = csm("replay " .. quote(dir .. "/b.json"))
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("replay: as recorded (valid)", 1, true), out)
    assert.is_truthy(out:find("trace: the same as recorded (" .. b.trace.lines .. " lines", 1, true), out)
    -- another seed: the run differs, and says where
    b.seed = 4
    assert(runfile.write(b, dir .. "/c.json"))
    out = csm("replay " .. quote(dir .. "/c.json"))
    assert.is_truthy(out:match("trace: differs from the recorded one from line %d+: {"), out)
    os.execute("rm -rf " .. quote(dir))
  end)

  it("prints a node's machine and protocol state at a virtual time", function()
    local dir = tmpdir()
    local rf = runfile.make({ nodes = 4, ranks = 50, seed = 1, byzantine = {} }, nil,
      { protocol = { name = "reference" } })
    assert(runfile.write(rf, dir .. "/a.json"))
    local out, status = csm("replay " .. quote(dir .. "/a.json") .. " --until 1.5 --inspect n02")
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("n02 at 1.500 virtual s:", 1, true), out)
    assert.is_truthy(out:find("protocol: height = %d+"), out)
    usage_error("replay " .. quote(dir .. "/a.json") .. " --until 1.5 --inspect n09", "unknown node 'n09'")
    usage_error("replay " .. quote(dir .. "/a.json") .. " --inspect n02", "--until and --inspect go together")
    usage_error("replay /nonexistent.json", "cannot read")
    local fh = io.open(dir .. "/x.json", "wb")
    fh:write('{"format":"other"}')
    fh:close()
    usage_error("replay " .. quote(dir .. "/x.json"), "is not a run file")
    os.execute("rm -rf " .. quote(dir))
  end)
end)

describe("csm diff #sweep", function()
  it("finds a protocol the same as itself on every seed, and names where broken_quorum parts from the "
    .. "reference", function()
    local out, status = csm("diff --a reference --b reference --seeds 1-4 --ranks 8 --loss 0.05")
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("the same: 4 of 4 seeds", 1, true), out)
    assert.is_truthy(out:find("p50 +0, p99 +0, ranks_per_s +0, messages_per_rank +0", 1, true), out)
    out, status = csm("diff --a reference --b examples/protocols/broken_quorum.lua --seeds 1-3 --ranks 8 "
      .. "--partition '0:30:2|2'")
    assert.are.equal(1, status, out)
    assert.is_truthy(out:find("csm diff: A reference, B broken_quorum, seeds 1-3", 1, true), out)
    assert.is_truthy(out:find("seed 1: decisions differ from rank 1 (A ", 1, true), out)
    assert.is_truthy(out:find("first difference: seed 1, rank 1", 1, true), out)
    usage_error("diff --a reference --seeds 1-2", "--a and --b name the two protocols")
    usage_error("diff --a reference --b nothing --seeds 1", "--protocol: unknown protocol 'nothing'")
  end)
end)
