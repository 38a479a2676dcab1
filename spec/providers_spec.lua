-- Every provider method in every way it can fail: an error result, a raise,
-- a wrong-typed result, a call that never returns, and a call back into the
-- machine (or another machine on the loop) from inside.
local csm = require "csm"
local support = require "support"

local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local function value(identity, rank)
  return csm.value(identity, rank)
end

-- Machines under test start at T0, when the bystander is half-way through
-- proving its second rank.
local T0 = 2.5

local function line(t, edge)
  return string.format("%g %s", T0 + t, edge)
end

local function last(...)
  return (select(select("#", ...), ...))
end

local function store_proposal(sm)
  assert(sm:store("proposals", 1, "n1", value("p1", 1)))
end

local function chosen(sm)
  store_proposal(sm)
  sm:set_chosen_proposer("n1")
  assert(sm:store("votes", 1, "n1", value("p1", 1)))
end

-- For each method: the state whose behaviour calls it (every other state's
-- behaviour is off), what it needs there, when it is called, what it returns
-- when it works, the transition that follows, the state's timeout and its
-- transition, and wrong-typed results with the error each raises (none for a
-- result that is not checked).
local METHODS = {
  { provider = "sync", method = "synchronize", state = "loading", at = 0,
    timing = { loading = 30 },
    normal = function(_, existing) return existing end,
    ok = "loading -sync_complete-> collecting",
    timeout = 30, on_timeout = "loading -sync_timeout-> loading",
    wrong = {
      { results = { 42 },
        message = "sync:synchronize returned a number as result #1 (state expected)" },
    } },
  { provider = "voting", method = "send_proposal", state = "publishing", at = 0,
    setup = store_proposal,
    normal = function() return true end,
    ok = "publishing -publish_complete-> voting",
    timeout = 1, on_timeout = "publishing -publish_timeout-> voting" },
  { provider = "voting", method = "decide_and_send_vote", state = "voting", at = 0,
    setup = store_proposal,
    normal = function(_, proposals)
      local _, proposal = next(proposals)
      return "n1", value(proposal:identity(), proposal:rank())
    end,
    ok = "voting -quorum_reached-> finalizing",
    timeout = 16, on_timeout = "voting -voting_timeout-> voting",
    wrong = {
      { results = { 7 },
        message = "voting:decide_and_send_vote returned a number as result #1 (peer expected)" },
      { results = { "n1", 7 },
        message = "voting:decide_and_send_vote returned a number as result #2 (value expected)" },
    } },
  { provider = "voting", method = "send_vote", state = "voting", at = 1,
    setup = chosen,
    extra = function()
      local checks = 0
      return { voting = { is_quorum = function()
        checks = checks + 1
        return checks > 1
      end } }
    end,
    normal = function() return "n1" end,
    ok = "voting -quorum_reached-> finalizing",
    timeout = 16, on_timeout = "voting -voting_timeout-> voting",
    wrong = {
      { results = { 42 }, message = "voting:send_vote returned a number as result #1 (peer expected)" },
    } },
  { provider = "voting", method = "is_quorum", state = "voting", at = 0,
    setup = chosen,
    normal = function(_, votes) return next(votes) ~= nil end,
    ok = "voting -quorum_reached-> finalizing",
    timeout = 16, on_timeout = "voting -voting_timeout-> voting",
    wrong = {
      { results = { 1 }, message = "voting:is_quorum returned a number as result #1 (boolean expected)" },
    } },
  { provider = "voting", method = "finalize_votes", state = "finalizing", at = 0,
    setup = store_proposal,
    normal = function(_, proposals)
      local peer, proposal = next(proposals)
      return proposal, peer
    end,
    ok = "finalizing -aggregation_done-> verifying",
    timeout = 1, on_timeout = "finalizing -aggregation_timeout-> finalizing",
    wrong = {
      { results = { "final" },
        message = "voting:finalize_votes returned a string as result #1 (value expected)" },
      { results = { value("p1", 1), 7 },
        message = "voting:finalize_votes returned a number as result #2 (peer expected)" },
    } },
  { provider = "voting", method = "send_confirmation", state = "verifying", at = 0,
    setup = function(sm) sm:set_next_state(value("final", 1)) end,
    normal = function() return true end,
    ok = "verifying -verification_done-> collecting",
    timeout = 1, on_timeout = "verifying -verification_timeout-> verifying" },
  { provider = "leader", method = "get_next_leaders", state = "collecting", at = 0,
    normal = function() return { "n1" } end,
    ok = "collecting -collection_done-> liveness_check",
    timeout = 10, on_timeout = "collecting -induce_sync-> loading",
    wrong = {
      { results = { 7 },
        message = "leader:get_next_leaders returned a number as result #1 (peers expected)" },
      { results = { { "n1", 7 } },
        message = "leader:get_next_leaders returned a table as result #1 (peers expected)" },
    } },
  { provider = "leader", method = "prove_next_state", state = "proving", at = 0,
    setup = function(sm) sm:set_collected(value("live-n1", 1)) end,
    normal = function(_, prior)
      return value("p" .. (prior:rank() + 1), prior:rank() + 1)
    end,
    ok = "proving -proof_complete-> publishing",
    timeout = 120, on_timeout = "proving -publish_timeout-> voting",
    wrong = {
      { results = { {} },
        message = "leader:prove_next_state returned a table as result #1 (value expected)" },
    } },
  { provider = "liveness", method = "collect", state = "collecting", at = 0,
    normal = function() return value("live-n1", 1) end,
    ok = "collecting -collection_done-> liveness_check",
    timeout = 10, on_timeout = "collecting -induce_sync-> loading",
    wrong = {
      { results = { true }, message = "liveness:collect returned a boolean as result #1 (value expected)" },
    } },
  { provider = "liveness", method = "send_liveness", state = "collecting", at = 0,
    normal = function() return true end,
    ok = "collecting -collection_done-> liveness_check",
    timeout = 10, on_timeout = "collecting -induce_sync-> loading" },
}

-- What a receive from inside a provider sends, and the peer it comes from.
local RECEIVES = {
  { kind = "liveness", name = "receive_liveness_check",
    call = function(sm) return sm:receive_liveness_check("n2", value("live-n2", 1)) end },
  { kind = "proposals", name = "receive_proposal",
    call = function(sm) return sm:receive_proposal("n2", value("p-n2", 1)) end },
  { kind = "votes", name = "receive_vote",
    call = function(sm) return sm:receive_vote("n1", "n2", value("p1", 1)) end },
  { kind = "confirmations", name = "receive_confirmation",
    call = function(sm) return sm:receive_confirmation("n2", value("p1", 1)) end },
}

-- The transitions at t that take the machine along edge: an edge back into
-- the state under test re-runs its behaviour, whose call then works.
local function follow(m, t, edge)
  local out = { line(t, edge) }
  if edge:match("-> (.*)$") == m.state then out[2] = line(t, m.ok) end
  return out
end

local function timeline(m, ...)
  local out = { line(0, "stopped -start-> " .. m.state) }
  for _, list in ipairs { ... } do
    for _, entry in ipairs(list) do out[#out + 1] = entry end
  end
  return out
end

-- The original's path after an error result: loading retries after sync_retry,
-- every other state induces a sync.
local function error_path(m)
  if m.state == "loading" then return follow(m, m.at + 10, "loading -sync_timeout-> loading") end
  return follow(m, m.at, m.state .. " -induce_sync-> loading")
end

-- Runs the machine under test on a world where a bystander already runs;
-- the method's first call does first(env, ...), later calls work. Returns
-- env: world, sm and its log, other (the bystander) and other_log.
local function start(m, first)
  local world = csm.sim { seed = 1 }
  local other, _, other_log = support.bystander(world)
  assert(other:start())
  world:run_for(T0)
  local env = { world = world, other = other, other_log = other_log }
  local overrides = m.extra and m.extra() or {}
  overrides[m.provider] = overrides[m.provider] or {}
  local called = false
  overrides[m.provider][m.method] = function(...)
    if not called then
      called = true
      return first(env, ...)
    end
    return m.normal(...)
  end
  env.sm, _, env.log = support.enter(m.state, {
    loop = world, timing = m.timing, keep = { stopping = true }, overrides = overrides,
    setup = function(sm)
      env.sm = sm
      if m.setup then m.setup(sm) end
    end,
  })
  return env
end

local function calls(env)
  return #env.log.providers.calls
end

local function rank(sm)
  return sm:active_state():rank()
end

-- The bystander finalizes one rank a virtual second, whatever happens here.
local function assert_bystander_goes_on(env)
  local before = rank(env.other)
  env.world:run_for(3)
  assert.are.equal(before + 3, rank(env.other))
  assert.is_false(env.other:closed())
  assert.are.same({}, env.other_log.errors)
end

-- The bystander goes on while this machine, closed or stopped, calls no
-- provider.
local function assert_nothing_called_after(env)
  local n = calls(env)
  assert_bystander_goes_on(env)
  assert.are.equal(n, calls(env))
end

-- A machine closed by a bug: the error, one trace, no listener told, and
-- nothing more called however long the world runs.
local function assert_fatal(env, m, first_line)
  local sm, log = env.sm, env.log
  assert.is_true(sm:closed())
  assert.are.equal("stopped", sm:state())
  local err = sm:error()
  assert.are.equal(first_line, err:match("^[^\n]*"))
  assert.are.equal("stack traceback:", err:match("^[^\n]*\n([^\n]*)"))
  assert.are.same({ "fatal error encountered: " .. err }, log.errors)
  assert.are.same(timeline(m), log.timeline)
  local n = calls(env)
  assert_bystander_goes_on(env)
  assert.are.equal(n, calls(env))
  assert.are.same({ nil, "machine is closed", "closed" }, { sm:start() })
end

local function assert_open(sm)
  assert.is_false(sm:closed())
  assert.is_nil(sm:error())
end

-- A provider that never returned: the state's timeout moved the machine on
-- with no error; once closed, nothing more is called.
local function assert_cut_off(env, m)
  assert.are.same({}, env.log.errors)
  assert.are.same(timeline(m, follow(m, m.timeout, m.on_timeout)), env.log.timeline)
  assert_open(env.sm)
  env.sm:close()
  assert_nothing_called_after(env)
end

describe("providers", function()
  for _, m in ipairs(METHODS) do
    local name = m.provider .. "." .. m.method
    local run_to = m.at + 0.5

    describe(name, function()
      it("returning nil, err traces the error and takes the original's error path", function()
        local env = start(m, function() return nil, "unreachable" end)
        env.world:run_for(run_to + (m.state == "loading" and 10 or 0))
        assert.are.same({ "error encountered in " .. m.state .. ": unreachable" }, env.log.errors)
        assert.are.same(timeline(m, error_path(m)), env.log.timeline)
        assert_open(env.sm)
        assert_bystander_goes_on(env)
      end)

      it("raising closes the machine with the message and a traceback", function()
        local env = start(m, function() error("boom in " .. m.method, 0) end)
        env.world:run_for(run_to)
        assert_fatal(env, m, "boom in " .. m.method)
      end)

      it("raising a non-string error closes the machine with it", function()
        local env = start(m, function() error(setmetatable({}, {
          __tostring = function() return "an error object" end })) end)
        env.world:run_for(run_to)
        assert_fatal(env, m, "an error object")
      end)

      local function untextable()
        error(setmetatable({}, { __tostring = function() error("no text", 0) end }))
      end

      it("raising an error value that tostring cannot convert closes the machine", function()
        local env = start(m, untextable)
        env.world:run_for(run_to)
        assert_fatal(env, m, "a table error value (tostring failed: no text)")
      end)

      it("raising, after a yield, an error value that tostring cannot convert closes the machine",
        function()
          local env = start(m, function(_, ...)
            last(...):sleep(0.25)
            untextable()
          end)
          env.world:run_for(run_to)
          assert_fatal(env, m, "a table error value (tostring failed: no text)")
        end)

      if m.wrong then
        for _, wrong in ipairs(m.wrong) do
          it("returning the wrong type closes the machine: " .. wrong.message, function()
            local env = start(m, function() return unpack(wrong.results) end)
            env.world:run_for(run_to)
            assert_fatal(env, m, wrong.message)
          end)
        end
      else
        it("accepts a result of any type, as it only reports that the call went out", function()
          local env = start(m, function() return 42 end)
          env.world:run_for(run_to)
          assert.are.same({}, env.log.errors)
          assert.are.same(timeline(m, { line(m.at, m.ok) }), env.log.timeline)
          assert_open(env.sm)
        end)
      end

      it("never returning (an await that is never resolved) is cut off by the state's timeout",
        function()
          local seen = {}
          local env = start(m, function(env, ...)
            local ctx = last(...)
            seen.ctx = ctx
            seen.result = pack(ctx:await(function() end))
            seen.at = env.world:now()
            return unpack(seen.result, 1, seen.result.n)
          end)
          local timer
          env.world:after(0.5, function() timer = env.world:now() end)
          local bystander_rank = rank(env.other)
          env.world:run_for(m.timeout + 0.5)
          assert.are.equal(T0 + m.timeout + 0.5, env.world:now())
          assert.are.equal(T0 + 0.5, timer)
          assert.is_true(rank(env.other) > bystander_rank)
          assert.is_true(seen.ctx:cancelled())
          assert.are.same({ nil, "canceled", n = 2 }, seen.result)
          assert.are.equal(T0 + m.timeout, seen.at)
          assert_cut_off(env, m)
        end)

      it("never returning (sleeping until its ctx is cancelled) is cut off; its late result is dropped",
        function()
          local seen = { sleeps = 0 }
          local env = start(m, function(env, ...)
            local ctx = last(...)
            seen.ctx = ctx
            while ctx:sleep(0.25) do seen.sleeps = seen.sleeps + 1 end
            seen.at = env.world:now()
            return m.normal(...)
          end)
          env.world:run_for(m.timeout + 0.5)
          assert.is_true(seen.ctx:cancelled())
          assert.are.equal(T0 + m.timeout, seen.at)
          assert.is_true(seen.sleeps >= (m.timeout - m.at) / 0.25 - 1)
          assert_cut_off(env, m)
        end)

      it("yielding outside its ctx (a raw coroutine.yield) is a bug: the machine closes saying so", function()
        local seen = {}
        local env = start(m, function(_, ...)
          seen.ctx = last(...)
          coroutine.yield("stuck")
          seen.resumed = true
        end)
        env.world:run_for(m.timeout + 0.5)
        assert.is_nil(seen.resumed)
        assert_fatal(env, m, "a provider or behaviour yielded outside ctx (coroutine.yield): "
          .. "wait with ctx:sleep, ctx:wait or ctx:await")
      end)

      for _, receive in ipairs(RECEIVES) do
        it("may call sm:" .. receive.name .. " from inside", function()
          local seen = {}
          local env = start(m, function(env, ...)
            seen.result = pack(receive.call(env.sm))
            seen.held = env.sm:get(receive.kind, 1, "n2")
            return m.normal(...)
          end)
          env.world:run_for(run_to)
          assert.are.same({ true, n = 1 }, seen.result)
          assert.is_true(csm.is_value(seen.held))
          local path = { line(m.at, m.ok) }
          if m.state == "voting" and receive.kind == "proposals" then
            -- a proposal re-runs voting, as in the original
            table.insert(path, 1, line(m.at, "voting -proposal_received-> voting"))
          end
          assert.are.same(timeline(m, path), env.log.timeline)
          assert.are.same({}, env.log.errors)
          assert_open(env.sm)
        end)
      end

      it("may call sm:send_event from inside; the event is handled after the call", function()
        local seen = {}
        local env = start(m, function(env, ...)
          seen.result = pack(env.sm:send_event("induce_sync"))
          seen.state = env.sm:state()
          return m.normal(...)
        end)
        env.world:run_for(run_to)
        assert.are.same({ true, n = 1 }, seen.result)
        assert.are.equal(m.state, seen.state)
        assert.are.same(timeline(m, follow(m, m.at, m.state .. " -induce_sync-> loading")),
          env.log.timeline)
        assert.are.same({}, env.log.errors)
        assert_open(env.sm)
      end)

      it("may call sm:stop from inside; the machine then stops", function()
        local seen = {}
        local env = start(m, function(env, ...)
          seen.result = pack(env.sm:stop())
          return m.normal(...)
        end)
        env.world:run_for(run_to)
        assert.are.same({ true, n = 1 }, seen.result)
        assert.are.same(timeline(m, { line(m.at, m.state .. " -stop-> stopping"),
                                      line(m.at, "stopping -cleanup_complete-> stopped") }),
          env.log.timeline)
        assert.are.equal("stopped", env.sm:state())
        assert.are.same({}, env.log.errors)
        assert_open(env.sm)
        assert_nothing_called_after(env)
      end)

      it("may close its own machine from inside; nothing more is called", function()
        local seen = {}
        local env = start(m, function(env, ...)
          local ctx = last(...)
          seen.result = pack(env.sm:close())
          seen.cancelled = ctx:cancelled()
          return m.normal(...)
        end)
        env.world:run_for(run_to)
        assert.are.same({ n = 0 }, seen.result)
        assert.is_true(seen.cancelled)
        assert.is_true(env.sm:closed())
        assert.are.equal("stopped", env.sm:state())
        assert.is_nil(env.sm:error())
        assert.are.same({}, env.log.errors)
        assert.are.same(timeline(m), env.log.timeline)
        assert_nothing_called_after(env)
      end)

      it("may close another machine on the loop from inside; this one goes on", function()
        local env = start(m, function(env, ...)
          env.other:close()
          return m.normal(...)
        end)
        env.world:run_for(run_to)
        local other, other_calls = env.other, #env.other_log.providers.calls
        assert.is_true(other:closed())
        assert.are.equal("stopped", other:state())
        assert.is_nil(other:error())
        assert.are.same({}, env.other_log.errors)
        assert.are.same(timeline(m, { line(m.at, m.ok) }), env.log.timeline)
        assert.are.same({}, env.log.errors)
        assert_open(env.sm)
        env.world:run_for(3)
        assert.are.equal(other_calls, #env.other_log.providers.calls)
        assert.are.equal("stopped", other:state())
      end)
    end)
  end
end)
