-- The machine: construction, the original's API,
-- listeners, the queue, guards, timeouts, and the scripting accessors.
local csm = require "csm"
local support = require "support"

local error_of = support.error_of

local quiet_machine = support.quiet

-- Sends each event, then runs what is due now.
local function drive(sm, world, ...)
  for _, event in ipairs { ... } do sm:send_event(event) end
  world:run("nowait")
end

local TO_VOTING = { "start", "init_complete", "sync_complete", "collection_done",
                    "prover_signal", "publish_timeout" }

local function to_voting(sm, world)
  drive(sm, world, (table.unpack or unpack)(TO_VOTING))
  assert.are.equal("voting", sm:state())
end

local function minimal(opts)
  local o = { id = "n1", loop = csm.sim { seed = 1 } }
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end

describe("csm", function()
  describe("states", function()
    it("names the original's eleven states", function()
      local want = { "stopped", "starting", "loading", "collecting", "liveness_check", "proving",
                     "publishing", "voting", "finalizing", "verifying", "stopping" }
      local n = 0
      for k, v in pairs(csm.states) do
        n = n + 1
        assert.are.equal(k, v)
      end
      assert.are.equal(11, n)
      for _, name in ipairs(want) do assert.are.equal(name, csm.states[name]) end
    end)
  end)

  describe("events", function()
    it("names the original's twenty-three events", function()
      local want = { "start", "stop", "sync_timeout", "induce_sync", "sync_complete",
                     "init_complete", "collection_done", "liveness_check_received",
                     "liveness_timeout", "prover_signal", "proof_complete", "publish_complete",
                     "publish_timeout", "proposal_received", "vote_received", "quorum_reached",
                     "voting_timeout", "aggregation_done", "aggregation_timeout",
                     "confirmation_received", "verification_done", "verification_timeout",
                     "cleanup_complete" }
      local n = 0
      for k, v in pairs(csm.events) do
        n = n + 1
        assert.are.equal(k, v)
      end
      assert.are.equal(23, n)
      for _, name in ipairs(want) do assert.are.equal(name, csm.events[name]) end
    end)
  end)

  describe("new", function()
    it("builds a stopped machine with no transitions made", function()
      local sm = csm.new(minimal())
      assert.are.equal("stopped", sm:state())
      assert.are.equal(0, sm:transition_count())
      assert.is_false(sm:closed())
      assert.is_nil(sm:active_state())
      assert.are.equal(1, sm:minimum_provers())
      assert.is_false(sm:emit_on_send())
    end)

    it("refuses options that are not a table", function()
      assert.are.equal("csm.new: bad argument #1 'options' (table expected, got nil)",
        error_of(csm.new))
      assert.are.equal("csm.new: bad argument #1 'options' (table expected, got string)",
        error_of(csm.new, "n1"))
    end)

    it("names an unknown option", function()
      assert.are.equal("csm.new: unknown option 'bogus'",
        error_of(csm.new, minimal { bogus = 1 }))
      assert.are.equal("csm.new: unknown option 'timings'",
        error_of(csm.new, minimal { timings = {} }))
      assert.are.equal("csm.new: unknown option '1'", error_of(csm.new, minimal { "x" }))
    end)

    it("requires an id that is a value or a non-empty string", function()
      assert.are.equal("csm.new: option 'id' must be a csm value or a non-empty string (got nil)",
        error_of(csm.new, { loop = csm.sim {} }))
      assert.are.equal(
        "csm.new: option 'id' must be a csm value or a non-empty string (got string)",
        error_of(csm.new, minimal { id = "" }))
      assert.are.equal(
        "csm.new: option 'id' must be a csm value or a non-empty string (got number)",
        error_of(csm.new, minimal { id = 7 }))
    end)

    it("wraps a string id in a peer and keeps a value id", function()
      local sm = csm.new(minimal { id = "node-1" })
      assert.is_true(csm.is_value(sm:id()))
      assert.are.equal("node-1", sm:id():identity())
      assert.are.equal(0, sm:id():rank())
      local id = csm.value("node-2", 5)
      assert.are.equal(id, csm.new(minimal { id = id }):id())
    end)

    it("refuses an initial state that is not a value", function()
      assert.are.equal("csm.new: option 'initial' must be a csm value or nil (got number)",
        error_of(csm.new, minimal { initial = 5 }))
      assert.are.equal("csm.new: option 'initial' must be a csm value or nil (got string)",
        error_of(csm.new, minimal { initial = "genesis" }))
    end)

    it("adopts the initial state", function()
      local initial = csm.value("genesis", 3)
      assert.are.equal(initial, csm.new(minimal { initial = initial }):active_state())
    end)

    it("refuses a bad minimum_provers", function()
      local text = "csm.new: option 'minimum_provers' must be an integer >= 0 or a function (got %s)"
      assert.are.equal(text:format("-1"), error_of(csm.new, minimal { minimum_provers = -1 }))
      assert.are.equal(text:format("1.5"), error_of(csm.new, minimal { minimum_provers = 1.5 }))
      assert.are.equal(text:format("3"), error_of(csm.new, minimal { minimum_provers = "3" }))
    end)

    it("refuses an emit_on_send that is not a boolean", function()
      assert.are.equal("csm.new: option 'emit_on_send' must be a boolean (got number)",
        error_of(csm.new, minimal { emit_on_send = 1 }))
    end)

    it("refuses providers that are not tables", function()
      for _, name in ipairs { "sync", "voting", "leader", "liveness" } do
        assert.are.equal(
          string.format("csm.new: option '%s' must be a provider table (got function)", name),
          error_of(csm.new, minimal { [name] = print }))
      end
    end)

    it("refuses a provider method that is not a function, and keeps a provider's own fields", function()
      assert.are.equal("csm.new: sync.synchronize must be a function (got number)",
        error_of(csm.new, minimal { sync = { synchronize = 5 } }))
      assert.are.equal("csm.new: voting.is_quorum must be a function (got string)",
        error_of(csm.new, minimal { voting = { is_quorum = "yes" } }))
      local callable = setmetatable({}, { __call = function() end })
      assert.are.equal("csm.new: sync.synchronize must be a function (got table)",
        error_of(csm.new, minimal { sync = { synchronize = callable } }))
      assert.is_nil(error_of(csm.new, minimal { sync = { synchronize = function() end, state = 3 } }))
      local class = { synchronize = function(_, existing) return existing end }
      assert.is_nil(error_of(csm.new, minimal { sync = setmetatable({}, { __index = class }) }))
    end)

    it("refuses a bad trace", function()
      assert.are.equal("csm.new: option 'trace' must be a table (got function)",
        error_of(csm.new, minimal { trace = print }))
      assert.are.equal("csm.new: trace.trace must be a function (got string)",
        error_of(csm.new, minimal { trace = { trace = "x" } }))
      assert.are.equal("csm.new: trace.error must be a function (got number)",
        error_of(csm.new, minimal { trace = { error = 1 } }))
    end)

    it("names an unknown timing and refuses a bad one", function()
      assert.are.equal("csm.new: unknown timing 'votng'",
        error_of(csm.new, minimal { timing = { votng = 1 } }))
      assert.are.equal("csm.new: timing.voting must be a finite number >= 0 (got -1)",
        error_of(csm.new, minimal { timing = { voting = -1 } }))
      assert.are.equal("csm.new: timing.scale must be a finite number >= 0 (got fast)",
        error_of(csm.new, minimal { timing = { scale = "fast" } }))
      -- an interval or scale of 0 would repeat a behaviour at one instant for ever
      for _, k in ipairs { "sync_retry", "liveness_resend", "proving_poll", "vote_resend", "scale" } do
        assert.are.equal("csm.new: timing." .. k .. " must be > 0 (got 0)",
          error_of(csm.new, minimal { timing = { [k] = 0 } }))
      end
      -- a timeout of 0 is none
      assert.is_nil(error_of(csm.new, minimal { timing = { voting = 0 } }))
      assert.are.equal("csm.new: option 'timing' must be a table (got number)",
        error_of(csm.new, minimal { timing = 1 }))
    end)

    it("names an unknown limit and refuses a bad one", function()
      assert.are.equal("csm.new: unknown limit 'window'",
        error_of(csm.new, minimal { limits = { window = 1 } }))
      local text = "csm.new: limits.%s must be an integer >= %d and <= 2^53"
      assert.are.equal(text:format("rank_window", 1),
        error_of(csm.new, minimal { limits = { rank_window = 0 } }))
      assert.are.equal(text:format("peers_per_rank", 1),
        error_of(csm.new, minimal { limits = { peers_per_rank = 1.5 } }))
      assert.are.equal(text:format("identity_bytes", 1),
        error_of(csm.new, minimal { limits = { identity_bytes = "8" } }))
      assert.are.equal(text:format("queue", 2),
        error_of(csm.new, minimal { limits = { queue = 1 } }))
      for _, huge in ipairs { math.huge, -math.huge, 0 / 0, 2 ^ 64, 2 ^ 53 + 2 } do
        assert.are.equal(text:format("rank_window", 1),
          error_of(csm.new, minimal { limits = { rank_window = huge } }), tostring(huge))
      end
      assert.are.equal("csm.new: option 'limits' must be a table (got boolean)",
        error_of(csm.new, minimal { limits = true }))
    end)

    it("names an unknown state in transitions", function()
      assert.are.equal("csm.new: transitions[1]: unknown state 'votng'",
        error_of(csm.new, minimal { transitions = { { from = "votng", event = "x", to = "voting" } } }))
      assert.are.equal("csm.new: transitions[2]: unknown state 'nowhere'",
        error_of(csm.new, minimal { transitions = {
          { from = "voting", event = "x", to = "voting" },
          { from = "voting", event = "y", to = "nowhere" } } }))
      assert.are.equal("csm.new: transitions[1]: unknown state 'nil'",
        error_of(csm.new, minimal { transitions = { { event = "x", to = "voting" } } }))
    end)

    it("refuses a malformed transition", function()
      assert.are.equal("csm.new: transitions[1] must be a table",
        error_of(csm.new, minimal { transitions = { "voting" } }))
      assert.are.equal("csm.new: transitions[1]: unknown field 'guards'",
        error_of(csm.new, minimal { transitions = {
          { from = "voting", event = "x", to = "voting", guards = 1 } } }))
      assert.are.equal("csm.new: transitions[1]: event must be a non-empty string",
        error_of(csm.new, minimal { transitions = { { from = "voting", event = "", to = "voting" } } }))
      assert.are.equal("csm.new: transitions[1].guard must be a function (got boolean)",
        error_of(csm.new, minimal { transitions = {
          { from = "voting", event = "x", to = "voting", guard = true } } }))
      assert.are.equal("csm.new: option 'transitions' must be a table (got string)",
        error_of(csm.new, minimal { transitions = "none" }))
    end)

    it("refuses a malformed state", function()
      assert.are.equal("csm.new: states.voting must be a table (got boolean)",
        error_of(csm.new, minimal { states = { voting = false } }))
      assert.are.equal("csm.new: states.voting: unknown field 'on_entry'",
        error_of(csm.new, minimal { states = { voting = { on_entry = print } } }))
      assert.are.equal("csm.new: states.voting.behavior must be a function (got string)",
        error_of(csm.new, minimal { states = { voting = { behavior = "vote" } } }))
      assert.are.equal("csm.new: states.voting.on_enter must be a function (got number)",
        error_of(csm.new, minimal { states = { voting = { on_enter = 1 } } }))
      assert.are.equal("csm.new: states.voting.on_exit must be a function (got number)",
        error_of(csm.new, minimal { states = { voting = { on_exit = 1 } } }))
      assert.are.equal("csm.new: states.voting.timeout must be a number >= 0",
        error_of(csm.new, minimal { states = { voting = { timeout = -2 } } }))
      assert.are.equal("csm.new: states.voting.on_timeout must be an event name",
        error_of(csm.new, minimal { states = { voting = { on_timeout = "" } } }))
      assert.are.equal("csm.new: state names must be non-empty strings (got number)",
        error_of(csm.new, minimal { states = { { behavior = false } } }))
    end)

    it("takes limits up to 2^53", function()
      local sm = csm.new(minimal { id = "n", limits = { rank_window = 2 ^ 53, peers_per_rank = 1,
                                                        identity_bytes = 1, queue = 2 } })
      assert.is_true(sm:receive_proposal("p", csm.value("x", 2 ^ 52)))
      assert.are.same({ nil, "identity too long (2 bytes, identity_bytes 1)", "identity" },
        { sm:receive_proposal("pp", csm.value("x", 1)) })
    end)

    it("refuses a loop that is not a csm loop", function()
      assert.are.equal("csm.new: option 'loop' must be a csm loop (got table)",
        error_of(csm.new, { id = "n1", loop = {} }))
      assert.are.equal("csm.new: option 'loop' must be a csm loop (got userdata)",
        error_of(csm.new, { id = "n1", loop = csm.value("x", 1) }))
    end)
  end)

  describe("machine", function()
    describe("start", function()
      it("queues start; the loop moves stopped to starting", function()
        local sm, world, log = quiet_machine()
        assert.is_true(sm:start())
        assert.are.equal("stopped", sm:state())
        world:run("nowait")
        assert.are.equal("starting", sm:state())
        assert.are.same({ "stopped -start-> starting" }, log.transitions)
      end)

      it("is dropped when the machine already runs", function()
        local sm, world = quiet_machine()
        drive(sm, world, "start")
        assert.is_true(sm:start())
        world:run("nowait")
        assert.are.equal("starting", sm:state())
        assert.are.equal(1, sm:inspect().events_dropped)
      end)

      it("refuses a closed machine with nil, err", function()
        local sm = quiet_machine()
        sm:close()
        local ok, err = sm:start()
        assert.is_nil(ok)
        assert.are.equal("machine is closed", err)
      end)
    end)

    describe("send_event", function()
      it("handles queued events in order", function()
        local sm, world, log = quiet_machine()
        drive(sm, world, "start", "init_complete", "sync_complete")
        assert.are.same({ "stopped -start-> starting", "starting -init_complete-> loading",
                          "loading -sync_complete-> collecting" }, log.transitions)
        assert.are.equal("collecting", sm:state())
      end)

      it("never handles an event re-entrantly from a listener or on_enter", function()
        local trail = {}
        local sm, world = quiet_machine { states = { loading = {
          behavior = false,
          on_enter = function(sm)
            trail[#trail + 1] = "on_enter loading: send"
            sm:send_event("sync_complete")
            trail[#trail + 1] = "on_enter loading: sent, still " .. sm:state()
          end } } }
        sm:add_listener(function(from, to, event)
          trail[#trail + 1] = "listener " .. from .. " -" .. event .. "-> " .. to
          if to == "starting" then
            sm:send_event("init_complete")
            trail[#trail + 1] = "listener sent, still " .. sm:state()
          end
        end)
        drive(sm, world, "start")
        assert.are.same({
          "listener stopped -start-> starting",
          "listener sent, still starting",
          "listener starting -init_complete-> loading",
          "on_enter loading: send",
          "on_enter loading: sent, still loading",
          "listener loading -sync_complete-> collecting",
        }, trail)
        assert.are.equal("collecting", sm:state())
      end)

      it("drops and counts an event with no transition from the current state", function()
        local sm, world, log = quiet_machine()
        drive(sm, world, "quorum_reached", "start", "quorum_reached", "vote_received")
        assert.are.same({ "stopped -start-> starting" }, log.transitions)
        assert.are.equal(3, sm:inspect().events_dropped)
        assert.are.equal(1, sm:transition_count())
      end)

      it("returns true when queued", function()
        local sm = quiet_machine()
        assert.is_true(sm:send_event("start"))
        assert.are.equal(1, sm:inspect().events_queued)
      end)
    end)

    describe("state_time", function()
      it("measures virtual time since the last transition", function()
        local sm, world = quiet_machine()
        drive(sm, world, "start")
        assert.are.equal(0, sm:state_time())
        world:run_for(0.25)
        assert.are.equal(0.25, sm:state_time())
        world:run_for(1)
        assert.are.equal("loading", sm:state())
        assert.are.equal(0.25, sm:state_time())
      end)
    end)

    describe("transition_count", function()
      it("counts every transition, self-transitions included", function()
        local sm, world = quiet_machine()
        assert.are.equal(0, sm:transition_count())
        drive(sm, world, "start", "init_complete", "sync_timeout", "sync_timeout")
        assert.are.equal(4, sm:transition_count())
        assert.are.equal(4, sm:inspect().transitions_made)
      end)
    end)

    describe("add_listener", function()
      it("calls a function with from, to and event", function()
        local sm, world = quiet_machine()
        local calls = {}
        sm:add_listener(function(...) calls[#calls + 1] = { ... } end)
        drive(sm, world, "start")
        assert.are.same({ { "stopped", "starting", "start" } }, calls)
      end)

      it("calls an object's on_transition as a method", function()
        local sm, world = quiet_machine()
        local obj = { seen = {} }
        function obj:on_transition(from, to, event)
          self.seen[#self.seen + 1] = from .. ">" .. to .. ":" .. event
        end
        sm:add_listener(obj)
        drive(sm, world, "start", "init_complete")
        assert.are.same({ "stopped>starting:start", "starting>loading:init_complete" }, obj.seen)
      end)

      it("calls listeners after the state changes, after on_exit, before on_enter", function()
        local trail = {}
        local sm, world = quiet_machine { states = {
          starting = { behavior = false,
            on_exit = function(sm, event) trail[#trail + 1] = "on_exit " .. sm:state() .. " " .. event end },
          loading = { behavior = false,
            on_enter = function(sm, event) trail[#trail + 1] = "on_enter " .. sm:state() .. " " .. event end,
          } } }
        sm:add_listener(function(from)
          if from == "starting" then trail[#trail + 1] = "listener " .. sm:state() end
        end)
        drive(sm, world, "start", "init_complete")
        assert.are.same({ "on_exit starting init_complete", "listener loading",
                          "on_enter loading init_complete" }, trail)
      end)

      it("calls listeners in the order they were added", function()
        local sm, world = quiet_machine()
        local order = {}
        for i = 1, 3 do sm:add_listener(function() order[#order + 1] = i end) end
        drive(sm, world, "start")
        assert.are.same({ 1, 2, 3 }, order)
      end)

      it("returns a handle", function()
        local sm = quiet_machine()
        assert.is_not_nil(sm:add_listener(function() end))
      end)
    end)

    describe("remove_listener", function()
      it("removes a listener by its handle", function()
        local sm, world = quiet_machine()
        local n = 0
        local handle = sm:add_listener(function() n = n + 1 end)
        drive(sm, world, "start")
        assert.is_true(sm:remove_listener(handle))
        drive(sm, world, "init_complete")
        assert.are.equal(1, n)
        assert.is_false(sm:remove_listener(handle))
      end)

      it("removes an object listener by the object", function()
        local sm, world = quiet_machine()
        local obj = { n = 0 }
        function obj:on_transition() self.n = self.n + 1 end
        sm:add_listener(obj)
        assert.is_true(sm:remove_listener(obj))
        drive(sm, world, "start")
        assert.are.equal(0, obj.n)
      end)

      it("may be called from inside a listener", function()
        local sm, world = quiet_machine()
        local n, handle = 0, nil
        handle = sm:add_listener(function()
          n = n + 1
          sm:remove_listener(handle)
        end)
        drive(sm, world, "start", "init_complete")
        assert.are.equal(1, n)
      end)
    end)

    describe("stop", function()
      it("empties the queue, then queues stop", function()
        local sm, world, log = quiet_machine()
        to_voting(sm, world)
        sm:send_event("quorum_reached")
        sm:send_event("aggregation_done")
        assert.is_true(sm:stop())
        assert.are.equal(1, sm:inspect().events_queued)
        world:run("nowait")
        assert.are.equal("voting -stop-> stopping", log.transitions[#log.transitions])
        assert.are.equal("stopping", sm:state())
        assert.are.equal(0, sm:inspect().events_dropped)
      end)

      it("reaches stopped through the stopping behaviour", function()
        local sm, world, log = quiet_machine { states = { stopping = {} } }
        to_voting(sm, world)
        sm:stop()
        world:run("nowait")
        assert.are.equal("stopped", sm:state())
        assert.are.same({ "voting -stop-> stopping", "stopping -cleanup_complete-> stopped" },
          { log.transitions[#log.transitions - 1], log.transitions[#log.transitions] })
      end)

      it("reaches stopped by the stopping timeout when the behaviour does nothing", function()
        local sm, world = quiet_machine()
        to_voting(sm, world)
        sm:stop()
        world:run_for(29)
        assert.are.equal("stopping", sm:state())
        world:run_for(1)
        assert.are.equal("stopped", sm:state())
      end)

      it("refuses a closed machine", function()
        local sm = quiet_machine()
        sm:close()
        local ok, err = sm:stop()
        assert.is_nil(ok)
        assert.are.equal("machine is closed", err)
      end)
    end)

    describe("close", function()
      it("leaves the machine stopped without telling listeners", function()
        local exits = 0
        local sm, world, log = quiet_machine { states = { voting = { behavior = false,
          on_exit = function() exits = exits + 1 end } } }
        to_voting(sm, world)
        local before = #log.transitions
        sm:send_event("quorum_reached")
        sm:close()
        assert.are.equal("stopped", sm:state())
        assert.is_true(sm:closed())
        world:run_for(100)
        assert.are.equal(before, #log.transitions)
        assert.are.equal(0, exits)
        assert.are.equal("stopped", sm:state())
      end)

      it("cancels the state's timeout and the running behaviour", function()
        local woke = false
        local sm, world = quiet_machine { states = { starting = { behavior = function(_, ctx)
          local ok = ctx:sleep(0.5)
          woke = ok ~= nil
        end } } }
        drive(sm, world, "start")
        sm:close()
        world:run_for(5)
        assert.is_false(woke)
        assert.are.equal(0, sm:inspect().events_queued)
        assert.are.equal(1, sm:transition_count())
      end)

      it("makes start, send_event and receives refuse", function()
        local sm = quiet_machine()
        sm:close()
        assert.are.same({ nil, "machine is closed", "closed" }, { sm:start() })
        assert.are.same({ nil, "machine is closed", "closed" }, { sm:send_event("start") })
        assert.are.same({ nil, "machine is closed", "closed" },
          { sm:receive_proposal("p", csm.value("x", 1)) })
      end)

      it("can be called twice", function()
        local sm = quiet_machine()
        sm:close()
        sm:close()
        assert.is_true(sm:closed())
      end)

      it("may be called from a listener: on_enter and the behaviour are skipped", function()
        local entered, ran = false, false
        local sm, world = quiet_machine { states = { starting = {
          behavior = function() ran = true end,
          on_enter = function() entered = true end } } }
        sm:add_listener(function() sm:close() end)
        drive(sm, world, "start", "init_complete")
        assert.is_true(sm:closed())
        assert.is_false(entered)
        assert.is_false(ran)
        assert.are.equal("stopped", sm:state())
        assert.are.equal(1, sm:transition_count())
      end)
    end)

    describe("guards", function()
      it("take the transition when the guard returns true, passing the machine", function()
        local seen
        local sm, world, log = quiet_machine { transitions = {
          { from = "stopped", event = "start", to = "starting",
            guard = function(m) seen = m; return true end } } }
        drive(sm, world, "start")
        assert.are.equal(sm, seen)
        assert.are.same({ "stopped -start-> starting" }, log.transitions)
      end)

      it("drop and count the event when the guard returns false", function()
        local allow = false
        local sm, world, log = quiet_machine { transitions = {
          { from = "stopped", event = "start", to = "starting", guard = function() return allow end } } }
        drive(sm, world, "start", "start")
        assert.are.equal("stopped", sm:state())
        assert.are.same({}, log.transitions)
        assert.are.equal(2, sm:inspect().events_dropped)
        allow = true
        drive(sm, world, "start")
        assert.are.equal("starting", sm:state())
      end)

      it("are listed as guarded in transitions()", function()
        local sm = quiet_machine { transitions = {
          { from = "voting", event = "vote_received", to = "voting", guard = function() return true end } } }
        local found
        for _, t in ipairs(sm:transitions()) do
          if t.from == "voting" and t.event == "vote_received" then found = t end
        end
        assert.are.same({ from = "voting", event = "vote_received", to = "voting", guarded = true,
                          taken = 0 }, found)
      end)
    end)

    describe("timeouts", function()
      local function timed_machine(opts)
        local sm, world, log = quiet_machine(opts)
        local at = {}
        sm:add_listener(function(from, to, event)
          at[#at + 1] = from .. " -" .. event .. "-> " .. to .. string.format(" @%g", world:now())
        end)
        return sm, world, log, at
      end

      it("fire the original's timeout events at the original's times", function()
        local sm, world, _, at = timed_machine()
        drive(sm, world, "start")
        world:run_for(36001.5)
        assert.are.same({ "stopped -start-> starting @0", "starting -init_complete-> loading @1",
                          "loading -sync_timeout-> loading @36001" }, at)
      end)

      it("take their length from timing", function()
        local sm, world, _, at = timed_machine { timing = { starting = 3, loading = 2 } }
        drive(sm, world, "start")
        world:run_for(7.5)
        assert.are.same({ "stopped -start-> starting @0", "starting -init_complete-> loading @3",
                          "loading -sync_timeout-> loading @5", "loading -sync_timeout-> loading @7" }, at)
      end)

      it("are multiplied by timing.scale, as are intervals", function()
        local sm, world, _, at = timed_machine { timing = { starting = 4, vote_resend = 2, scale = 0.25 } }
        assert.are.equal(1, sm:timing("starting"))
        assert.are.equal(0.5, sm:timing("vote_resend"))
        assert.are.equal(0.25, sm:timing("liveness_resend"))
        assert.are.equal(4, sm:timing("voting"))
        assert.are.equal(10, sm:timing("proving_grace")) -- a count, not scaled
        assert.are.equal(0.25, sm:timing("scale"))
        drive(sm, world, "start")
        world:run_for(1.5)
        assert.are.same({ "stopped -start-> starting @0", "starting -init_complete-> loading @1" }, at)
      end)

      it("can be set per state with states[x].timeout and on_timeout", function()
        local sm, world, _, at = timed_machine {
          timing = { scale = 0.5 },
          states = { starting = { behavior = false, timeout = 4, on_timeout = "stop" } } }
        drive(sm, world, "start")
        world:run_for(2.5)
        assert.are.same({ "stopped -start-> starting @0", "starting -stop-> stopping @2" }, at)
      end)

      it("are disabled by a timeout of 0", function()
        local sm, world, _, at = timed_machine { states = { starting = { behavior = false, timeout = 0 } } }
        drive(sm, world, "start")
        world:run_for(100)
        assert.are.same({ "stopped -start-> starting @0" }, at)
        assert.are.equal(100, sm:state_time())
      end)

      it("are disarmed when the state is left", function()
        local sm, world, _, at = timed_machine()
        drive(sm, world, "start", "stop")
        world:run_for(29.5)
        assert.are.same({ "stopped -start-> starting @0", "starting -stop-> stopping @0" }, at)
        world:run_for(1)
        assert.are.equal("stopping -cleanup_complete-> stopped @30", at[3])
      end)
    end)

    describe("custom states and events", function()
      it("runs a state and events not in the original", function()
        local entered = {}
        local sm, world, log = quiet_machine {
          states = { resting = { behavior = function(m) entered[#entered + 1] = m:state() end,
                                 timeout = 2, on_timeout = "wake" } },
          transitions = { { from = "voting", event = "rest", to = "resting" },
                          { from = "resting", event = "wake", to = "voting" } },
        }
        to_voting(sm, world)
        drive(sm, world, "rest")
        assert.are.equal("resting", sm:state())
        assert.are.same({ "resting" }, entered)
        world:run_for(2)
        assert.are.equal("resting -wake-> voting", log.transitions[#log.transitions])
        assert.is_nil(csm.events.rest)
        assert.is_nil(csm.states.resting)
        local listed = {}
        for _, name in ipairs(sm:states()) do listed[name] = true end
        assert.is_true(listed.resting)
      end)

      it("replaces a seed row and removes one with to = false", function()
        local sm, world, log = quiet_machine { transitions = {
          { from = "starting", event = "init_complete", to = "collecting" },
          { from = "starting", event = "stop", to = false } } }
        drive(sm, world, "start", "stop", "init_complete")
        assert.are.same({ "stopped -start-> starting", "starting -init_complete-> collecting" },
          log.transitions)
        assert.are.equal(1, sm:inspect().events_dropped)
        assert.are.equal(36, #sm:transitions())
      end)
    end)
  end)

  describe("machine accessors", function()
    describe("id", function()
      it("returns the machine's peer value", function()
        local sm = quiet_machine { id = "me" }
        assert.are.equal(csm.peer("me"), sm:id())
      end)
    end)

    describe("active_state", function()
      it("returns what set_active_state adopted, or nil", function()
        local sm = quiet_machine { initial = false }
        assert.is_nil(sm:active_state())
        local v = csm.value("s", 4)
        sm:set_active_state(v)
        assert.are.equal(v, sm:active_state())
        sm:set_active_state(nil)
        assert.is_nil(sm:active_state())
      end)

      it("forgets every rank up to the adopted one", function()
        local sm = quiet_machine { initial = false }
        for rank = 1, 5 do assert.is_true(sm:receive_proposal("p", csm.value("x", rank))) end
        sm:set_active_state(csm.value("s", 3))
        for rank = 1, 3 do assert.are.equal(0, sm:count("proposals", rank)) end
        assert.are.equal(1, sm:count("proposals", 4))
        assert.are.equal(1, sm:count("proposals", 5))
      end)
    end)

    describe("next_state", function()
      it("round-trips through set_next_state", function()
        local sm = quiet_machine()
        assert.is_nil(sm:next_state())
        local v = csm.value("n", 1)
        sm:set_next_state(v)
        assert.are.equal(v, sm:next_state())
        sm:set_next_state(nil)
        assert.is_nil(sm:next_state())
      end)
    end)

    describe("collected", function()
      it("round-trips through set_collected", function()
        local sm = quiet_machine()
        assert.is_nil(sm:collected())
        local v = csm.value("c", 1)
        sm:set_collected(v)
        assert.are.equal(v, sm:collected())
      end)
    end)

    describe("next_provers", function()
      it("starts empty and round-trips through set_next_provers", function()
        local sm = quiet_machine()
        assert.are.same({}, sm:next_provers())
        local list = { "a", csm.peer("b") }
        assert.is_true(sm:set_next_provers(list))
        -- strings are wrapped as peers; the list is copied both ways
        assert.are.same({ csm.peer("a"), csm.peer("b") }, sm:next_provers())
        list[3] = "c"
        sm:next_provers()[1] = "changed"
        assert.are.same({ csm.peer("a"), csm.peer("b") }, sm:next_provers())
        sm:set_next_provers(nil)
        assert.are.same({}, sm:next_provers())
      end)

      it("refuses an item that is not a peer, naming it", function()
        local sm = quiet_machine()
        assert.are.equal("sm:set_next_provers: bad argument #1 'list' (item 2 is 42, a peer expected)",
          support.error_of(sm.set_next_provers, sm, { "a", 42 }))
        assert.are.equal("sm:set_next_provers: bad argument #1 'list' (item 1 is string \"\", "
          .. "a peer expected)", support.error_of(sm.set_next_provers, sm, { "" }))
      end)
    end)

    describe("chosen_proposer", function()
      it("round-trips through set_chosen_proposer", function()
        local sm = quiet_machine()
        assert.is_nil(sm:chosen_proposer())
        assert.is_true(sm:set_chosen_proposer("p1"))
        assert.are.equal(csm.peer("p1"), sm:chosen_proposer())
        sm:set_chosen_proposer(nil)
        assert.is_nil(sm:chosen_proposer())
      end)
    end)

    describe("minimum_provers", function()
      it("returns the number given", function()
        assert.are.equal(3, quiet_machine { minimum_provers = 3 }:minimum_provers())
        assert.are.equal(0, quiet_machine { minimum_provers = 0 }:minimum_provers())
      end)

      it("calls the function form each time", function()
        local n = 2
        local sm = quiet_machine { minimum_provers = function() return n end }
        assert.are.equal(2, sm:minimum_provers())
        n = 5
        assert.are.equal(5, sm:minimum_provers())
        assert.are.equal(5, sm:inspect().minimum_provers)
      end)

      it("raises when the function returns something else than an integer >= 0", function()
        local sm = quiet_machine { minimum_provers = function() return -1 end }
        assert.are.equal("minimum_provers: function returned -1, expected an integer >= 0",
          error_of(sm.minimum_provers, sm))
      end)
    end)

    describe("emit_on_send", function()
      it("reports the option", function()
        assert.is_true(quiet_machine { emit_on_send = true }:emit_on_send())
        assert.is_false(quiet_machine { emit_on_send = false }:emit_on_send())
      end)
    end)

    describe("timing", function()
      it("returns the original's defaults", function()
        local sm = csm.new(minimal())
        local want = { starting = 1, loading = 36000, collecting = 10, liveness_check = 2,
                       proving = 120, publishing = 1, voting = 16, finalizing = 1, verifying = 1,
                       stopping = 30, sync_retry = 10, liveness_resend = 1, proving_poll = 1,
                       proving_grace = 10, vote_resend = 1, scale = 1 }
        for name, seconds in pairs(want) do assert.are.equal(seconds, sm:timing(name)) end
      end)
    end)

    describe("liveness, proposals, votes, confirmations", function()
      local receives = {
        liveness = function(sm, peer, v) return sm:receive_liveness_check(peer, v) end,
        proposals = function(sm, peer, v) return sm:receive_proposal(peer, v) end,
        votes = function(sm, peer, v) return sm:receive_vote("proposer", peer, v) end,
        confirmations = function(sm, peer, v) return sm:receive_confirmation(peer, v) end,
      }
      for kind, receive in pairs(receives) do
        it(kind .. " returns a fresh table of clones keyed by identity", function()
          local sm = quiet_machine()
          local a = csm.value("x", 2, { n = 1 })
          assert.is_true(receive(sm, "a", a))
          assert.is_true(receive(sm, csm.peer("b"), csm.value("y", 2)))
          local got = sm[kind](sm, 2)
          assert.are.same({ "a", "b" }, (function()
            local keys = {}
            for k in pairs(got) do keys[#keys + 1] = k end
            table.sort(keys)
            return keys
          end)())
          assert.are.equal(a, got.a)
          assert.is_false(rawequal(a, got.a))
          assert.are.equal(1, got.a.n)
          assert.is_false(rawequal(a.payload, got.a.payload))
          got.a = nil
          got.c = csm.value("z", 2)
          local again = sm[kind](sm, 2)
          assert.is_not_nil(again.a)
          assert.is_nil(again.c)
          assert.are_not.equal(got, again)
          assert.are.same({}, sm[kind](sm, 3))
        end)
      end
    end)

    describe("proposals", function()
      it("keeps binary identities with NUL bytes apart", function()
        local sm = quiet_machine()
        assert.is_true(sm:receive_proposal("a\0b", csm.value("x\0y", 1)))
        assert.is_true(sm:receive_proposal("a", csm.value("x", 1)))
        assert.is_true(sm:receive_proposal("a\0c", csm.value("x\0z", 1)))
        assert.are.equal(3, sm:count("proposals", 1))
        local got = sm:proposals(1)
        assert.are.equal("x\0y", got["a\0b"]:identity())
        assert.are.equal("x", got.a:identity())
        assert.are.equal("x\0z", got["a\0c"]:identity())
      end)
    end)

    describe("count", function()
      it("counts the entries of a kind at a rank", function()
        local sm = quiet_machine()
        assert.are.equal(0, sm:count("votes", 1))
        sm:receive_vote("p", "a", csm.value("v", 1))
        sm:receive_vote("p", "b", csm.value("v", 1))
        sm:receive_vote("p", "b", csm.value("v", 1))
        assert.are.equal(2, sm:count("votes", 1))
        assert.are.equal(0, sm:count("proposals", 1))
      end)
    end)

    describe("store", function()
      it("files a value under a peer at a rank, replacing what was there", function()
        local sm = quiet_machine()
        assert.is_true(sm:store("proposals", 1, "me", csm.value("first", 1)))
        assert.is_true(sm:store("proposals", 1, csm.peer("me"), csm.value("second", 1)))
        assert.are.equal(1, sm:count("proposals", 1))
        assert.are.equal("second", sm:proposals(1).me:identity())
        assert.are.equal("second", sm:get("proposals", 1, "me"):identity())
      end)

      it("queues no event", function()
        local sm = quiet_machine()
        sm:store("votes", 1, "me", csm.value("v", 1))
        assert.are.equal(0, sm:inspect().events_queued)
      end)
    end)

    describe("prune", function()
      it("forgets every rank up to the one given", function()
        local sm = quiet_machine()
        for rank = 1, 4 do sm:store("votes", rank, "a", csm.value("v", rank)) end
        sm:prune(2)
        assert.are.equal(0, sm:count("votes", 1))
        assert.are.equal(0, sm:count("votes", 2))
        assert.are.equal(1, sm:count("votes", 3))
        assert.are.equal(2, sm:inspect().ranks_held)
      end)
    end)

    describe("trace", function()
      it("passes the message to trace.trace", function()
        local sm, _, log = quiet_machine()
        sm:trace("hello")
        assert.are.equal("hello", log.traces[#log.traces])
      end)

      it("does nothing without a tracer", function()
        local sm = csm.new(minimal())
        assert.is_nil(error_of(sm.trace, sm, "hello"))
      end)
    end)

    describe("trace_error", function()
      it("passes the message and the error to trace.error", function()
        local sm, _, log = quiet_machine()
        sm:trace_error("bad thing", "why")
        sm:trace_error("no reason")
        assert.are.same({ "bad thing: why", "no reason: error" }, log.errors)
      end)
    end)

    describe("error", function()
      it("is nil until a bug closes the machine, then holds it with a traceback", function()
        local sm, world, log = quiet_machine()
        assert.is_nil(sm:error())
        sm:add_listener(function() error("listener bug") end)
        drive(sm, world, "start")
        assert.is_true(sm:closed())
        assert.are.equal("stopped", sm:state())
        assert.truthy(sm:error():find("listener bug", 1, true))
        assert.truthy(sm:error():find("stack traceback", 1, true))
        assert.truthy(log.errors[1]:find("^fatal error encountered: .*listener bug"))
      end)

      it("leaves other machines on the loop running", function()
        local world = csm.sim { seed = 1 }
        local bad = quiet_machine { loop = world }
        local good = quiet_machine { loop = world, id = "n2" }
        bad:add_listener(function() error("bug") end)
        bad:start()
        good:start()
        world:run_for(1.5)
        assert.is_true(bad:closed())
        assert.are.equal("loading", good:state())
      end)
    end)

    describe("transitions", function()
      it("returns a fresh copy of the table", function()
        local sm = quiet_machine()
        local t = sm:transitions()
        t[1].to = "nowhere"
        t[2] = nil
        assert.are.same({ from = "stopped", event = "start", to = "starting", guarded = false,
                          taken = 0 }, sm:transitions()[1])
        assert.are.equal(37, #sm:transitions())
      end)
    end)

    describe("inspect", function()
      it("snapshots state, data, counters and map sizes", function()
        local sm, world = quiet_machine { id = "me", minimum_provers = 2 }
        drive(sm, world, "start", "quorum_reached")
        sm:receive_vote("p", "a", csm.value("v", 1))
        sm:receive_vote("p", "a", csm.value("w", 1))
        sm:receive_proposal("a", csm.value("x", 2))
        sm:set_next_state(csm.value("n", 1))
        local s = sm:inspect()
        assert.are.equal(csm.peer("me"), s.id)
        assert.are.equal("starting", s.state)
        assert.are.equal(0, s.state_time)
        assert.are.equal(1, s.transition_count)
        assert.are.equal(1, s.transitions_made)
        assert.are.equal(1, s.events_dropped)
        assert.are.equal(1, s.receives_refused)
        assert.are.equal(2, s.messages_received)
        assert.are.equal(2, s.events_queued)
        assert.are.equal(2, s.ranks_held)
        assert.are.equal(2, s.entries_held)
        assert.are.same({ liveness = 0, proposals = 1, votes = 1, confirmations = 0 }, s.sizes)
        assert.are.same({ liveness = {}, proposals = { [2] = 1 }, votes = { [1] = 1 },
                          confirmations = {} }, s.maps)
        assert.are.equal(csm.value("genesis", 0), s.active_state)
        assert.are.equal(csm.value("n", 1), s.next_state)
        assert.are.equal(2, s.minimum_provers)
        assert.is_true(s.emit_on_send)
        assert.is_false(s.closed)
        assert.is_nil(s.error)
      end)

      it("reports counters as integers", function()
        local sm = quiet_machine()
        local s = sm:inspect()
        for _, name in ipairs { "transitions_made", "events_dropped", "receives_refused",
                                "messages_received", "events_queued", "ranks_held", "entries_held" } do
          assert.are.equal("0", tostring(s[name]), name)
        end
      end)
    end)
  end)
end)
