-- csm.lab.adversary: adversaries in Lua, run by the harness and csm experiment.
local harness = require "csm.lab.harness"
local support = require "spec.support"

local slurp = support.slurp

local function example(name)
  return dofile("examples/adversaries/" .. name .. ".lua")
end

-- The trace of config, less its header and the adversary's own lines.
local function body(config)
  local path = os.tmpname()
  config.trace = path
  harness.run(config)
  local out = {}
  local first = true
  for line in io.lines(path) do
    if not first and not line:find('"kind":"adversary"', 1, true) then out[#out + 1] = line end
    first = false
  end
  os.remove(path)
  return table.concat(out, "\n")
end

-- (#sweep: many lab runs, left out of scripts/gcstress.sh's stressed
-- collector, under which they take minutes; the ordinary runs check them)
describe("csm.lab.adversary #sweep", function()
  it("lets a pass-through adversary change nothing: the trace is the trace without one", function()
    for _, config in ipairs {
      { nodes = 4, ranks = 15, seed = 1 },
      { nodes = 4, ranks = 15, seed = 2, loss = 0.1, duplicate = 0.05, reorder = 0.1 },
      { nodes = 7, ranks = 10, seed = 3, byzantine = { double_vote = 1, silent = 1 }, loss = 0.05 },
    } do
      local with = {}
      for k, v in pairs(config) do with[k] = v end
      with.adversary = example("pass")
      assert.are.equal(body(config), body(with))
    end
  end)

  it("rebuilds the equivocate role on the message stream, the same run copy for copy", function()
    for seed = 1, 4 do
      local role = body { nodes = 4, ranks = 20, seed = seed, loss = 0.05, byzantine = { equivocate = 1 } }
      local adv = body { nodes = 4, ranks = 20, seed = seed, loss = 0.05, byzantine = { adversary = 1 },
                         adversary = example("equivocate") }
      assert.are.equal(role, adv)
    end
  end)

  it("keeps the reference protocol's agreement and progress under the four roles rebuilt (equivocate, "
    .. "double_vote, silent, crash) and replayer, seeds 1-50", function()
    for _, name in ipairs { "equivocate", "double_vote", "silent", "crash", "replayer" } do
      local adv = example(name)
      for seed = 1, 50 do
        local r = harness.run { nodes = 4, ranks = 8, seed = seed, byzantine = { adversary = 1 },
                                adversary = adv }
        assert.is_true(r.agreement and r.progress, name .. " seed " .. seed .. "\n" .. harness.format(r))
      end
    end
  end)

  it("finds what a sync that trusts answers lets a sync liar do; the reference protocol refuses it",
    function()
    -- regression: the reference protocol adopted a state once n - 1
    -- answers of one byzantine peer agreed on it (20 of 20 seeds)
    local broken = dofile("examples/protocols/broken_sync.lua")
    local found
    for seed = 1, 30 do
      local r = harness.run { protocol = broken, nodes = 4, ranks = 30, seed = seed, loss = 0.2,
                              byzantine = { adversary = 1 }, adversary = example("sync_liar") }
      if not r.agreement then found = r; break end
    end
    assert.is_not_nil(found)
    assert.is_truthy(harness.format(found):find("n01#", 1, true))
    for seed = 1, 10 do
      local ok = harness.run { nodes = 4, ranks = 30, seed = seed, loss = 0.2, byzantine = { adversary = 1 },
                               adversary = example("sync_liar") }
      assert.are.equal("valid", harness.verdict(ok), harness.format(ok))
    end
  end)

  it("traces every decision other than pass, and names the adversary and its source in the header", function()
    local path = os.tmpname()
    local drop_votes = { name = "drop_votes", message = function(_, m)
      if m.kind == "vote" then return "drop" end
    end }
    local r = harness.run { nodes = 4, ranks = 1, time = 5, seed = 1, trace = path, adversary = drop_votes,
                            adversary_source = "fnv1a32:00000000" }
    assert.is_false(r.progress)
    local text = slurp(path)
    os.remove(path)
    assert.is_truthy(text:find('^{"kind":"header","adversary":{"name":"drop_votes",'
      .. '"source":"fnv1a32:00000000"}'))
    assert.is_truthy(text:find('"kind":"adversary","fields":{"action":"drop","id":%d+}'))
    assert.is_truthy(text:find('"kind":"drop","id":%d+,"node":"n0%d","to":"n0%d","message":"vote",'
      .. '"rank":1,"attempt":0,"why":"adversary"'))
  end)

  it("speaks only for the nodes it controls, and changes only their messages", function()
    local forge = { name = "forge", message = function(_, m)
      if m.kind == "prevote" then
        return { replace = { kind = "prevote", rank = 1, attempt = 0, id = "x" } }
      end
    end }
    local err = support.error_of(harness.run, { nodes = 4, ranks = 3, adversary = forge })
    assert.is_truthy(err:find("^adversary 'forge': cannot replace message %d+ from honest node 'n0%d' "
      .. "%(channels are authenticated; it may delay, drop or duplicate it%)"), err)
    local impostor = { name = "impostor", start = function(a) a:send("n02", "n03", { kind = "x" }) end }
    assert.are.equal("adversary:send: 'n02' is not one of the adversary's nodes (it may speak only for n01)",
      support.error_of(harness.run, { nodes = 4, ranks = 3, adversary = impostor,
                                      byzantine = { adversary = 1 } }))
    local odd = { name = "odd", message = function() return { hold = 1 } end }
    assert.are.equal("adversary 'odd': unknown action 'hold' (actions: delay, duplicate, replay, replace)",
      support.error_of(harness.run, { nodes = 4, ranks = 3, adversary = odd }))
    assert.are.equal("harness: 1 adversary node(s) and no adversary (option 'adversary')",
      support.error_of(harness.run, { nodes = 4, byzantine = { adversary = 1 } }))
    assert.are.equal("harness: option 'adversary': field 'message' must be a function (got 5)",
      support.error_of(harness.run, { nodes = 4, adversary = { message = 5 } }))
  end)

  it("may wrap a node it controls, and start once the nodes have", function()
    local started, wrapped = 0, {}
    local adv = { name = "wrapper",
      node = function(_, node) wrapped[#wrapped + 1] = node.name; return node end,
      start = function(a) started = started + 1; a:note("hello", { n = a.n }) end }
    local r = harness.run { nodes = 7, ranks = 3, byzantine = { adversary = 2 }, adversary = adv }
    assert.is_true(r.agreement and r.progress)
    assert.are.same({ "n01", "n04" }, wrapped)
    assert.are.equal(1, started)
  end)
end)
