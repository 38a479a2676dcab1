-- The reference protocol's stalls and attacks, found by hand before its
-- attempts converged and its states carried certificates; each is held
-- here at a size the suite can run (scripts/sweeps.sh runs the full sweeps).
local csm = require "csm"
local harness = require "csm.lab.harness"
local net = require "csm.lab.net"
local reference = require "csm.protocols.reference"
local signer = require "csm.lab.signer"

-- Runs c on seeds first..last; returns the seeds whose verdict is not valid.
local function sweep(c, first, last)
  local bad = {}
  for seed = first, last do
    c.seed = seed
    local r = harness.run(c)
    if harness.verdict(r) ~= "valid" then bad[#bad + 1] = seed .. ": " .. harness.format(r) end
  end
  return bad
end

describe("the reference protocol #sweep", function()
  it("S1: attempts converge: a group ahead waits for the others (4 nodes, one silent, 20 % loss)", function()
    -- a group of f or fewer nodes ahead used to go on alone for ever
    local bad = sweep({ nodes = 4, ranks = 15, loss = 0.2, byzantine = { silent = 1 } }, 1, 30)
    assert.are.equal(0, #bad, bad[1])
    bad = sweep({ nodes = 7, ranks = 10, loss = 0.2, byzantine = { silent = 2 } }, 1, 8)
    assert.are.equal(0, #bad, bad[1])
  end)

  it("S2: f or fewer honest nodes that decided a rank bring the others there (7 nodes, two double voters)",
    function()
    -- a finished peer answered with its own vote only, and sync needed
    -- f + 1 peers ahead: now it answers with the rank's certificate
    local bad = sweep({ nodes = 7, ranks = 10, loss = 0.2, byzantine = { double_vote = 2 } }, 1, 6)
    assert.are.equal(0, #bad, bad[1])
  end)

  it("S3: a short view timeout still decides: the attempts grow (one double voter)", function()
    -- a view timeout that never grew let 1 rank through in 300 s
    local r = harness.run { nodes = 4, ranks = 30, time = 300, view_timeout = 0.05,
                            byzantine = { double_vote = 1 } }
    assert.are.equal("valid", harness.verdict(r), harness.format(r))
  end)

  it("S4: a node more than the slack behind in attempts finds its peers' attempt", function()
    -- one restarted with an empty store used to refuse its peers' messages
    -- for ever: too far ahead to take, they are still signed, and f + 1 of
    -- them move it on
    local world = csm.sim { seed = 1 }
    local network = net.new(world)
    local names = net.names(4)
    local keyring = signer.keyring(1, names)
    local a = reference.node { name = "n01", names = names, world = world, network = network,
      initial = csm.value("genesis", 0), signer = keyring:signer("n01") }
    a:current_rank()
    local far = reference.attempt_slack + 25
    for _, peer in ipairs { "n02", "n03" } do
      a:deliver(peer, reference.seal({ kind = "prevote", rank = 1, attempt = far, id = "" },
        keyring:signer(peer)))
    end
    assert.are.equal(2, a.refusals["prevote: attempt"])
    assert.are.equal("attempt " .. far, a:advance())
    assert.are.equal(far, a.attempt)
    a.sm:close()
  end)

  it("S5: a node further behind than its peers keep certificates catches up", function()
    -- one that lost its disk after its peers had moved on by more than
    -- KEPT_RANKS took no answer (all beyond its window) and never learnt it
    -- was behind (their messages were beyond the next rank): stuck for ever
    local bad = sweep({ nodes = 4, ranks = 400, time = 300, schedule = {
      { kind = "crash", node = "n04", at = 10, restart_after = 1, durable = false } } }, 1, 4)
    assert.are.equal(0, #bad, bad[1])
    bad = sweep({ nodes = 4, ranks = 400, time = 300, loss = 0.05, schedule = {
      { kind = "crash", node = "n04", at = 5, restart_after = 10 } } }, 1, 4)
    assert.are.equal(0, #bad, bad[1])
  end)

  it("never writes, or sends, a slot older than the highest it wrote at the rank", function()
    local world = csm.sim { seed = 1 }
    local network = net.new(world)
    local names = net.names(4)
    local store = require("csm.lab.store").sim()
    local a = reference.node { name = "n01", names = names, world = world, network = network,
      initial = csm.value("genesis", 0), signer = signer.keyring(1, names):signer("n01"), store = store }
    a:current_rank()
    a:move_to(3)
    a:prevote(1, "1.3:n02")
    local writes = store:writes()
    local sent = 0
    network.observer = function(what) if what == "send" then sent = sent + 1 end end
    a:move_to(2) -- as a node that lost count would
    a:prevote(1, "1.2:n03")
    -- the attempt record, and nothing guarded
    assert.are.equal(writes + 1, store:writes())
    assert.are.equal(0, sent)
    a.sm:close()
  end)

  it("prints the evidence: two different messages a byzantine node signed for one slot", function()
    local r = harness.run { nodes = 4, ranks = 10, byzantine = { double_vote = 1 } }
    assert.is_true(r.evidence.count > 0)
    local e = r.evidence[1]
    assert.are.equal("n01", e.voter)
    assert.are.equal(2, #e.ids)
    assert.are_not.equal(e.ids[1], e.ids[2])
    assert.is_truthy(harness.format(r):find("evidence: n01 signed two %a+s at rank %d+ attempt %d+ %("),
      harness.format(r))
    -- none in an honest run
    assert.is_nil(harness.run { nodes = 4, ranks = 10, loss = 0.1 }.evidence)
  end)

  it("holds agreement against every shipped adversary, with loss, drawn faults and a restart", function()
    for _, name in ipairs { "sync_liar", "replayer", "mutator", "equivocate", "double_vote", "silent" } do
      local adv = dofile("examples/adversaries/" .. name .. ".lua")
      local bad = {}
      for seed = 1, 4 do
        local r = harness.run { nodes = 4, ranks = 12, seed = seed, loss = 0.2, restarts = 1,
                                byzantine = { adversary = 1 }, adversary = adv }
        if harness.verdict(r) ~= "valid" then bad[#bad + 1] = harness.format(r) end
      end
      assert.are.equal(0, #bad, name .. ": " .. tostring(bad[1]))
    end
  end)
end)
