--- Protocol experiments: N nodes of a protocol (the reference one unless
-- told) on a sim world and a lab network, byzantine peers, faults on a
-- schedule; agreement checked at every finalization; a report, a
-- JSON-lines trace and an SVG timeline. docs/lab.md gives the protocol
-- interface.
--
--     local harness = require "csm.lab.harness"
--     local report = harness.run { nodes = 16, byzantine = { equivocate = 5 }, loss = 0.05,
--                                  seed = 7, ranks = 200 }
--     io.write(harness.format(report))
--
-- The parts: csm.lab.net (the network), csm.lab.faults (the schedule),
-- csm.lab.checker (the invariants), csm.lab.trace, csm.lab.timeline and
-- csm.lab.report.
-- @module csm.lab.harness

local csm = require "csm"
local check = require "csm.check"
local layout = require "csm.layout"
local net = require "csm.lab.net"
local faults = require "csm.lab.faults"
local checker = require "csm.lab.checker"
local trace = require "csm.lab.trace"
local timeline = require "csm.lab.timeline"
local report = require "csm.lab.report"
local adversary = require "csm.lab.adversary"
local signer = require "csm.lab.signer"
local store = require "csm.lab.store"
local generate = require "csm.lab.generate"

local fail = check.fail

local harness = {}

--- The byzantine parts a node can play, in the order they are placed.
harness.byzantine_kinds = { "equivocate", "double_vote", "silent", "crash", "adversary" }
local KINDS = {}
for _, kind in ipairs(harness.byzantine_kinds) do KINDS[kind] = true end

--- The most nodes an experiment runs.
harness.max_nodes = 10000
local MAX_NODES = harness.max_nodes

local DEFAULTS = {
  nodes = 4, seed = 1, ranks = 100, time = 3600, latency = 0.01, jitter = 0.005, loss = 0,
  duplicate = 0, reorder = 0, crash_at = 5, partitions = {},
}

local OPTIONS = { byzantine = true, restart_after = true, timing = true, view_timeout = true,
                  trace = true, svg = true, steps_per_instant = true, protocol = true, adversary = true,
                  adversary_source = true, schedule = true, twins = true, twin_sides = true,
                  liveness_bound = true, on_end = true, html = true, restarts = true }

--- The protocols shipped with csm, by name.
harness.protocols = { reference = "csm.protocols.reference", minimal = "csm.protocols.minimal" }

local PROTOCOL_FUNCTIONS = { "node", "digest", "valid", "classify", "content", "vote" }

--- The protocol module p names: a module table (checked), or the name of
-- a shipped one. Raises, naming fname, when it is neither.
function harness.protocol(p, fname)
  fname = fname or "harness"
  if p == nil then p = "reference" end
  if type(p) == "string" then
    local path = harness.protocols[p]
    if not path then
      local names = {}
      for name in pairs(harness.protocols) do names[#names + 1] = name end
      table.sort(names)
      fail("%s: unknown protocol '%s' (shipped: %s; or a module table)", fname, p, table.concat(names, ", "))
    end
    p = require(path)
  end
  if type(p) ~= "table" then
    fail("%s: option 'protocol' must be a module table (got %s)", fname, check.show(p))
  end
  for i, k in ipairs(PROTOCOL_FUNCTIONS) do
    if (i == 1 or p[k] ~= nil) and type(p[k]) ~= "function" then
      fail("%s: option 'protocol': field '%s' must be a function (got %s)", fname, k, check.show(p[k]))
    end
  end
  if p.name ~= nil and type(p.name) ~= "string" then
    fail("%s: option 'protocol': field 'name' must be a string (got %s)", fname, check.show(p.name))
  end
  if p.roles ~= nil and type(p.roles) ~= "table" then
    fail("%s: option 'protocol': field 'roles' must be a set of role names (got %s)", fname,
      check.show(p.roles))
  end
  return p
end
for k in pairs(DEFAULTS) do OPTIONS[k] = true end

-- Which node plays which part: byzantine nodes are spread over the ring,
-- in the order of harness.byzantine_kinds.
local function assign_parts(c)
  local parts, n = {}, c.nodes
  local list = {}
  for _, kind in ipairs(harness.byzantine_kinds) do
    for _ = 1, c.byzantine[kind] or 0 do list[#list + 1] = kind end
  end
  local step = n / math.max(#list, 1)
  for i, kind in ipairs(list) do
    parts[math.floor((i - 1) * step) + 1] = kind
  end
  -- twins are named, not counted
  local names = net.names(n)
  for _, twin in ipairs(c.twins or {}) do
    for i, name in ipairs(names) do
      if name == twin then parts[i] = parts[i] and (parts[i] .. "+twin") or "twin" end
    end
  end
  return parts
end

--- The part each node of checked configuration c plays (nil: honest), by
-- index.
harness.parts = assign_parts

--- Checks a configuration and fills in the defaults; raises naming the
-- option that is wrong.
function harness.config(c)
  local fname = "harness"
  c = check.options(fname, c, OPTIONS, true)
  local out = {}
  for k, v in pairs(DEFAULTS) do out[k] = v end
  for k, v in pairs(c) do out[k] = v end
  out.protocol = harness.protocol(c.protocol, fname)
  local pname = out.protocol.name or "protocol"
  -- every node publishes to every other: beyond this a run takes hours
  check.integer(fname, "nodes", out.nodes, 1, MAX_NODES)
  check.integer(fname, "seed", out.seed, 0, 2 ^ 53)
  check.integer(fname, "ranks", out.ranks, 0)
  check.number(fname, "time", out.time, 0)
  for _, k in ipairs { "latency", "jitter", "crash_at" } do check.number(fname, k, out[k], 0) end
  for _, k in ipairs { "loss", "duplicate", "reorder" } do check.number(fname, k, out[k], 0, 1) end
  check.number(fname, "restart_after", out.restart_after, 0, nil, true)
  check.integer(fname, "restarts", out.restarts, 0, nil, true)
  if out.steps_per_instant ~= math.huge then
    check.integer(fname, "steps_per_instant", out.steps_per_instant, 1, nil, true)
  end
  check.number(fname, "view_timeout", out.view_timeout, 0, nil, true)
  if out.view_timeout == 0 then fail("harness: option 'view_timeout' must be > 0 (got 0)") end
  check.type(fname, "timing", out.timing, "table", true)
  for _, name in ipairs(layout.sorted_keys(out.timing or {})) do
    local problem = layout.timing_problem(name, out.timing[name])
    if problem then fail("harness: option 'timing': %s", problem) end
  end
  check.type(fname, "trace", out.trace, "string", true)
  check.type(fname, "svg", out.svg, "string", true)
  check.type(fname, "byzantine", c.byzantine, "table", true)
  out.byzantine = {}
  local total = 0
  for kind, count in pairs(c.byzantine or {}) do
    if not KINDS[kind] then fail("harness: unknown byzantine kind '%s'", tostring(kind)) end
    check.integer(fname, "byzantine." .. kind, count, 0)
    -- silent, crash and adversary need nothing of the protocol; the others
    -- are its roles
    local role = kind == "equivocate" or kind == "double_vote"
    if count > 0 and role and not (out.protocol.roles or {})[kind] then
      fail("harness: protocol '%s' has no byzantine role '%s'", pname, kind)
    end
    out.byzantine[kind] = count
    total = total + count
  end
  if out.adversary ~= nil then adversary.check(fname, out.adversary) end
  check.type(fname, "adversary_source", out.adversary_source, "string", true)
  if (out.byzantine.adversary or 0) > 0 and out.adversary == nil then
    fail("harness: %d adversary node(s) and no adversary (option 'adversary')", out.byzantine.adversary)
  end
  check.number(fname, "liveness_bound", out.liveness_bound, 0, nil, true)
  check.type(fname, "on_end", out.on_end, "function", true)
  check.type(fname, "html", out.html, "string", true)
  check.type(fname, "twins", out.twins, "table", true)
  local known, seen = {}, {}
  for _, name in ipairs(net.names(out.nodes)) do known[name] = true end
  for i, twin in ipairs(out.twins or {}) do
    if not known[twin] then
      fail("harness: option 'twins': item %d is %s, not one of the nodes (n01 to %s)", i, check.show(twin),
        net.names(out.nodes)[out.nodes])
    end
    if seen[twin] then fail("harness: option 'twins' lists '%s' twice", twin) end
    seen[twin] = true
  end
  check.type(fname, "twin_sides", out.twin_sides, "table", true)
  for twin, sides in pairs(out.twin_sides or {}) do
    if not seen[twin] then
      fail("harness: option 'twin_sides': '%s' is not one of the twins", tostring(twin))
    end
    if type(sides) ~= "table" or #sides ~= 2 then
      fail("harness: option 'twin_sides': %s must have two sides, a list of node names each", twin)
    end
    for k, list in ipairs(sides) do
      if type(list) ~= "table" then
        fail("harness: option 'twin_sides': %s's side %d must be a list of node names", twin, k)
      end
      for _, name in ipairs(list) do
        if not known[name] or name == twin then
          fail("harness: option 'twin_sides': %s's side %d lists %s, not another node", twin, k,
            check.show(name))
        end
      end
    end
  end
  if total >= out.nodes then
    fail("harness: %d byzantine nodes leave no honest one of %d", total, out.nodes)
  end
  local names, parts, byzantine = net.names(out.nodes), assign_parts(out), 0
  for i, part in pairs(parts) do
    if part:find("+twin", 1, true) then
      fail("harness: option 'twins': %s already plays %s", names[i], part:gsub("%+twin$", ""))
    end
    byzantine = byzantine + 1
  end
  if byzantine >= out.nodes then
    fail("harness: %d byzantine nodes (twins included) leave no honest one of %d", byzantine, out.nodes)
  end
  check.type(fname, "partitions", out.partitions, "table")
  local schedule = {}
  for i, p in ipairs(out.partitions) do
    if type(p) ~= "table" then fail("harness: partition %d must be a table (got %s)", i, check.show(p)) end
    schedule[i] = { kind = "partition", at = p.at, duration = p.duration, groups = p.groups }
  end
  faults.check("harness", schedule, net.names(out.nodes), "partitions")
  check.type(fname, "schedule", out.schedule, "table", true)
  faults.check("harness", out.schedule or {}, net.names(out.nodes), "schedule")
  -- and all of it together, as it will be armed
  faults.check("harness", harness.schedule(out, names, parts), names)
  return out
end

-- The states a restart may come in (every node passes each at every rank
-- it decides itself), and the longest ranks it waits for.
local RESTART_STATES = { "collecting", "liveness_check", "proving", "voting", "finalizing",
                         "verifying" }
local RESTART_RANKS = 40

--- The crashes of c.restarts (an integer): honest nodes in turn, each at a
-- protocol point drawn from the seed (a state, at a rank), back after up
-- to 2 x (timing.scale or 0.1) x 10 seconds with their store, half of
-- them with the last record torn.
function harness.restarts(c, names, parts)
  local list = {}
  local count = c.restarts or 0
  if count == 0 then return list end
  local honest = {}
  for i, name in ipairs(names) do
    if parts[i] == nil then honest[#honest + 1] = name end
  end
  if #honest == 0 then return list end
  local d = generate.draw(c.seed * 7919 + 17)
  local scale = c.timing and c.timing.scale or 0.1
  local top = math.max(1, math.min((c.ranks or 10) - 1, RESTART_RANKS))
  local first = d:int(1, #honest)
  for k = 1, count do
    local name = honest[(first + k - 2) % #honest + 1]
    list[#list + 1] = {
      kind = "crash", node = name, restart_after = d:between(0.05, 20 * scale), tear = d:float() < 0.5,
      when = { node = name, state = RESTART_STATES[d:int(1, #RESTART_STATES)], rank = d:int(1, top) },
    }
  end
  return list
end

--- The fault schedule of configuration c (names and parts: the node names
-- and the part each byzantine one plays): the crash nodes' crashes, then
-- c.restarts' crashes, the partitions, then c.schedule's faults.
function harness.schedule(c, names, parts)
  local list = {}
  for i, name in ipairs(names) do
    if parts[i] == "crash" then
      list[#list + 1] = { kind = "crash", node = name, at = c.crash_at, restart_after = c.restart_after }
    end
  end
  for _, fault in ipairs(harness.listed_faults(c, names, parts)) do list[#list + 1] = fault end
  return list
end

--- The faults of checked configuration c that a schedule lists (all but
-- the crash nodes' crashes, which crash_at gives): c.restarts' crashes,
-- the partitions, then c.schedule's faults. A run file writes them out.
function harness.listed_faults(c, names, parts)
  local list = harness.restarts(c, names, parts)
  for _, p in ipairs(c.partitions) do
    list[#list + 1] = { kind = "partition", at = p.at, duration = p.duration, groups = p.groups }
  end
  for _, fault in ipairs(c.schedule or {}) do list[#list + 1] = fault end
  return list
end

-- One experiment while it runs: its world, network, nodes (by index and
-- by name), trace, timeline lanes, agreement check and progress count.
local Run = {}
Run.__index = Run

local function new_run(c)
  local self = setmetatable({ c = c, clock = os.clock(), nodes = {}, index = {}, lanes = {},
    agreement = checker.agreement(), honest_total = 0, honest_done = 0, protocol = c.protocol,
    heights = {}, finalized_at = {}, reached = {}, attempts = {}, faults = {}, taken = {}, marks = {} }, Run)
  self.world = csm.sim { seed = c.seed, steps_per_instant = c.steps_per_instant }
  self.network = net.new(self.world, { latency = c.latency, jitter = c.jitter, loss = c.loss,
    duplicate = c.duplicate, reorder = c.reorder })
  self.names = net.names(c.nodes)
  self.parts = assign_parts(c)
  self.genesis = csm.value("genesis", 0)
  local needs = c.protocol.needs or {}
  self.needs = needs
  if needs.signer then self.keyring = signer.keyring(c.seed, self.names) end
  self.stores = {}
  if c.adversary then
    local controlled = {}
    for i, name in ipairs(self.names) do
      if self.parts[i] == "adversary" then controlled[#controlled + 1] = name end
    end
    self.adversary = adversary.handle(c.adversary, { world = self.world, network = self.network,
      names = self.names, controlled = controlled, classify = c.protocol.classify or harness.classify,
      keyring = self.keyring, seal = c.protocol.seal })
  end
  local protocol = c.protocol
  local classify = protocol.classify or harness.classify
  local honest = {}
  for i, name in ipairs(self.names) do
    if self.parts[i] == nil then honest[name] = true end
  end
  local monitor = checker.monitor { honest = honest, classify = classify, valid = protocol.valid,
    content = protocol.content or checker.content_of, vote = protocol.vote or checker.vote_of }
  self.monitor = monitor
  local log
  if c.trace then
    local err
    log, err = trace.open(c.trace, self.world, harness.header(c, self.names, self.parts))
    if not log then fail("harness: %s", err) end
  end
  if c.html then
    local viewer = require "csm.lab.viewer"
    self.view = viewer.recorder(self.world, self.names, harness.header(c, self.names, self.parts))
    log = viewer.tee(log, self.view)
  end
  if log then
    self.log = log
    if self.adversary then self.adversary.log = log end
  end
  self.network.observer = function(what, from, to, msg, id, why)
    if what == "send" then
      monitor:on_send(from, msg)
    elseif what == "deliver" then
      monitor:on_deliver(from, to, msg)
    end
    if log then
      local kind, rank, attempt = classify(msg)
      log:message(what, id, from, to, kind, rank, attempt, why, msg)
    end
  end
  return self
end

--- The default classification of a message into kind, rank and attempt:
-- msg.kind; msg.rank, or the rank of msg.value; msg.attempt, or
-- msg.value.attempt.
function harness.classify(msg)
  if type(msg) ~= "table" then return nil end
  local value, rank, attempt = msg.value, msg.rank, msg.attempt
  if csm.is_value(value) then
    if rank == nil then rank = value:rank() end
    if attempt == nil then attempt = value.attempt end
  end
  if type(rank) ~= "number" then rank = nil end
  if type(attempt) ~= "number" then attempt = nil end
  return type(msg.kind) == "string" and msg.kind or nil, rank, attempt
end

-- The commit of the csm tree this file is in, when it is a git clone.
local function commit()
  local source = debug.getinfo(1, "S").source
  local root = source:match("^@(.*)lua/csm/lab/harness%.lua$")
  if not root then return nil end
  if root ~= "" and root:sub(-1) ~= "/" then return nil end
  local fh = io.open(root .. ".git/HEAD")
  if not fh then return nil end
  local head = fh:read("*l") or ""
  fh:close()
  local ref = head:match("^ref: (.+)$")
  if not ref then return head:match("^%x+$") end
  fh = io.open(root .. ".git/" .. ref)
  if fh then
    local id = fh:read("*l")
    fh:close()
    return id
  end
  fh = io.open(root .. ".git/packed-refs")
  if not fh then return nil end
  for line in fh:lines() do
    local id, name = line:match("^(%x+) (.+)$")
    if name == ref then fh:close() return id end
  end
  fh:close()
  return nil
end

--- The trace's header for configuration c: csm's version and commit
-- (when known), the interpreter, the protocol, the configuration (less
-- the output paths), the parts the nodes play and the fault schedule.
function harness.header(c, names, parts)
  local config = {}
  for k, v in pairs(c) do
    if k ~= "trace" and k ~= "svg" and k ~= "protocol" and k ~= "adversary" and k ~= "adversary_source"
      and k ~= "schedule" and k ~= "on_end" and k ~= "html" then
      config[k] = v
    end
  end
  if config.steps_per_instant == math.huge then config.steps_per_instant = "inf" end
  local roles = {}
  for i, name in ipairs(names) do roles[name] = parts[i] or "honest" end
  return { csm = csm._VERSION, commit = commit(), interpreter = jit and jit.version or _VERSION,
           protocol = c.protocol.name or "(unnamed protocol)", config = config, parts = roles,
           schedule = harness.schedule(c, names, parts),
           adversary = c.adversary and { name = c.adversary.name or "(unnamed adversary)",
                                         source = c.adversary_source } }
end

-- Records, checks and counts a finalization (traced first): the harness
-- keeps each node's height and finalization times itself, through
-- restarts.
function Run:finalized(name, rank, state)
  local digest = (self.protocol.digest or checker.digest)(state)
  if self.log then self.log:finalize(name, rank, state:identity(), digest) end
  local at = self.finalized_at[name]
  if at[rank] == nil then at[rank] = self.world:now() end
  if rank > self.heights[name] then self.heights[name] = rank end
  if self.armed then self.armed:reached(name, "finalized", rank) end
  self.monitor:on_finalize(name, rank, state)
  if self.parts[self.index[name]] ~= nil then return end
  local v = self.agreement:observe(name, rank, state:identity(), digest)
  if v then v.accountability = self.monitor:account(v) end
  if self.heights[name] >= self.c.ranks and not self.reached[name] then
    self.reached[name] = true
    self.honest_done = self.honest_done + 1
  end
end

-- Builds node i (sync: it starts with a network sync, after a restart;
-- restore: what it kept through a crash), with a listener that draws its
-- lane and traces its transitions.
function Run:make(i, sync, restore)
  local c, world, part, protocol = self.c, self.world, self.parts[i], self.protocol
  local name = self.names[i]
  local handle = part == "adversary" and self.adversary or nil
  local options = {
    name = name, names = self.names, world = world,
    network = handle and handle:wrap_network() or self.network,
    initial = self.genesis, timing = c.timing, view_timeout = c.view_timeout, sync = sync,
    on_finalize = function(_, rank, state) self:finalized(name, rank, state) end, restore = restore,
    signer = self.keyring and self.keyring:signer(name), store = self.needs.store and self:store_of(name),
    lab = {
      always = function(assertion, cond, detail) self.monitor:always(name, assertion, cond, detail) end,
      sometimes = function(assertion, cond) self.monitor:sometimes(assertion, cond) end,
      -- a protocol's own coverage point: csm sweep counts them over its runs
      mark = function(mark) self.marks[mark] = (self.marks[mark] or 0) + 1 end,
      -- what a restarted node read back from its store (the durability check)
      recovered = function(height, slots) self.monitor:on_recover(name, height, slots) end,
    },
    note = function(kind, fields)
      if self.log then self.log:note(name, kind, fields) end
      if kind == "attempt" and type(fields) == "table" then
        local list = self.attempts[name]
        list[#list + 1] = { world:now(), fields.attempt }
        if self.armed then self.armed:reached(name, "attempt", fields.attempt, fields.rank) end
      elseif kind == "evidence" and type(fields) == "table" then
        self:evidence(name, fields)
      end
    end,
  }
  -- a protocol with roles plays them, "honest" included; silent and crash
  -- nodes of one without are the harness's to keep quiet
  if protocol.roles then
    local role = (part == "crash" or part == nil) and "honest" or part
    if protocol.roles[role] then options.role = role end
  end
  local node
  if part == "twin" then
    node = self:twins(options)
  else
    node = protocol.node(options)
  end
  if type(node) ~= "table" or not csm.is_machine(node.sm) or type(node.start) ~= "function" then
    fail("harness: protocol '%s': node() must return a table with sm (a csm machine) and start (got %s)",
      protocol.name or "protocol", check.show(node))
  end
  if handle and handle.mod.node then
    node = handle.mod.node(handle, node, options)
    if type(node) ~= "table" or not csm.is_machine(node.sm) or type(node.start) ~= "function" then
      fail("harness: adversary '%s': node() must return a node (a table with sm and start; got %s)",
        handle.mod.name or "?", check.show(node))
    end
  end
  node.part = part or "honest"
  self.lanes[node.name] = self.lanes[node.name] or {}
  local lane, log = self.lanes[node.name], self.log
  local taken = self.taken
  if self.machine_transitions == nil then self.machine_transitions = node.sm:transitions() end
  node.sm:add_listener(function(from, to, event)
    local key = from .. " --" .. event .. "--> " .. to
    taken[key] = (taken[key] or 0) + 1
    lane[#lane + 1] = { world:now(), to }
    if self.armed then
      local active = node.sm:active_state()
      self.armed:reached(node.name, "state", to, active and active:rank() + 1 or 1)
    end
    if log then
      local active = node.sm:active_state()
      log:transition(node.name, from, event, to, active and active:rank() + 1)
    end
  end)
  return node
end

--- The liveness bound after a gst: c.liveness_bound, or 600 x timing.scale
-- (60 s at the scale the harness runs the reference protocol with, 0.1).
function harness.liveness_bound(c)
  if c.liveness_bound then return c.liveness_bound end
  local scale = c.timing and c.timing.scale or 0.1
  return 600 * scale
end

-- Liveness after the gst: every honest node finalizes a rank within the
-- bound after it (or had reached the target). r.liveness is nil without a
-- gst, else { gst, bound, verdict = "ok" | "violated" | "unknown", late }.
function Run:judge_liveness(r)
  local g = self.gst_at
  if g == nil then return end
  local bound = harness.liveness_bound(self.c)
  local late = {}
  for i, name in ipairs(self.names) do
    if self.parts[i] == nil and self.heights[name] < self.c.ranks then
      local after = false
      for _, t in pairs(self.finalized_at[name]) do
        if t > g and t <= g + bound then after = true break end
      end
      if not after then late[#late + 1] = name end
    end
  end
  local verdict = "ok"
  if #late > 0 then verdict = r.virtual >= g + bound and "violated" or "unknown" end
  r.liveness = { gst = g, bound = bound, verdict = verdict, late = late }
end

-- Twins (Twins: BFT Systems Made Robust): two honest copies of one node,
-- under its one identity. Each gets its own copy of what is sent to the
-- name, and both send as it; together they are one byzantine node.
function Run:twins(options)
  local handlers, endpoint = {}, nil
  local network = self.network
  -- with sides, copy k hears and is heard by side k's nodes only
  local sides = (self.c.twin_sides or {})[options.name]
  -- side_of[name][k]: copy k hears name and is heard by it (a node on
  -- both sides hears both copies, as from one node that equivocates)
  local side_of = {}
  for k, list in ipairs(sides or {}) do
    for _, name in ipairs(list) do
      side_of[name] = side_of[name] or {}
      side_of[name][k] = true
    end
  end
  local function on(name, k) return sides == nil or (side_of[name] ~= nil and side_of[name][k]) end
  local function copy_network(k)
    local own
    return setmetatable({
      join = function(_, name, handler)
        handlers[k] = handler
        if endpoint == nil then
          endpoint = network:join(name, function(from, msg)
            for j = 1, 2 do
              local h = handlers[j]
              if h and on(from, j) then h(from, j == 1 and msg or net.copy(msg)) end
            end
          end)
        end
        own = own or setmetatable({
          send = function(_, to, msg)
            if on(to, k) then endpoint:send(to, msg) end
          end,
          publish = function(_, msg)
            if sides == nil then return endpoint:publish(msg) end
            for _, to in ipairs(endpoint:nodes()) do
              if on(to, k) then endpoint:send(to, msg) end
            end
          end,
        }, { __index = endpoint })
        return own
      end,
    }, { __index = network })
  end
  local copies = {}
  for k = 1, 2 do
    local o = {}
    for key, v in pairs(options) do o[key] = v end
    o.network = copy_network(k)
    if k == 2 and o.store then o.store = store.sim() end
    copies[k] = self.protocol.node(o)
  end
  local first, second = copies[1], copies[2]
  local log = self.log
  if log and csm.is_machine(second.sm) then
    second.sm:add_listener(function(from, to, event)
      local active = second.sm:active_state()
      log:transition(options.name .. "'", from, event, to, active and active:rank() + 1)
    end)
  end
  return { name = options.name, sm = first.sm, copies = copies, refused = first.refused,
           start = function() first:start(); second:start() end }
end

-- Evidence a node found: two different messages one voter signed for one
-- slot. Each (voter, kind, rank, attempt) once, whoever found it; kept up
-- to EVIDENCE_KEPT, counted beyond.
local EVIDENCE_KEPT = 20
function Run:evidence(found_by, fields)
  local key = string.format("%s/%s/%s/%s", tostring(fields.voter), tostring(fields.kind),
    tostring(fields.rank), tostring(fields.attempt))
  self.evidence_seen = self.evidence_seen or {}
  if self.evidence_seen[key] then return end
  self.evidence_seen[key] = true
  local list = self.evidence_list or {}
  self.evidence_list = list
  list.count = (list.count or 0) + 1
  if #list < EVIDENCE_KEPT then
    list[#list + 1] = { voter = fields.voter, kind = fields.kind, rank = fields.rank,
                        attempt = fields.attempt, ids = fields.ids, by = found_by, at = self.world:now() }
  end
end

-- The store of node name (made on first use; a crash keeps it, unless
-- the disk is lost): each append is a protocol point ("write").
function Run:store_of(name)
  local s = self.stores[name]
  if s == nil then
    s = store.sim()
    self.stores[name] = s
  end
  s:on_append(function(count)
    if self.armed then self.armed:reached(name, "write", count) end
  end)
  return s
end

-- A crash of name's store: what was not synced is lost (fault.keep of
-- those records reach the disk, fault.tear leaves the next half written).
function Run:crash_store(name, fault)
  local s = self.stores[name]
  if s and not s.crashed then s:crash { keep = fault.keep, tear = fault.tear } end
end

-- What a crash does to a node (what it wrote down is taken first, when its
-- protocol keeps anything), and how it comes back.
function Run:crash(name, durable, fault)
  local node = self.nodes[self.index[name]]
  self.kept = self.kept or {}
  if durable and type(node.durable) == "function" then self.kept[name] = node:durable() end
  self:crash_store(name, fault or {})
  -- a lost disk: the node comes back with an empty store, and counts as
  -- byzantine from now on
  if not durable then
    self.stores[name] = nil
    self.monitor:forget(name)
  end
  node.sm:close()
  local lane = self.lanes[name]
  lane[#lane + 1] = { self.world:now(), "crashed" }
end

function Run:restart(name)
  local i = self.index[name]
  local kept = self.kept and self.kept[name]
  if self.kept then self.kept[name] = nil end
  if self.stores[name] then self.stores[name]:recover() end
  local fresh = self:make(i, true, kept)
  self.nodes[i] = fresh
  fresh:start()
end

-- Builds and starts the nodes (silent ones off the network) and arms the
-- fault schedule.
function Run:start()
  for i, name in ipairs(self.names) do
    self.index[name], self.heights[name], self.finalized_at[name], self.attempts[name] = i, 0, {}, {}
    if self.parts[i] == nil then self.honest_total = self.honest_total + 1 end
  end
  for i = 1, self.c.nodes do self.nodes[i] = self:make(i, false) end
  local handle = self.adversary
  if handle and handle.mod.message then self.network:intercept(handle:intercept()) end
  local plays_silent = (self.protocol.roles or {}).silent
  for _, node in ipairs(self.nodes) do
    if node.part == "silent" then self.network:crash(node.name) end
    if node.part ~= "silent" or plays_silent then node:start() end
  end
  if handle and handle.mod.start then handle.mod.start(handle) end
  local log = self.log
  self.armed = faults.arm(self.network, harness.schedule(self.c, self.names, self.parts), {
    crash = function(name, fault) self:crash(name, fault.durable ~= false, fault) end,
    frozen = function(name, fault) self:crash_store(name, fault) end,
    restart = function(name) self:restart(name) end,
    classify = self.c.protocol.classify or harness.classify,
    event = function(kind, fields)
      local list = self.faults
      list[#list + 1] = { self.world:now(), kind, fields }
      if log then log:event(kind, fields) end
    end,
    gst = function()
      self.gst_at = self.world:now()
      if handle then handle.gst = true end
    end,
  })
end

-- Runs to the target or the time limit; returns the report.
function Run:finish()
  local c = self.c
  local handle = self.adversary
  local finished = self.world:run_until(function()
    return self.honest_done >= self.honest_total or (handle ~= nil and handle.failure ~= nil)
  end, c.time)
  if handle and handle.failure then
    self.world:close()
    if self.log then self.log:close() end
    error(handle.failure, 0)
  end
  local r = { config = c, nodes = {}, stuck = {}, byzantine_kinds = harness.byzantine_kinds }
  r.wall = os.clock() - self.clock
  r.virtual = self.world:now()
  r.finished = finished
  r.messages = self.network.stats
  local records = {}
  for i, node in ipairs(self.nodes) do
    local name = self.names[i]
    records[i] = { name = name, part = node.part, honest = self.parts[i] == nil, height = self.heights[name],
                   finalized_at = self.finalized_at[name], sm = node.sm, refused = node.refused,
                   refusals = node.refusals }
  end
  local byzantine = 0
  for _ in pairs(self.parts) do byzantine = byzantine + 1 end
  r.byzantine, r.f = byzantine, math.floor((c.nodes - 1) / 3)
  report.finish(r, records, self.agreement)
  r.findings = self.monitor.findings
  self:judge_liveness(r)
  r.never_seen = self.monitor:never_seen()
  r.safe = r.agreement and #r.findings == 0
  r.verdict = harness.verdict(r)
  r.lanes, r.names, r.attempts, r.faults = self.lanes, self.names, self.attempts, self.faults
  -- coverage: the machine's transitions taken (by "from --event--> to")
  -- and the protocol's marks (options.lab.mark), counted over all nodes
  local all = {}
  for i, t in ipairs(self.machine_transitions or {}) do
    all[i] = t.from .. " --" .. t.event .. "--> " .. t.to
  end
  r.coverage = { transitions = all, taken = self.taken, marks = self.marks }
  r.evidence = self.evidence_list
  if self.log then
    local classify = c.protocol.classify or harness.classify
    for _, m in ipairs(self.network:pending()) do
      local kind, rank, attempt = classify(m.msg)
      self.log:message("in_flight", m.id, m.from, m.to, kind, rank, attempt)
    end
  end
  -- on_end sees the nodes as the run left them, before their world closes
  if c.on_end then c.on_end(self.nodes) end
  -- the run is over: its machines and timers go with its world
  self.world:close()
  -- the run is done: a file that could not be written is said beside it
  local ok, err, code = true, nil, nil
  if self.log then ok, err, code = self.log:close() end
  if ok and c.svg then ok, err, code = timeline.write(r, c.svg) end
  if ok and self.view then ok, err, code = require("csm.lab.viewer").write(self.view, r, c.html) end
  if not ok then return r, err, code end
  return r
end

--- A run's verdict: "invalid" when an invariant was violated (agreement,
-- validity, equivocation, durability, an always assertion, liveness after the gst, or
-- a node stuck short of the target), "unknown" when the run ended before
-- the question was settled (liveness after the gst not yet due, or every
-- node short of the target still advancing), else "valid".
function harness.verdict(r)
  local live = r.liveness
  if not r.safe or (live and live.verdict == "violated") then return "invalid" end
  for _, s in ipairs(r.stuck) do
    if not s.advancing then return "invalid" end
  end
  if (live and live.verdict == "unknown") or not r.progress then return "unknown" end
  return "valid"
end

--- Runs an experiment; returns the report (see harness.format), and, when
-- the trace or the timeline could not be written, a message and "io".
function harness.run(config)
  local run = new_run(harness.config(config))
  run:start()
  return run:finish()
end

--- The report as text (csm.lab.report.format).
harness.format = report.format

--- Writes the report's timeline as SVG to path (csm.lab.timeline.write).
harness.svg = timeline.write

return harness
