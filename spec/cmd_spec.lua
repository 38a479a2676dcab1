-- The csm command (bin/csm) and the developer tools: each subcommand runs
-- as a user runs it, in its own process; bad input exits 2 with a message
-- naming the option, --help exits 0, a violated invariant exits 1.
local cjson = require "cjson"
local harness = require "csm.lab.harness"
local support = require "support"

local quote = support.quote

local function csm(args)
  return support.run("bin/csm", args)
end

local slurp = support.slurp

local function exists(path)
  local fh = io.open(path, "rb")
  if fh then fh:close() end
  return fh ~= nil
end

local temporaries = {}
local function tmpname()
  local path = os.tmpname()
  temporaries[#temporaries + 1] = path
  return path
end

-- Asserts that args exit 2 with a message containing each of texts.
local function usage_error(command, args, ...)
  local out, status = support.run(command, args)
  assert.are.equal(2, status, out)
  for _, text in ipairs { ... } do
    assert.is_truthy(out:find(text, 1, true), "wanted '" .. text .. "' in: " .. out)
  end
  -- no Lua traceback or position of csm's own files
  assert.is_falsy(out:find("stack traceback", 1, true), out)
  assert.is_falsy(out:find("lua/csm/[%w_/]+%.lua:%d+"), out)
  return out
end

describe("the csm command #cli", function()
  after_each(function()
    for _, path in ipairs(temporaries) do os.remove(path) end
    temporaries = {}
  end)

  describe("csm", function()
    it("lists its subcommands with --help", function()
      local out, status = csm("--help")
      assert.are.equal(0, status)
      for _, name in ipairs { "experiment", "soak", "diagram", "example" } do
        assert.is_truthy(out:find("\n   " .. name .. " ", 1, true), name)
      end
    end)

    it("exits 2 without a command or with an unknown one", function()
      usage_error("bin/csm", "", "a command is required")
      usage_error("bin/csm", "bogus", "unknown command 'bogus'")
    end)
  end)

  describe("experiment", function()
    it("exits 0 when agreement and progress hold", function()
      local out, status = csm("experiment --nodes 4 --ranks 5 --seed 2")
      assert.are.equal(0, status)
      assert.is_truthy(out:find("agreement: ok", 1, true))
      assert.is_truthy(out:find("progress: ok (every honest node finalized 5 ranks)", 1, true))
    end)

    it("exits 1 when progress fails", function()
      local out, status = csm("experiment --nodes 4 --byzantine 2:silent --ranks 3 --time 10")
      assert.are.equal(1, status)
      assert.is_truthy(out:find("stuck in liveness_check", 1, true))
      assert.is_truthy(out:find("verdict: invalid", 1, true))
    end)

    it("exits 3, verdict unknown, when the run ends with every node still advancing", function()
      local out, status = csm("experiment --nodes 4 --ranks 100000 --time 5")
      assert.are.equal(3, status, out)
      assert.is_truthy(out:find("slow but advancing", 1, true), out)
      assert.is_truthy(out:find("verdict: unknown", 1, true), out)
    end)

    it("runs twins on sides that share a node, and reports what they broke", function()
      local out, status = csm("sweep --protocol examples/protocols/broken_lock.lua --twins n01 "
        .. "--twin-sides 'n01=n02,n03|n02,n04' --loss 0.3 --ranks 12 --time 120 --seeds 1-100 --quiet")
      assert.are.equal(1, status, out)
      local seed = out:match("agreement: %d+ run%(s%), seeds[^\n]*\n%s+fastest: seed (%d+)")
      assert.is_truthy(seed, out)
      out, status = csm("experiment --protocol examples/protocols/broken_lock.lua --twins n01 "
        .. "--twin-sides 'n01=n02,n03|n02,n04' --loss 0.3 --ranks 12 --time 120 --seed " .. seed)
      assert.are.equal(1, status, out)
      assert.is_truthy(out:find("agreement VIOLATED at rank %d+: n0%d finalized [^,]+, n0%d finalized"), out)
      usage_error("bin/csm", "experiment --twins n01 --twin-sides 'n01=n02|n09'",
        "bad --twin-sides 'n01=n02|n09': unknown node 'n09' (nodes are n01 to n04)")
      usage_error("bin/csm", "experiment --twins n01 --twin-sides 'n01=n02'",
        "bad --twin-sides 'n01=n02': two groups of names expected, NAME=GROUP|GROUP")
    end)

    it("parses byzantine kinds, partitions, trace and svg", function()
      local trace, svg = tmpname(), tmpname()
      local out, status = csm("experiment --nodes 4 --byzantine 1:equivocate --ranks 25 "
        .. "--partition '2:60:2|2' --trace " .. quote(trace) .. " --svg " .. quote(svg))
      assert.are.equal(0, status)
      assert.is_truthy(out:find("4 reference nodes (1 equivocate)", 1, true))
      assert.is_truthy(out:find("1 partition(s)", 1, true))
      assert.is_truthy(out:find("trace: " .. trace, 1, true))
      assert.is_truthy(out:find("timeline: " .. svg, 1, true))
      assert.are.equal("<svg", slurp(svg):sub(1, 4))
      -- no rank decided while 2|2 were apart
      local first = {}
      for line in io.lines(trace) do
        local rec = cjson.decode(line)
        if rec.kind == "finalize" and first[rec.rank] == nil then first[rec.rank] = rec.t end
      end
      for _, t in pairs(first) do assert.is_false(t >= 2 and t <= 62) end
    end)

    it("takes partition groups by name", function()
      local out, status = csm("experiment --nodes 4 --ranks 5 --partition '1:2:n01,n02|n03,n04'")
      assert.are.equal(0, status, out)
    end)

    it("gives the same trace, byte for byte, in another process", function()
      local a, b = tmpname(), tmpname()
      local _, status = csm("experiment --nodes 4 --ranks 10 --loss 0.1 --seed 5 --trace " .. quote(a))
      harness.run { nodes = 4, ranks = 10, loss = 0.1, seed = 5, trace = b }
      assert.are.equal(0, status)
      assert.are.equal(slurp(a), slurp(b))
    end)

    it("exits 2 on bad values, naming the option", function()
      usage_error("bin/csm", "experiment --seed 1.5", "--seed: an integer expected (got '1.5')")
      usage_error("bin/csm", "experiment --nodes 0", "--nodes: 0 out of range")
      usage_error("bin/csm", "experiment --nodes four", "--nodes: an integer expected (got 'four')")
      usage_error("bin/csm", "experiment --loss 1.5", "--loss: 1.5 out of range (0 to 1)")
      usage_error("bin/csm", "experiment --latency=-1", "--latency: -1 out of range")
      usage_error("bin/csm", "experiment --time nan", "--time: a number expected (got 'nan')")
      usage_error("bin/csm", "experiment --view-timeout 0", "--view-timeout must be > 0")
      usage_error("bin/csm", "experiment --quik", "unknown option '--quik'")
      usage_error("bin/csm", "experiment --ranks 99999999999999999999", "out of range (integers up to 2^53)")
      usage_error("bin/csm", "experiment --crash-at 3", "--crash-at needs a crash node (--byzantine N:crash)")
    end)

    it("reads a negative number after an option as its value", function()
      usage_error("bin/csm", "experiment --loss -0.1", "--loss: -0.1 out of range (0 to 1)")
      usage_error("bin/csm", "experiment --ranks -1", "--ranks: -1 out of range (>= 0)")
      usage_error("bin/csm", "experiment --seed -1", "--seed: -1 out of range (0 to 2^53)")
      local out, status = csm("experiment --latency 0 --jitter 0 --ranks 2")
      assert.are.equal(0, status, out)
    end)

    it("exits 2 on a bad --byzantine, --partition or --timing", function()
      usage_error("bin/csm", "experiment --byzantine evil", "bad --byzantine 'evil' (COUNT:KIND expected)")
      usage_error("bin/csm", "experiment --byzantine 1:evil", "unknown kind 'evil'",
        "equivocate, double_vote, silent, crash")
      usage_error("bin/csm", "experiment --byzantine 4:silent",
        "--byzantine: 4 byzantine nodes leave no honest one of 4 (--nodes)")
      usage_error("bin/csm", "experiment --byzantine 99999999999999999999:silent",
        "bad --byzantine '99999999999999999999:silent': COUNT:")
      usage_error("bin/csm", "experiment --partition '1:2:|'", "bad --partition '1:2:|': no group")
      usage_error("bin/csm", "experiment --partition '1:2:n01|2'", "node 'n01' is in two groups")
      usage_error("bin/csm", "experiment --partition '1e400:2:2|2'", "bad --partition '1e400:2:2|2'")
      usage_error("bin/csm", "experiment --partition 2", "bad --partition '2'")
      usage_error("bin/csm", "experiment --partition '1:5:3|3'", "groups of 3+3 nodes, there are 4")
      usage_error("bin/csm", "experiment --partition '1:5:n01|n09'", "unknown node 'n09'")
      usage_error("bin/csm", "experiment --partition '1:x:2|2'", "bad --partition '1:x:2|2'")
      usage_error("bin/csm", "experiment --timing voting=abc", "bad --timing 'voting=abc'",
        "voting: a number expected (got 'abc')")
      usage_error("bin/csm", "experiment --timing scale=0",
        "bad --timing 'scale=0': timing.scale must be > 0")
      usage_error("bin/csm", "experiment --timing votes=1", "unknown timing 'votes'", "vote_resend")
      usage_error("bin/csm", "experiment --timing voting", "bad --timing 'voting' (name=seconds expected)")
    end)

    it("exits 2 when it cannot write the trace or the timeline, checked before the run", function()
      usage_error("bin/csm", "experiment --ranks 1 --trace /nonexistent/dir/t.jsonl",
        "--trace: cannot write /nonexistent/dir/t.jsonl")
      local out = usage_error("bin/csm", "experiment --ranks 1 --svg /nonexistent/dir/t.svg",
        "--svg: cannot write /nonexistent/dir/t.svg")
      assert.is_falsy(out:find("agreement", 1, true))
      out = usage_error("bin/csm", "experiment --ranks 1 --trace /dev/full",
        "--trace: cannot write the trace")
      assert.is_truthy(out:find("agreement: ok", 1, true))
      -- a timeline that does not reach its file: the report is printed, then the error
      out = usage_error("bin/csm", "experiment --ranks 1 --svg /dev/full", "--svg: cannot write the timeline")
      assert.is_truthy(out:find("agreement: ok", 1, true))
    end)

    it("prints its options with --help", function()
      local out, status = csm("experiment --help")
      assert.are.equal(0, status)
      assert.is_truthy(out:find("Usage: csm experiment", 1, true))
      assert.is_truthy(out:find("--byzantine", 1, true))
      assert.is_truthy(out:find("Byzantine kinds:", 1, true))
    end)
  end)

  describe("experiment --protocol", function()
    it("runs the minimal protocol by name, and a planted bug from a file, which breaks agreement", function()
      local out, status = csm("experiment --protocol minimal --partition '0:30:2|2' --ranks 5")
      assert.are.equal(0, status, out)
      assert.is_truthy(out:find("csm experiment: 4 minimal nodes", 1, true), out)
      assert.is_truthy(out:find("agreement: ok", 1, true), out)
      out, status = csm("experiment --protocol examples/protocols/broken_quorum.lua --partition '0:30:2|2' "
        .. "--ranks 5")
      assert.are.equal(1, status, out)
      assert.is_truthy(out:find("csm experiment: 4 broken_quorum nodes", 1, true), out)
      assert.is_truthy(out:find("agreement VIOLATED at rank 1: ", 1, true), out)
    end)

    it("refuses a protocol it cannot load or run, naming it", function()
      usage_error("bin/csm", "experiment --protocol paxos", "--protocol: unknown protocol 'paxos' (shipped: "
        .. "minimal, reference; or a FILE.lua)")
      usage_error("bin/csm", "experiment --protocol /nonexistent/p.lua", "--protocol: cannot load",
        "/nonexistent/p.lua")
      local file = tmpname() .. ".lua"
      temporaries[#temporaries + 1] = file
      local function write(text)
        local fh = assert(io.open(file, "w"))
        fh:write(text)
        fh:close()
      end
      write("return 42")
      usage_error("bin/csm", "experiment --protocol " .. quote(file), "must return a protocol module table "
        .. "(it returned number)")
      write("error('no such thing')")
      usage_error("bin/csm", "experiment --protocol " .. quote(file), "raised: ", "no such thing")
      write("return { name = 'empty' }")
      usage_error("bin/csm", "experiment --protocol " .. quote(file),
        "harness: option 'protocol': field 'node' must be a function (got nil)")
      usage_error("bin/csm", "experiment --protocol minimal --byzantine 1:equivocate",
        "harness: protocol 'minimal' has no byzantine role 'equivocate'")
    end)
  end)

  describe("experiment --adversary", function()
    it("runs an adversary from a file, names it and its source in the trace, and reports what it broke",
      function()
      local trace = tmpname()
      local sweep, swept = csm("sweep --protocol examples/protocols/broken_sync.lua --adversary "
        .. "examples/adversaries/sync_liar.lua --byzantine 1:adversary --ranks 30 --loss 0.2 --seeds 1-30 "
        .. "--quiet")
      assert.are.equal(1, swept, sweep)
      local seed = sweep:match("agreement: %d+ run%(s%), seeds (%d+)")
      assert.is_truthy(seed, sweep)
      local out, status = csm("experiment --protocol examples/protocols/broken_sync.lua --adversary "
        .. "examples/adversaries/sync_liar.lua --byzantine 1:adversary --ranks 30 --loss 0.2 --seed " .. seed
        .. " --trace " .. quote(trace))
      assert.are.equal(1, status, out)
      assert.is_truthy(out:find("4 broken_sync nodes (1 adversary)", 1, true), out)
      assert.is_truthy(out:find("agreement VIOLATED at rank %d+: n0%d finalized [^,]+, n0%d finalized"), out)
      local header = cjson.decode(io.lines(trace)())
      assert.are.equal("sync_liar", header.adversary.name)
      assert.is_truthy(header.adversary.source:match("^fnv1a32:%x%x%x%x%x%x%x%x$"))
      usage_error("bin/csm", "experiment --adversary /nonexistent.lua", "--adversary: cannot load")
      usage_error("bin/csm", "experiment --byzantine 1:adversary",
        "harness: 1 adversary node(s) and no adversary (option 'adversary')")
    end)
  end)

  describe("experiment --fault and --schedule", function()
    it("takes faults on the command line, and a schedule from a trace's header", function()
      local trace = tmpname()
      local out, status = csm("experiment --ranks 8 "
        .. "--fault 'isolate node=n02 when=n02.finalized=3 duration=2' "
        .. "--fault 'crash node=n03 at=1.5 restart_after=1 durable=false' --fault 'gst at=30' --trace "
        .. quote(trace))
      assert.are.equal(0, status, out)
      local header = cjson.decode(io.lines(trace)())
      assert.are.same({ duration = 2, kind = "isolate", node = "n02",
                        when = { finalized = 3, node = "n02" } }, header.schedule[1])
      assert.are.same({ at = 1.5, durable = false, kind = "crash", node = "n03", restart_after = 1 },
        header.schedule[2])
      local again = tmpname()
      out, status = csm("experiment --ranks 8 --schedule " .. quote(trace) .. " --trace " .. quote(again))
      assert.are.equal(0, status, out)
      -- the same faults, so the same run
      local a, b = io.lines(trace), io.lines(again)
      a(); b()
      assert.are.equal(slurp(trace):gsub("^[^\n]*\n", ""), slurp(again):gsub("^[^\n]*\n", ""))
      usage_error("bin/csm", "experiment --fault 'crash node=n01 at=soon'",
        "bad --fault 'crash node=n01 at=soon': at=soon is not a number")
      usage_error("bin/csm", "experiment --fault 'flood at=1'",
        "schedule[1] must be one of partition, one_way")
      usage_error("bin/csm", "experiment --fault 'pause node=n01 at=1'", "schedule[1]: no duration")
      usage_error("bin/csm", "experiment --schedule /nonexistent.json", "--schedule: cannot read")
    end)
  end)

  describe("experiment --check-determinism", function()
    it("passes for the shipped protocols, in two fresh processes", function()
      for _, protocol in ipairs { "reference", "minimal" } do
        local out, status = csm("experiment --check-determinism --ranks 10 --loss 0.1 --protocol "
          .. protocol .. " --trace /nonexistent/ignored.jsonl")
        assert.are.equal(0, status, out)
        assert.is_truthy(out:find("^determinism: ok %(two processes wrote the same trace, %d+ lines%)"), out)
      end
    end)

    it("fails, naming the first line that differs, for a protocol that sends in pairs order", function()
      -- pairs order over strings is drawn anew by each process: over 7 nodes
      -- two processes agree on all of it rarely, and three times hardly ever
      local out, status
      for _ = 1, 3 do
        out, status = csm("experiment --check-determinism --nodes 7 --ranks 5 --protocol "
          .. "examples/protocols/unordered.lua")
        if status ~= 0 then break end
      end
      assert.are.equal(1, status, out)
      assert.is_truthy(out:find("^determinism: VIOLATED %(the traces of two processes differ from line "
        .. "%d+%)"), out)
      assert.is_truthy(out:find('  first:  {"t":', 1, true), out)
      assert.is_truthy(out:find('  second: {"t":', 1, true), out)
      assert.is_truthy(out:find("csm.sorted_pairs", 1, true), out)
    end)
  end)

  describe("soak", function()
    it("runs a short soak and reports the invariants, leaving memory unjudged below 10,000 rounds", function()
      local out, status = csm("soak --rounds 2000 --quiet")
      assert.are.equal(0, status, out)
      assert.is_truthy(out:find("rounds: 2000 of 2000", 1, true))
      assert.is_truthy(out:find("agreement: ok; progress: ok; memory: not judged", 1, true))
    end)

    it("exits 2 on bad values", function()
      usage_error("bin/csm", "soak --loss 1.5", "--loss: 1.5 out of range (0 to 1)")
      usage_error("bin/csm", "soak --rounds 5", "--rounds: 5 out of range")
      usage_error("bin/csm", "soak --partition-min 5 --partition-max 1",
        "--partition-min exceeds --partition-max")
      usage_error("bin/csm", "soak --warm-up 0.95", "--warm-up must be in (0, 0.9)")
      usage_error("bin/csm", "soak --resume-within 0", "--resume-within must be > 0")
      usage_error("bin/csm", "soak --scale 0", "--scale must be > 0")
      usage_error("bin/csm", "soak --partition-max 1e9", "--partition-max: 1e9 out of range (0 to 3600)")
      usage_error("bin/csm", "soak --rounds 99999999999999999999", "out of range (integers up to 2^53)")
    end)
  end)

  describe("diagram", function()
    it("writes DOT and Mermaid (and PNG with Graphviz)", function()
      local prefix = tmpname()
      local out, status = csm("diagram --ranks 5 --out " .. quote(prefix))
      assert.are.equal(0, status, out)
      assert.is_truthy(slurp(prefix .. ".dot"):find("digraph csm", 1, true))
      assert.is_truthy(slurp(prefix .. ".mmd"):find("stateDiagram-v2", 1, true))
      assert.is_truthy(out:find("wrote " .. prefix .. ".png", 1, true)
        or out:find("Graphviz is not installed", 1, true))
      for _, ext in ipairs { ".dot", ".mmd", ".png" } do os.remove(prefix .. ext) end
    end)

    it("never runs its --out through a shell", function()
      -- were it run by a shell, the prefix would create this file in the
      -- command's directory (the repository's root)
      local marker = "csm-spec-shell-ran"
      os.remove(support.root .. "/" .. marker)
      local prefix = tmpname() .. "-x$(touch " .. marker .. ")"
      local out, status = csm("diagram --ranks 2 --out " .. quote(prefix))
      assert.are.equal(0, status, out)
      assert.is_false(exists(support.root .. "/" .. marker), "the prefix ran as a shell command")
      assert.is_true(exists(prefix .. ".dot"))
      assert.is_truthy(out:find("wrote " .. prefix .. ".png", 1, true)
        or out:find("Graphviz is not installed", 1, true))
      for _, ext in ipairs { ".dot", ".mmd", ".png" } do os.remove(prefix .. ext) end
    end)

    it("exits 2 on a bad value and prints --help", function()
      usage_error("bin/csm", "diagram --ranks x", "--ranks: an integer expected (got 'x')")
      local out, status = csm("diagram --help")
      assert.are.equal(0, status)
      assert.is_truthy(out:find("Usage: csm diagram", 1, true))
    end)
  end)

  describe("example", function()
    it("shows the honest nodes agree despite a double voter", function()
      local out, status = csm("example --ranks 10")
      assert.are.equal(0, status, out)
      assert.is_truthy(out:find("n03 (double_vote)", 1, true))
      assert.is_truthy(out:find("x vote: conflict", 1, true))
      assert.is_truthy(out:find("honest nodes agree on every rank: yes", 1, true))
    end)

    it("exits 2 on a bad value", function()
      usage_error("bin/csm", "example --ranks=-1", "--ranks: -1 out of range")
      usage_error("bin/csm", "example 5", "too many arguments")
    end)
  end)
end)

describe("the developer tools and examples #cli", function()
  it("tools/bench.lua refuses unknown options and workloads", function()
    usage_error("tools/bench.lua", "--quik", "unknown option '--quik'")
    usage_error("tools/bench.lua", "--only bogus", "--only 'bogus' matches no workload")
  end)

  it("examples/minimal_cluster.lua refuses bad counts and runs", function()
    usage_error("examples/minimal_cluster.lua", "--nodes 0", "--nodes: an integer >= 1 expected (got '0')")
    usage_error("examples/minimal_cluster.lua", "5 0", "too many arguments")
    local out, status = support.run("examples/minimal_cluster.lua", "--ranks 3")
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("agreement: yes", 1, true))
  end)
end)
