-- csm.reference: the reference BFT providers and their byzantine roles,
-- directly on a simulated network and through csm.harness.
local csm = require "csm"
local net = require "csm.lab.net"
local reference = require "csm.protocols.reference"
local harness = require "csm.lab.harness"
local support = require "spec.support"
local signer = require "csm.lab.signer"
local reference_messages = require "csm.protocols.reference.messages"

-- The lab's signers for names (one keyring per seed).
local function keys(names, seed)
  return signer.keyring(seed or 1, names)
end

-- n reference nodes named n01.. on one sim world; roles[i] is node i's role.
local function group(n, roles, params, seed)
  local world = csm.sim { seed = seed or 1 }
  local network = net.new(world, params or { latency = 0.01, jitter = 0.005 })
  local names = {}
  for i = 1, n do names[i] = string.format("n%02d", i) end
  local nodes = {}
  local keyring = keys(names, seed)
  for i, name in ipairs(names) do
    nodes[i] = reference.node { name = name, names = names, world = world, network = network,
      role = roles and roles[i], initial = csm.value("genesis", 0), signer = keyring:signer(name) }
  end
  return nodes, world, network
end

-- Starts every node and runs until each honest one finalized ranks.
local function run(nodes, world, ranks, timeout)
  for _, node in ipairs(nodes) do node:start() end
  local ok = world:run_until(function()
    for _, node in ipairs(nodes) do
      if node.role == "honest" and node.height < ranks then return false end
    end
    return true
  end, timeout or 3600)
  for _, node in ipairs(nodes) do node.sm:close() end
  return ok
end

-- Whether every honest node finalized the same identity at ranks 1..ranks.
local function agree(nodes, ranks)
  local first
  for _, node in ipairs(nodes) do
    if node.role == "honest" then
      first = first or node
      for rank = 1, ranks do
        if node.finalized[rank] == nil or node.finalized[rank] ~= first.finalized[rank] then return false end
      end
    end
  end
  return first ~= nil
end

-- Replaces reference.node for one test; every node the harness builds is
-- kept in the returned list.
local function capture_nodes()
  local original, built = reference.node, {}
  reference.node = function(options)
    local node = original(options)
    built[#built + 1] = node
    return node
  end
  finally(function() reference.node = original end)
  return built
end

-- (#sweep: many protocol runs; scripts/gcstress.sh leaves them out of its
-- slowest collector)
describe("csm.reference #sweep", function()
  describe("thresholds", function()
    it("gives f = floor((n - 1) / 3) and the quorum n - f", function()
      assert.are.same({ 0, 1 }, { reference.thresholds(1) })
      assert.are.same({ 0, 3 }, { reference.thresholds(3) })
      assert.are.same({ 1, 3 }, { reference.thresholds(4) })
      assert.are.same({ 2, 5 }, { reference.thresholds(7) })
      assert.are.same({ 3, 7 }, { reference.thresholds(10) })
      assert.are.same({ 5, 11 }, { reference.thresholds(16) })
    end)
  end)

  describe("roles", function()
    it("lists honest and the byzantine variants", function()
      assert.are.same({ honest = true, equivocate = true, double_vote = true, silent = true },
        reference.roles)
    end)
  end)

  describe("node", function()
    it("joins the network under its name, with a machine of that id and a quorum of n - f provers", function()
      local nodes, _, network = group(7)
      assert.are.same({ "n01", "n02", "n03", "n04", "n05", "n06", "n07" }, network:nodes())
      for _, node in ipairs(nodes) do
        assert.are.equal(node.name, node.sm:id():identity())
        assert.are.equal(5, node.sm:minimum_provers())
        assert.are.equal(5, node.q)
        assert.are.equal(2, node.f)
        assert.are.equal("honest", node.role)
        assert.are.equal("stopped", node.sm:state())
      end
    end)

    it("derives view_timeout and sync_wait from timing.scale unless given", function()
      local world = csm.sim { seed = 1 }
      local network = net.new(world)
      local names = { "a", "b", "c", "d" }
      local keyring = keys(names)
      local a = reference.node { name = "a", names = names, world = world, network = network,
        initial = csm.value("genesis", 0), timing = { scale = 0.5 }, signer = keyring:signer("a") }
      assert.are.equal(4, a.view_timeout)
      assert.are.equal(1, a.sync_wait)
      local b = reference.node { name = "b", names = names, world = world, network = network,
        initial = csm.value("genesis", 0), view_timeout = 3, sync_wait = 0.1, signer = keyring:signer("b") }
      assert.are.equal(3, b.view_timeout)
      assert.are.equal(0.1, b.sync_wait)
    end)

    it("raises on an unknown role", function()
      local world = csm.sim { seed = 1 }
      assert.are.equal("reference.node: option 'role' must be one of honest, equivocate, double_vote, " ..
        "silent (got string \"evil\")", support.error_of(reference.node, {
        name = "a", names = { "a" }, world = world, network = net.new(world), role = "evil" }))
    end)

    it("rotates the leaders by rank: every node, the top one first", function()
      local nodes = group(4)
      local a = nodes[1]
      assert.are.same({ "n02", "n03", "n04", "n01" }, a:leaders(1))
      assert.are.same({ "n03", "n04", "n01", "n02" }, a:leaders(2))
      assert.are.same({ "n01", "n02", "n03", "n04" }, a:leaders(4))
    end)

    it("four honest nodes finalize the top leader's proposal at every rank, in agreement", function()
      local nodes, world = group(4)
      assert.is_true(run(nodes, world, 20))
      assert.is_true(agree(nodes, 20))
      for rank = 1, 20 do
        assert.are.equal(string.format("%d.0:%s", rank, nodes[1]:leaders(rank)[1]), nodes[1].finalized[rank])
      end
      for _, node in ipairs(nodes) do
        assert.is_nil(node.sm:error())
        assert.is_true(node.height >= 20)
      end
    end)

    it("agrees and makes progress with loss, duplication and reordering", function()
      local nodes, world, network = group(4, nil, { latency = 0.01, jitter = 0.01, loss = 0.1,
                                                      duplicate = 0.1, reorder = 0.1 }, 5)
      assert.is_true(run(nodes, world, 15))
      assert.is_true(agree(nodes, 15))
      assert.is_true(network.stats.dropped > 0 and network.stats.duplicated > 0)
    end)

    it("answers a peer still deciding a rank it has finished with the rank's certified state", function()
      -- regression: a node that finalized stopped re-sending its vote, and
      -- peers that had lost it waited forever (4 honest nodes, 20 % loss);
      -- and when f or fewer honest nodes had decided, nothing brought the
      -- others there
      local nodes, world, network = group(4)
      for _, node in ipairs(nodes) do node:start() end
      assert.is_true(world:run_until(function() return nodes[1].height >= 4 end, 3600))
      world:run_for(1)
      local a = nodes[1]
      local keyring = keys(a.names)
      local function from_n02(msg) return reference.seal(msg, keyring:signer("n02")) end
      -- n02 is replaced by a recorder of what n01 sends it for ranks 2 and 3
      local answers = {}
      network:join("n02", function(from, msg)
        if from == "n01" and msg.kind == "confirmation" and msg.value:rank() <= 3 then
          answers[#answers + 1] = msg
        end
      end)
      local head = a.finalized[1]
      a:deliver("n02", from_n02 { kind = "vote", value = csm.value("2.0:n03", 2,
        { attempt = 0, proposer = "n03", parent = head }) })
      a:deliver("n02", from_n02 { kind = "prevote", rank = 3, attempt = 0, id = "3.0:n04" })
      -- once per peer and rank each vote_resend: two nodes past a rank never echo
      a:deliver("n02", from_n02 { kind = "prevote", rank = 3, attempt = 0, id = "3.0:n04" })
      world:run_for(0.1)
      for _, node in ipairs(nodes) do node.sm:close() end
      assert.are.equal(2, #answers)
      table.sort(answers, function(x, y) return x.value:rank() < y.value:rank() end)
      for i, rank in ipairs { 2, 3 } do
        assert.are.equal(a.finalized[rank], answers[i].value:identity())
        assert.is_nil(reference_messages.certificate_problem(a, answers[i].value, answers[i].cert))
      end
    end)

    -- n04 is down while the others finalize `ranks` ranks; then a fresh n04
    -- joins (replacing the old handler), starts with a sync and runs until
    -- it reaches the rank upto(the others' count) gives; returns the nodes
    -- and the fresh n04.
    local function rejoin(ranks, upto)
      local nodes, world, network = group(4)
      local late = nodes[4]
      network:crash("n04")
      for i = 1, 3 do nodes[i]:start() end
      assert.is_true(world:run_until(function() return nodes[1].height >= ranks end, 3600))
      late.sm:close()
      network:restart("n04")
      local fresh = reference.node { name = "n04", names = late.names, world = world, network = network,
        initial = csm.value("genesis", 0), sync = true, signer = keys(late.names):signer("n04") }
      nodes[4] = fresh
      fresh:start()
      local target = upto(nodes[1].height)
      assert.is_true(world:run_until(function() return fresh.height >= target end, 3600))
      for _, node in ipairs(nodes) do node.sm:close() end
      return nodes, fresh
    end

    it("a node started with sync adopts its peers' certified states, then goes on with them", function()
      local nodes, fresh = rejoin(12, function() return 20 end)
      for rank = 1, 20 do
        assert.are.equal(nodes[1].finalized[rank], fresh.finalized[rank])
      end
      -- the first ranks arrived together, by the sync
      assert.are.equal(fresh.finalized_at[1], fresh.finalized_at[10])
    end)

    it("a node more ranks behind than its peers keep syncs past the forgotten ones", function()
      -- peers keep their last 64 finalized states: a node that asked for
      -- older ones used to get nothing, for good
      local nodes, fresh = rejoin(100, function(count) return count + 10 end)
      -- the forgotten ranks were skipped, the rest adopted or finalized alike
      assert.is_nil(fresh.finalized[1])
      local held = 0
      for rank = 1, fresh.height do
        if fresh.finalized[rank] then
          held = held + 1
          local other = nodes[1].finalized[rank] or nodes[2].finalized[rank]
          if other then assert.are.equal(other, fresh.finalized[rank]) end
        end
      end
      assert.is_true(held >= 64)
    end)
  end)

  describe("messages", function()
    it("checks every message before use: malformed, forged or type-confused ones are counted, never raise",
      function()
      local nodes, world = group(4)
      local a = nodes[1]
      a:current_rank()
      local keyring = keys(a.names)
      local n02 = keyring:signer("n02")
      local good_vote = reference.seal({ kind = "vote", value = csm.value("1.0:n02", 1,
        { attempt = 0, proposer = "n02", parent = "genesis" }) }, n02)
      local cases = {
        { "x", "message: kind" },
        { {}, "message: kind" },
        { { kind = "nonsense" }, "nonsense: kind" },
        { { kind = 7 }, "message: kind" },
        { { kind = "prevote", rank = "1", attempt = 0, id = "1.0:n02", sig = "x" }, "prevote: schema" },
        { { kind = "prevote", rank = 1, attempt = 0, id = {}, sig = "x" }, "prevote: schema" },
        { { kind = "prevote", rank = 1, attempt = 0, id = "1.0:n02", sig = "forged" }, "prevote: signature" },
        { { kind = "vote", value = "1.0:n02" }, "vote: schema" },
        { { kind = "vote", value = csm.value("1.0:n02", 1, { attempt = 0, proposer = "n02" }) },
          "vote: schema" },
        -- a vote whose identity names another rank than its value's
        { reference.seal({ kind = "vote", value = csm.value("2.0:n02", 1,
            { attempt = 0, proposer = "n02", parent = "genesis" }) }, n02), "vote: schema" },
        -- signed by n02, sent by n03
        { good_vote, "vote: signature", "n03" },
        { { kind = "proposal", value = csm.value("1.0:n02", 1, { parent = "genesis", attempt = 0,
            proposer = "n02", offer = 0, extra = true }) }, "proposal: schema" },
        { { kind = "proposal", value = csm.value("1.0:n09", 1, { parent = "genesis", attempt = 0,
            proposer = "n09", offer = 0 }) }, "proposal: schema" },
        { { kind = "confirmation", value = csm.value("1.0:n02", 1, { parent = "genesis", attempt = 0,
            proposer = "n02", offer = 0 }), cert = { attempt = 0, sigs = { n02 = "x" } } },
          "confirmation: certificate" },
        { { kind = "sync_request", rank = -1 }, "sync_request: schema" },
        { { kind = "sync_response", rank = 1, chain = { x = 1 } }, "sync_response: schema" },
        { { kind = "liveness", value = { 1 } }, "liveness: schema" },
      }
      for i, c in ipairs(cases) do
        local before = a.refusals[c[2]] or 0
        a:deliver(c[3] or "n02", c[1])
        assert.are.equal(before + 1, a.refusals[c[2]], "case " .. i)
      end
      assert.is_nil(next(a.progress))
      -- the good vote, from its signer, is taken, and tells how far n02 is
      a:deliver("n02", good_vote)
      assert.are.equal(1, a.progress.n02)
      a.sm:close()
      local _ = world
    end)

    it("answers a forged sync with nothing: one honest certificate is enough, a forged one is refused",
      function()
      local nodes, world = group(4)
      for _, node in ipairs(nodes) do node:start() end
      assert.is_true(world:run_until(function() return nodes[2].height >= 3 end, 3600))
      local a = nodes[1]
      local keyring = keys(a.names)
      local state = reference.proposal(a.rank, 0, "n02", a:head(), 0, "forged")
      local sig = keyring:signer("n02"):sign(reference_messages.vote_bytes(a.rank, 0, state:identity(),
        a:head()))
      -- one voter's signature, however often it is offered, is no certificate
      assert.are.equal("certificate of 1 votes",
        reference_messages.certificate_problem(a, state, { attempt = 0, sigs = { n02 = sig } }))
      local entry = a.certs[2]
      assert.is_nil(reference_messages.certificate_problem(a, entry.value, entry.cert))
      for _, node in ipairs(nodes) do node.sm:close() end
    end)
  end)

  describe("attempts and locks", function()
    -- A node of group(4) at rank 1 (nothing started), its record ready.
    local function lone()
      local nodes, world = group(4)
      local a = nodes[1]
      a:current_rank()
      return a, world
    end

    local keyring = keys { "n01", "n02", "n03", "n04" }
    -- msg as peer from signs it
    local function by(from, msg) return reference.seal(msg, keyring:signer(from)) end
    local function proposal(id, attempt)
      local proposer = id:match(":(.*)$")
      return csm.value(id, 1, { attempt = attempt, proposer = proposer, offer = attempt, parent = "genesis" })
    end
    local function vote_of(id, attempt, rank)
      local proposer = id:match(":(.*)$")
      return csm.value(id, rank or 1, { attempt = attempt, proposer = proposer, parent = "genesis" })
    end

    it("a locked node prevotes its lock, not a later attempt's proposal", function()
      local a = lone()
      a.lock = { id = "1.0:n02", attempt = 0 }
      a:move_to(1)
      a:deliver("n03", by("n03", { kind = "proposal", value = proposal("1.1:n03", 1) }))
      assert.are.equal("1.1:n03", a:candidate(1):identity())
      assert.are.equal("1.0:n02", a:choose(1))
    end)

    it("a locked node prevotes a polka later than its lock (f + 1 votes show one)", function()
      local a = lone()
      a.lock = { id = "1.0:n02", attempt = 0 }
      a:move_to(2)
      for _, voter in ipairs { "n03", "n04" } do
        assert.is_true(a:deliver(voter, by(voter, { kind = "vote", value = vote_of("1.1:n03", 1) })) == nil)
      end
      assert.are.same({ "1.1:n03", 1 }, { a:valid() })
      assert.are.equal("1.1:n03", a:choose(1))
    end)

    it("an unlocked node prevotes the latest polka it knows of (q prevotes), else the top leader's proposal",
      function()
      local a = lone()
      a:move_to(1)
      a:deliver("n03", by("n03", { kind = "proposal", value = proposal("1.1:n03", 1) }))
      assert.are.equal("1.1:n03", a:choose(1))
      for _, voter in ipairs { "n02", "n03", "n04" } do
        a:deliver(voter, by(voter, { kind = "prevote", rank = 1, attempt = 0, id = "1.0:n02" }))
      end
      assert.are.equal("1.0:n02", a:choose(1))
    end)

    it("decides on q votes in one attempt, never on votes spread over attempts", function()
      local a = lone()
      a:move_to(2) -- no peer is ahead of it, so is_quorum has no attempt to move to
      local function vote(voter, attempt)
        a:deliver(voter, by(voter, { kind = "vote", value = vote_of("1.0:n02", attempt) }))
      end
      vote("n02", 0)
      vote("n03", 1)
      vote("n04", 2)
      assert.is_false(a:is_quorum(a.sm:votes(1)))
      assert.is_nil(a:decision())
      vote("n03", 0)
      vote("n04", 0)
      assert.is_true(a:is_quorum(a.sm:votes(1)))
      assert.are.same({ "1.0:n02", 0 }, { a:decision() })
    end)

    it("refuses attempts out of range: a peer adds at most slack + 1 entries to a rank", function()
      local a = lone()
      local slack = reference.attempt_slack
      assert.are.equal(16, slack)
      for attempt = 0, 10000 do
        a:deliver("n02", by("n02", { kind = "vote", value = vote_of("1." .. attempt .. ":n02", attempt) }))
        local id = "1." .. attempt .. ":n02"
        a:deliver("n02", by("n02", { kind = "proposal", value = proposal(id, attempt) }))
        a:deliver("n02", by("n02", { kind = "prevote", rank = 1, attempt = attempt, id = "x" .. attempt }))
      end
      for _, bad in ipairs { -1, 0.5, "1", 1 / 0, 0 / 0 } do
        a:deliver("n03", { kind = "vote", sig = "x", value = csm.value("1.0:n03", 1,
          { attempt = bad, proposer = "n03", parent = "genesis" }) })
      end
      assert.are.equal(slack + 1, a.sm:count("votes", 1))
      -- the machine keeps the first, as the original does; the node one per attempt
      assert.are.equal(1, a.sm:count("proposals", 1))
      local attempts, offers = 0, 0
      for _ in pairs(a.tally) do attempts = attempts + 1 end
      for _ in pairs(a.offers) do offers = offers + 1 end
      assert.are.equal(slack + 1, attempts)
      assert.are.equal(slack + 1, offers)
      assert.are.equal(3 * (10000 - slack), a.refusals["vote: attempt"]
        + a.refusals["proposal: attempt"] + a.refusals["prevote: attempt"])
      -- badly typed attempts fail the schema, before anything else
      assert.are.equal(5, a.refusals["vote: schema"])
      -- the next rank takes attempts up to the slack; later ranks nothing
      a:deliver("n02", by("n02", { kind = "vote", value = vote_of("2.0:n02", slack, 2) }))
      a:deliver("n02", by("n02", { kind = "vote", value = vote_of("2.1:n02", slack + 1, 2) }))
      a:deliver("n02", by("n02", { kind = "vote", value = vote_of("3.0:n02", 0, 3) }))
      assert.are.equal(1, a.sm:count("votes", 2))
      assert.are.equal(0, a.sm:count("votes", 3))
      assert.are.equal(1, a.refusals["vote: far"])
      -- moving on widens the range by as much
      a:move_to(5)
      a:deliver("n02", by("n02", { kind = "vote", value = vote_of("1.99:n02", slack + 5) }))
      assert.are.equal(slack + 2, a.sm:count("votes", 1))
      a.sm:close()
    end)

    it("a node that voted alone in an attempt moves on locked; the rank is decided with it later", function()
      -- n02 and n03 lose each other's prevotes and n01's vote until T, so
      -- only n01 sees the polka of attempt 0 and votes there; n04 is
      -- silent, so no rank can be decided without n01. A node that voted
      -- used to stay in its attempt for good, and the rank was never decided
      local nodes, world, network = group(4, { nil, nil, nil, "silent" })
      local T = 30
      for i = 2, 3 do
        local node = nodes[i]
        local deliver = node.deliver
        node.deliver = function(self, from, msg)
          local kind = msg.kind
          if world:now() < T and ((from == "n02" or from == "n03") and (kind == "prevote" or kind == "vote")
              or from == "n01" and kind == "vote") then
            return
          end
          return deliver(self, from, msg)
        end
      end
      local attempts = {}
      network.observer = function(what, from, _, msg)
        if what == "send" and from == "n01" and msg.kind == "vote" and msg.value:rank() == 1 then
          attempts[msg.value.attempt] = true
        end
      end
      for _, node in ipairs(nodes) do node:start() end
      assert.is_true(world:run_until(function()
        return nodes[1].height >= 3 and nodes[2].height >= 3 and nodes[3].height >= 3
      end, 600))
      for _, node in ipairs(nodes) do node.sm:close() end
      assert.is_true(attempts[0])
      local voted = 0
      for _ in pairs(attempts) do voted = voted + 1 end
      assert.is_true(voted >= 2)
      for i = 1, 3 do
        assert.are.equal("1.0:n02", nodes[i].finalized[1])
        assert.is_true(nodes[i].finalized_at[1] >= T)
      end
      assert.is_true(agree(nodes, 3))
    end)
  end)

  describe("equivocate", function()
    it("sends different proposals for one rank to different peers", function()
      local nodes, world, network = group(4, { "equivocate" })
      local sent = {}  -- rank -> { identity -> true }
      network.observer = function(what, from, _, msg)
        if what == "send" and from == "n01" and msg.kind == "proposal" then
          local r = msg.value:rank()
          sent[r] = sent[r] or {}
          sent[r][msg.value:identity()] = true
        end
      end
      assert.is_true(run(nodes, world, 10))
      local split = 0
      for _, ids in pairs(sent) do
        local k = 0
        for _ in pairs(ids) do k = k + 1 end
        if k >= 2 then split = split + 1 end
      end
      assert.is_true(split > 0)
      assert.is_true(agree(nodes, 10))
    end)

    it("4 nodes with 1 equivocating proposer agree for 30 ranks (harness)", function()
      local r = harness.run { nodes = 4, ranks = 30, byzantine = { equivocate = 1 } }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      assert.are.equal("equivocate", r.nodes[1].part)
      for i = 2, 4 do assert.are.equal(30, r.nodes[i].finalized) end
    end)

    it("7 nodes with 2 equivocating proposers agree, with loss", function()
      local r = harness.run { nodes = 7, ranks = 15, byzantine = { equivocate = 2 }, loss = 0.1, seed = 4 }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
    end)
  end)

  describe("double_vote", function()
    it("sends conflicting prevotes and votes for one rank", function()
      local nodes, world, network = group(4, { "double_vote" })
      local prevotes, votes = {}, {}
      network.observer = function(what, from, _, msg)
        if what ~= "send" or from ~= "n01" then return end
        if msg.kind == "prevote" then
          local key = msg.rank .. "/" .. msg.attempt
          prevotes[key] = prevotes[key] or {}
          prevotes[key][msg.id] = true
        elseif msg.kind == "vote" then
          local r = msg.value:rank()
          votes[r] = votes[r] or {}
          votes[r][msg.value:identity()] = true
        end
      end
      assert.is_true(run(nodes, world, 10))
      local function conflicting(map)
        for _, ids in pairs(map) do
          local k = 0
          for _ in pairs(ids) do k = k + 1 end
          if k >= 2 then return true end
        end
        return false
      end
      assert.is_true(conflicting(prevotes))
      assert.is_true(conflicting(votes))
      assert.is_true(agree(nodes, 10))
    end)

    it("honest nodes refuse its votes and agree (harness)", function()
      local built = capture_nodes()
      local r = harness.run { nodes = 4, ranks = 20, byzantine = { double_vote = 1 } }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      assert.are.equal("double_vote", r.nodes[1].part)
      for i = 2, 4 do
        assert.is_true(r.nodes[i].refused > 0)
        -- among the refusals: its conflicting votes
        local node = built[i]
        assert.are.equal(r.nodes[i].name, node.name)
        assert.is_true((node.refusals["vote: conflict"] or 0) > 0 or node.evidence > 0)
      end
    end)

    it("an honest run refuses no conflicting vote", function()
      local built = capture_nodes()
      local r = harness.run { nodes = 4, ranks = 20 }
      assert.is_true(r.progress)
      for _, node in ipairs(built) do
        assert.is_nil(node.refusals["vote: conflict"])
      end
    end)
  end)

  describe("silent", function()
    it("never starts, never sends, ignores what it gets; the other three go on", function()
      local nodes, world, network = group(4, { nil, "silent" })
      local from_silent = 0
      network.observer = function(what, from)
        if what == "send" and from == "n02" then from_silent = from_silent + 1 end
      end
      for _, node in ipairs(nodes) do node:start() end
      assert.is_true(world:run_until(function()
        return nodes[1].height >= 8 and nodes[3].height >= 8 and nodes[4].height >= 8
      end, 3600))
      assert.are.equal("stopped", nodes[2].sm:state())
      for _, node in ipairs(nodes) do node.sm:close() end
      assert.are.equal(0, from_silent)
      assert.are.equal(0, nodes[2].height)
      assert.is_true(agree(nodes, 8))
    end)

    it("7 nodes with 2 silent make progress (harness)", function()
      local r = harness.run { nodes = 7, ranks = 20, byzantine = { silent = 2 } }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      local silent = 0
      for _, n in ipairs(r.nodes) do
        if n.part == "silent" then
          silent = silent + 1
          assert.are.equal(0, n.finalized)
        else
          assert.are.equal(20, n.finalized)
        end
      end
      assert.are.equal(2, silent)
    end)

    it("4 nodes with 2 silent have no quorum: no progress, stuck in liveness_check (harness)", function()
      local r = harness.run { nodes = 4, ranks = 5, byzantine = { silent = 2 }, time = 20 }
      assert.is_true(r.agreement)
      assert.is_false(r.progress)
      for _, s in ipairs(r.stuck) do assert.are.equal("liveness_check", s.state) end
      assert.are.equal(2, #r.stuck)
    end)
  end)

  describe("under loss", function()
    it("4 honest nodes with 20 % loss all reach the target (harness)", function()
      local r = harness.run { nodes = 4, ranks = 30, loss = 0.2 }
      assert.is_true(r.agreement)
      assert.is_true(r.progress)
      -- (a sync that adopts several ranks at once may pass the target)
      for _, n in ipairs(r.nodes) do assert.is_true(n.finalized >= 30) end
      assert.is_true(r.messages.dropped > 0)
    end)
  end)

  describe("regressions, through csm.harness", function()
    -- Every node's pause raises on a wait of no time at all (so a regression
    -- of the spin below fails instead of hanging); returns the count.
    local function guard_pause()
      local count = { 0 }
      local original = reference.node
      reference.node = function(options)
        local node = original(options)
        local pause = node.pause
        node.pause = function(self, ctx, seconds)
          if not (seconds > 0) then
            count[1] = count[1] + 1
            error("pause for " .. tostring(seconds) .. " s")
          end
          return pause(self, ctx, seconds)
        end
        return node
      end
      finally(function() reference.node = original end)
      return count
    end

    local PARTITION = { at = 2, duration = 60, groups = { { "n01", "n02" }, { "n03", "n04" } } }

    it("never waits for no time at all once the view deadline has passed", function()
      -- a node that saw votes past its view deadline paused for 0 s again
      -- and again, and the sim world never advanced
      local zero = guard_pause()
      local r = harness.run { nodes = 7, ranks = 40, byzantine = { double_vote = 1, equivocate = 1 },
                              loss = 0.1, reorder = 0.1, duplicate = 0.1, time = 300 }
      assert.are.equal(0, zero[1])
      assert.is_true(r.agreement)
    end)

    it("a node that missed the polka of an attempt whose voters stay there joins it (partitions)", function()
      -- the nodes that voted stayed in their attempt while the others moved
      -- on, and no attempt could gather a quorum after the partition healed
      local zero = guard_pause()
      for _, seed in ipairs { 3, 17 } do
        local r = harness.run { seed = seed, nodes = 4, ranks = 30, time = 600, partitions = { PARTITION } }
        assert.is_true(r.agreement)
        assert.is_true(r.progress, "seed " .. seed)
      end
      assert.are.equal(0, zero[1])
    end)

    it("a node past a rank answers a peer that lost its vote (20 % loss seeds)", function()
      -- one node finalized and the others had lost its vote, which it no
      -- longer re-sent
      local zero = guard_pause()
      for _, seed in ipairs { 32, 43 } do
        local r = harness.run { nodes = 4, ranks = 30, loss = 0.2, seed = seed, time = 600 }
        assert.is_true(r.agreement)
        assert.is_true(r.progress, "seed " .. seed)
      end
      assert.are.equal(0, zero[1])
    end)

    it("a crashed peer's last rank does not keep the others syncing forever (crash, loss)", function()
      -- two nodes saw f + 1 peers ahead (one of them crashed), went back to
      -- loading, and never got the f + 1 sync answers they waited for
      local zero = guard_pause()
      for _, seed in ipairs { 2, 4 } do
        local r = harness.run { nodes = 4, ranks = 30, byzantine = { crash = 1 }, crash_at = 2, loss = 0.1,
                                seed = seed, time = 600 }
        assert.is_true(r.agreement)
        assert.is_true(r.progress, "seed " .. seed)
      end
      assert.are.equal(0, zero[1])
    end)

    it("a restarted node keeps what it finalized and voted, and answers syncs (crash, loss)", function()
      local zero = guard_pause()
      for _, seed in ipairs { 2, 4 } do
        local r = harness.run { nodes = 4, ranks = 40, byzantine = { crash = 1 }, crash_at = 2,
                                restart_after = 20, loss = 0.1, seed = seed, time = 600 }
        assert.is_true(r.agreement)
        assert.is_true(r.progress, "seed " .. seed)
        assert.is_true(r.nodes[1].finalized >= 39)
      end
      assert.are.equal(0, zero[1])
    end)
  end)
end)
