-- Hostile peers (departure 5, bounded memory; the error rule): a reference cluster
-- of three honest nodes and a fourth member that, instead of taking part,
-- floods the honest machines at a high rate with receives for every rank
-- from 0 to 2^53, identities of 1 MiB of binary bytes, conflicting votes and
-- many distinct fake voters. The honest nodes keep finalizing and agreeing,
-- every refusal carries its documented reason, and their ledgers and the Lua
-- heap stay bounded. Then the fourth member speaks the reference protocol
-- itself, with attempt numbers up to 2^53: what it can add to a rank's maps
-- stays within the attempt slack.
-- (#heavy: minutes under valgrind's memcheck or a stressed collector, so
-- CI's runs of those leave these out; their full modes run them: see
-- docs/reliability.md)
local csm = require "csm"
local net = require "csm.lab.net"
local signer = require "csm.lab.signer"
local reference_messages = require "csm.protocols.reference.messages"
local reference = require "csm.protocols.reference"

local NAMES = { "n01", "n02", "n03", "n04" }
local HOSTILE = "n04"
local SCALE = 0.05     -- every timeout and interval x 0.05: some five rounds a virtual second
local SECONDS = 12     -- virtual seconds of flooding
local PERIOD = 0.01    -- virtual seconds between two bursts
local SAMPLE = 0.25    -- virtual seconds between two ledger and heap samples
local WARM_UP = 2      -- the heap is measured from here on
local LIMITS = csm.defaults.limits
local WINDOW, PER_RANK, ID_BYTES = LIMITS.rank_window, LIMITS.peers_per_rank, LIMITS.identity_bytes
local TOP = 2 ^ 53

-- 256 bytes, 0 to 255 (a NUL first), and 1 MiB of them: made once, reused.
local BYTES
do
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  BYTES = table.concat(t)
end
local MIB = string.rep(BYTES, 4096)

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- A Park-Miller generator: the hostile's draws leave the world's alone, and
-- every product stays exact in a double, so both interpreters draw alike.
local function generator(seed)
  local x = seed
  return function()
    x = (x * 16807) % 2147483647
    return x / 2147483647
  end
end

-- Three honest reference nodes and a silent fourth member on one sim world.
local function cluster(seed)
  local world = csm.sim { seed = seed }
  local network = net.new(world, { latency = 0.01, jitter = 0.005 })
  local run = { world = world, nodes = {}, violations = {}, agreed = {}, finalized = {} }
  local keyring = signer.keyring(seed, NAMES)
  run.keyring = keyring
  local function on_finalize(node, rank, state)
    local id = state:identity()
    local first = run.agreed[rank]
    if first == nil then
      run.agreed[rank] = id
    elseif first ~= id then
      run.violations[#run.violations + 1] = string.format("rank %d: %s finalized %q, another %q",
        rank, node.name, id, first)
    end
    -- an honest proposal of this rank: "<rank>.<attempt>:<proposer>"
    if not id:match("^" .. rank .. "%.%d+:n0[123]$") then
      run.violations[#run.violations + 1] = string.format("rank %d: %s finalized %q", rank,
        node.name, id)
    end
    local times = run.finalized[node.name]
    times[#times + 1] = world:now()
  end
  for _, name in ipairs(NAMES) do
    local node = reference.node { name = name, names = NAMES, world = world, network = network,
      role = name == HOSTILE and "silent" or "honest", initial = csm.value("genesis", 0),
      timing = { scale = SCALE }, on_finalize = on_finalize, signer = keyring:signer(name) }
    run.finalized[name] = {}
    if name ~= HOSTILE then run.nodes[#run.nodes + 1] = node else run.hostile = node.endpoint end
  end
  network:crash(HOSTILE)
  run.network = network
  for _, node in ipairs(run.nodes) do node:start() end
  return run
end

-- The reason csm documents for a receive of rank whose longest identity
-- (peer, voter, proposer or value) has longest bytes; nil when admitted.
local function refusal(sm, rank, longest)
  if longest > ID_BYTES then
    return string.format("identity too long (%d bytes, identity_bytes %d)", longest, ID_BYTES)
  end
  local active = sm:active_state():rank()
  if rank <= active then return string.format("stale rank %d (active rank %d)", rank, active) end
  if rank > active + WINDOW then
    return string.format("rank %d beyond window (active rank %d, rank_window %d)", rank, active, WINDOW)
  end
end

-- Counts what the hostile sent and checks every answer against the reason
-- it must carry (want: an error text, or nil for "accepted"); refusals are
-- counted by their code.
local function tally(run, want, ok, err, code)
  run.sent = run.sent + 1
  if want == nil then
    if ok == true and err == nil then
      run.accepted = run.accepted + 1
      return true
    end
  elseif ok == nil and err == want then
    run.reasons[code] = (run.reasons[code] or 0) + 1
    return false
  end
  if #run.wrong < 5 then
    run.wrong[#run.wrong + 1] = string.format("wanted %s, got %s, %s", tostring(want), tostring(ok),
      tostring(err))
  end
  return ok == true
end

-- Asserts sm's ledger is within the default limits: at most PER_RANK entries
-- per map per rank, WINDOW ranks above the active one, no identity longer
-- than ID_BYTES. Returns sm:inspect().
local function check_ledger(sm)
  local s = sm:inspect()
  local low = sm:active_state():rank()
  local problems = {}
  if s.ranks_held > WINDOW then problems[#problems + 1] = "ranks held " .. s.ranks_held end
  for kind, ranks in pairs(s.maps) do
    local total = 0
    for rank, n in pairs(ranks) do
      total = total + n
      if n > PER_RANK then problems[#problems + 1] = string.format("%s at %d: %d", kind, rank, n) end
      if rank <= low or rank > low + WINDOW then
        problems[#problems + 1] = string.format("%s holds rank %d (active %d)", kind, rank, low)
      end
      for key, v in pairs(sm[kind](sm, rank)) do
        if #key > ID_BYTES or #v:identity() > ID_BYTES then
          problems[#problems + 1] = string.format("%s at %d holds %d and %d bytes", kind, rank,
            #key, #v:identity())
        end
      end
    end
    if total ~= s.sizes[kind] then problems[#problems + 1] = kind .. " sizes disagree" end
  end
  return s, problems
end

-- One burst of hostile receives into every honest machine.
local function burst(run, b, draw, big_values)
  local ranks_of = function(active)
    -- the edges, one more rank of the window each burst, powers of two and a
    -- random rank up to 2^53
    return { 0, active, active + 1, active + 2, active + 1 + b % WINDOW, active + WINDOW,
      active + WINDOW + 1, TOP - 1, TOP, 2 ^ (b % 54), math.floor(draw() * TOP) }
  end
  for _, node in ipairs(run.nodes) do
    local sm = node.sm
    local active = sm:active_state():rank()
    -- every kind at ranks from 0 to 2^53; the vote conflicts with the last burst's
    local mine = b % 2 == 0 and "hostile-a" or "hostile-b"
    for _, rank in ipairs(ranks_of(active)) do
      local v = csm.value(mine, rank)
      local want = refusal(sm, rank, #HOSTILE)
      tally(run, want, sm:receive_proposal(HOSTILE, v))
      tally(run, want, sm:receive_liveness_check(HOSTILE, v))
      tally(run, want, sm:receive_confirmation(HOSTILE, v))
      local held = want == nil and sm:get("votes", rank, HOSTILE)
      local vote_want = want
      if held and held:identity() ~= mine then
        vote_want = string.format("conflicting vote from '%s' at rank %d", HOSTILE, rank)
      end
      if tally(run, vote_want, sm:receive_vote(HOSTILE, HOSTILE, v)) then
        run.votes_stored = run.votes_stored + 1
      elseif vote_want and vote_want:match("conflicting") then
        run.conflicts = run.conflicts + 1
      end
    end
    -- distinct fake voters near the active rank, each for an identity of its
    -- own: the reference protocol counts voters by name, so a shared
    -- identity would let q of them make a quorum
    for j = 1, 6 do
      local voter = string.format("sybil-%d-%d", b, j)
      local rank = active + 1 + j % 3
      if tally(run, nil, sm:receive_vote(HOSTILE, voter, csm.value(voter, rank))) then
        run.fake_voters = run.fake_voters + 1
      end
    end
    -- identities of exactly the limit (binary, NUL included) fit; one more byte does not
    local edge = csm.value(BYTES, active + 1 + b % 3)
    tally(run, nil, sm:receive_proposal(BYTES, edge))
    tally(run, nil, sm:receive_vote(HOSTILE, BYTES, edge))
    tally(run, refusal(sm, active + 1, ID_BYTES + 1),
      sm:receive_liveness_check(BYTES .. "\0", csm.value("x", active + 1)))
    -- 1 MiB as peer, voter, proposer and value identity, at every fourth burst
    if b % 4 == 0 then
      local huge = refusal(sm, 0, #MIB)
      local small = csm.value("x", active + 1)
      tally(run, huge, sm:receive_proposal(MIB, small))
      tally(run, huge, sm:receive_vote(HOSTILE, MIB, small))
      tally(run, huge, sm:receive_vote(MIB, HOSTILE, small))
      for _, v in ipairs(big_values) do
        tally(run, huge, sm:receive_liveness_check(HOSTILE, v))
        tally(run, huge, sm:receive_confirmation(HOSTILE, v))
        tally(run, huge, sm:receive_vote(HOSTILE, "sybil-big", v))
      end
    end
  end
end

-- Runs the cluster for SECONDS virtual seconds, with the hostile flood when
-- flood is true; samples every honest ledger and the heap every SAMPLE s.
local function scenario(flood)
  local run = cluster(5)
  local world = run.world
  run.sent, run.accepted, run.reasons, run.wrong = 0, 0, {}, {}
  run.votes_stored, run.conflicts, run.fake_voters = 0, 0, 0
  run.samples, run.problems, run.max_queued, run.bursts = 0, {}, 0, 0
  if flood then
    local draw, b = generator(12345), 0
    local big_values = { csm.value(MIB, 1), csm.value(MIB, TOP) }
    local function tick()
      b = b + 1
      run.bursts = b
      -- a fresh 1 MiB value now and then, at the rank being decided
      if b % 40 == 0 then
        big_values[3] = csm.value(MIB, run.nodes[1].sm:active_state():rank() + 1)
      end
      burst(run, b, draw, big_values)
      if world:now() < SECONDS then world:after(PERIOD, tick) end
    end
    world:after(PERIOD, tick)
  end
  local function sample()
    run.samples = run.samples + 1
    for _, node in ipairs(run.nodes) do
      local s, problems = check_ledger(node.sm)
      for _, p in ipairs(problems) do
        if #run.problems < 5 then run.problems[#run.problems + 1] = node.name .. ": " .. p end
      end
      if s.events_queued > run.max_queued then run.max_queued = s.events_queued end
    end
    if world:now() >= WARM_UP then
      full_gc()
      local kib = collectgarbage("count")
      run.heap_first = run.heap_first or kib
      run.heap_max = math.max(run.heap_max or kib, kib)
    end
    if world:now() < SECONDS then world:after(SAMPLE, sample) end
  end
  world:after(SAMPLE, sample)
  world:run_for(SECONDS + SAMPLE / 2)
  return run
end

local flooded, quiet
local function runs()
  if flooded == nil then
    quiet = scenario(false)
    for _, node in ipairs(quiet.nodes) do node.sm:close() end
    flooded = scenario(true)
  end
  return flooded, quiet
end

describe("csm", function()
  describe("a reference cluster with a hostile peer #heavy", function()
    it("keeps finalizing with its honest peers about as fast as without it", function()
      local run, base = runs()
      local least = math.huge
      for _, node in ipairs(base.nodes) do least = math.min(least, node.height) end
      assert.is_true(least >= 40, "without the hostile peer: " .. least .. " ranks")
      for _, node in ipairs(run.nodes) do
        assert.is_true(node.height >= math.floor(least * 0.75),
          string.format("%s finalized %d ranks, %d without the hostile peer", node.name, node.height, least))
        -- and all along: no virtual second without a finalization
        local times, last = run.finalized[node.name], 0
        for _, t in ipairs(times) do
          assert.is_true(t - last <= 1, string.format("%s: nothing finalized from %.2f to %.2f s",
            node.name, last, t))
          last = t
        end
        assert.is_true(SECONDS - last <= 1, node.name .. " stopped finalizing at " .. last)
        assert.is_false(node.sm:closed())
      end
    end)

    it("finalizes the same honest proposal at every rank on every honest node", function()
      local run = runs()
      assert.are.same({}, run.violations)
      local ranks = 0
      for rank in pairs(run.agreed) do ranks = math.max(ranks, rank) end
      for _, node in ipairs(run.nodes) do
        for rank = 1, node.height do
          assert.are.equal(run.agreed[rank], node.finalized[rank], node.name .. " at rank " .. rank)
        end
      end
      assert.is_true(ranks >= 30)
    end)

    it("refuses stale and far ranks, long identities and conflicting votes with their reasons", function()
      local run = runs()
      assert.are.same({}, run.wrong)
      assert.is_true(run.sent > 50000, "sent " .. run.sent)
      local reasons = run.reasons
      assert.is_true((reasons.stale or 0) > 0)
      assert.is_true((reasons.far or 0) > 0)
      assert.is_true((reasons.identity or 0) > 0)
      assert.is_true((reasons.conflict or 0) > 0)
      assert.is_true(run.conflicts > 0)
      for code in pairs(reasons) do
        assert.is_truthy(({ stale = true, far = true, identity = true, conflict = true })[code], code)
      end
    end)

    it("accepts what fits: ranks in the window, identities at the limit, distinct voters", function()
      local run = runs()
      assert.is_true(run.accepted > 1000, "accepted " .. run.accepted)
      assert.is_true(run.votes_stored > 100)
      assert.is_true(run.bursts >= SECONDS / PERIOD - 1)
      assert.are.equal(#run.nodes * 6 * run.bursts, run.fake_voters)
    end)

    it("keeps every honest ledger within the limits at every sample", function()
      local run = runs()
      assert.is_true(run.samples >= SECONDS / SAMPLE)
      assert.are.same({}, run.problems)
      -- one waiting receive event per kind at most, and the behaviour's few
      assert.is_true(run.max_queued <= 8, "events queued " .. run.max_queued)
    end)

    it("keeps the Lua heap flat after warm-up", function()
      local run = runs()
      -- the ledgers' contents come and go and the honest nodes' logs grow a
      -- little with every rank (some 400 KiB in all); one 1 MiB identity of
      -- the thousands sent, if kept, would break the bound
      local growth = run.heap_max - run.heap_first
      assert.is_true(growth < 768, string.format("%.0f KiB after warm-up, at most %.0f KiB later",
        run.heap_first, run.heap_max))
    end)

    it("caps a rank's votes at peers_per_rank and keeps finalizing below it", function()
      local run = runs()
      local world = run.world
      local counts = {}
      for i, node in ipairs(run.nodes) do
        local sm = node.sm
        local rank = sm:active_state():rank() + WINDOW
        local refused = 0
        for k = 1, PER_RANK + 8 do
          local ok, err = sm:receive_vote(HOSTILE, "sybil-cap-" .. k, csm.value("cap-" .. k, rank))
          if not ok then
            refused = refused + 1
            assert.are.equal(string.format("votes map full at rank %d (peers_per_rank %d)", rank,
              PER_RANK), err)
          end
        end
        assert.are.equal(PER_RANK, sm:count("votes", rank))
        assert.is_true(refused >= 8)
        counts[i] = node.height
      end
      world:run_for(1)
      for i, node in ipairs(run.nodes) do
        assert.is_true(node.height > counts[i], node.name .. " stopped finalizing")
        local _, problems = check_ledger(node.sm)
        assert.are.same({}, problems)
        node.sm:close()
      end
      assert.are.same({}, run.violations)
    end)
  end)

  describe("a reference cluster with a peer speaking the protocol #heavy", function()
    it("keeps finalizing while the peer sends every kind of message for attempts up to 2^53", function()
      -- the fourth member publishes, every 0.04 s, prevotes, votes and
      -- proposals for the rank being decided and the next, at attempts
      -- counting up from 0, at the edges of the range and at random up to
      -- 2^53, each vote for an identity of its own
      local run = cluster(7)
      local world, network = run.world, run.network
      network:restart(HOSTILE)
      local slack = reference.attempt_slack
      local draw, b, worst = generator(777), 0, 0
      local function tick()
        b = b + 1
        local rank = run.nodes[1].sm:active_state():rank() + 1
        local attempts = { b, b % (slack + 2), slack, slack + 1, math.floor(draw() * TOP), TOP, -1, 0.5 }
        -- signed with its own key, as a member's messages are (a badly typed
        -- attempt cannot be signed: those go out with a bogus signature)
        local own = run.keyring:signer(HOSTILE)
        local head = run.nodes[1]:head()
        for _, r in ipairs { rank, rank + 1 } do
          for _, a in ipairs(attempts) do
            local whole = a >= 0 and a % 1 == 0
            local id = whole and reference_messages.proposal_id(r, a, HOSTILE, tostring(b))
              or string.format("%d.%s:%s", r, tostring(a), HOSTILE)
            local function send(msg)
              if whole then reference.seal(msg, own) else msg.sig = "bogus" end
              run.hostile:publish(msg)
            end
            send { kind = "prevote", rank = r, attempt = a, id = id }
            send { kind = "vote",
                   value = csm.value(id, r, { attempt = a, proposer = HOSTILE, parent = head }) }
            send { kind = "proposal", value = csm.value(id, r, { attempt = a, proposer = HOSTILE,
              offer = a, parent = head, data = whole and tostring(b) or nil }) }
          end
        end
        -- what the peer holds in an honest node's maps at the rank being
        -- decided: one vote per attempt taken, which the node's own attempt bounds
        for _, node in ipairs(run.nodes) do
          local held = 0
          for key in pairs(node.sm:votes(node.sm:active_state():rank() + 1)) do
            if key:sub(1, #HOSTILE + 1) == HOSTILE .. "@" then held = held + 1 end
          end
          local attempt = node.attempt or 0
          assert.is_true(held <= attempt + slack + 1, string.format("%s holds %d of its votes at attempt %d",
            node.name, held, attempt))
          worst = math.max(worst, held)
        end
        if world:now() < SECONDS then world:after(0.04, tick) end
      end
      world:after(0.04, tick)
      world:run_for(SECONDS)
      for _, node in ipairs(run.nodes) do
        node.sm:close()
        assert.is_true(node.height >= 30, node.name .. " finalized " .. node.height)
        assert.is_true((node.refusals["vote: attempt"] or 0) > 0)
        assert.is_true((node.refusals["proposal: attempt"] or 0) > 0)
      end
      -- agreement; and what was finalized is an honest proposal or, at a
      -- rank the peer leads, one of its own (a byzantine leader may win)
      for _, v in ipairs(run.violations) do
        assert.is_truthy(v:match('^rank %d+: n0[123] finalized "%d+%.%d+:n04#%x+"$'), v)
      end
      for _, node in ipairs(run.nodes) do
        for rank = 1, node.height do
          assert.are.equal(run.agreed[rank], node.finalized[rank], node.name .. " at rank " .. rank)
        end
      end
      assert.is_true(worst > 0)
    end)
  end)
end)
