--- The lab's faults: an explicit schedule, a list of plain data (JSON can
-- hold it), checked against the nodes of a run and armed on its network.
-- Each fault starts at a virtual time (`at`) or at a protocol point
-- (`when`): a node, or any node, finalizing a rank, moving to an attempt, or
-- entering a state.
--
--     { kind = "partition", at = 10, duration = 60, groups = { {"n01", "n02"}, {"n03", "n04"} } }
--     { kind = "one_way", at = 5, duration = 3, from = {"n01"}, to = {"n02", "n03"} }
--     { kind = "isolate", when = { node = "n02", finalized = 3 }, duration = 4, node = "n02" }
--     { kind = "heal", at = 20 }                      -- ends every cut now
--     { kind = "link", at = 1, duration = 9, a = "n01", b = "n02", loss = 0.5, latency = 0.2 }
--     { kind = "crash", node = "n01", at = 5, restart_after = 10, durable = false }
--     { kind = "crash", node = "n01", when = { node = "n01", write = 7 }, restart_after = 1, tear = true }
--     { kind = "restart", node = "n01", at = 30 }
--     { kind = "pause", node = "n03", at = 2, duration = 1 }
--     { kind = "gst", at = 40 }                       -- every fault stops here
--     { kind = "drop", from = "n01", to = "n02", message = "vote", rank = 3, attempt = 0, occurrence = 1 }
--
-- A partition cuts every pair of nodes in different groups (nodes in no
-- group form one more); one_way cuts only from -> to; isolate cuts a node
-- from all others; each lasts `duration` seconds, and cuts add up. link sets
-- a link's parameters (both ways) for a window. crash closes a node's
-- machine and takes it off the network; its store loses what was not
-- synced (keep = n: the first n of those records reached the disk; tear:
-- the next one is half written); with durable = false it comes back with
-- nothing it wrote down (its disk lost). pause holds what a node sends and receives
-- and hands it over when the pause ends. gst (global stabilization time)
-- ends every cut, link window and pause, turns the network's loss,
-- duplication and reordering off, and no fault starts after it. `when` is
-- { finalized = R }, { attempt = A [, rank = R] } or { state = S [, rank =
-- R] } (the rank being decided) or { write = n } (the node's n-th store
-- write: the crash comes before the write is synced), with node = name
-- (any node when left out); it fires the first time it holds. A drop has no time: it drops the
-- occurrence-th copy (default 1) from -> to of one kind of message, at
-- the rank and attempt when named, as the protocol classifies it; named
-- so, it still means the same message when the run's timing changes
-- (csm shrink turns random loss into such drops).
-- @module csm.lab.faults

local check = require "csm.check"

local fail = check.fail

local faults = {}

--- The kinds of fault, in the order messages list them.
faults.kinds = { "partition", "one_way", "isolate", "heal", "link", "crash", "restart", "pause", "gst",
                 "drop" }
local KINDS = {}
for _, kind in ipairs(faults.kinds) do KINDS[kind] = true end

local WINDOWS = { partition = true, one_way = true, isolate = true, link = true, pause = true }
local ON_NODE = { crash = true, restart = true, isolate = true, pause = true }
local LINK_PARAMS = { loss = true, latency = true, jitter = true, duplicate = true, reorder = true }

-- A node name as a message shows it.
local function node_text(name)
  if type(name) == "string" then return "'" .. name .. "'" end
  return check.show(name)
end

local function check_node(fname, what, name, known)
  if not known[name] then fail("%s: %s: unknown node %s", fname, what, node_text(name)) end
  return name
end

-- Checks a list of node names (field of fault what).
local function check_names(fname, what, field, list, known)
  if type(list) ~= "table" or #list == 0 then
    fail("%s: %s: '%s' must be a non-empty list of node names", fname, what, field)
  end
  for _, name in ipairs(list) do
    if not known[name] then fail("%s: %s: unknown node %s in '%s'", fname, what, node_text(name), field) end
  end
end

-- Checks the groups of a partition (what: "partitions[2]") over the known
-- node names.
local function check_groups(fname, what, groups, known)
  if type(groups) ~= "table" or #groups == 0 then
    fail("%s: %s: 'groups' must be a non-empty list of lists of node names", fname, what)
  end
  local seen = {}
  for g, group in ipairs(groups) do
    if type(group) ~= "table" or #group == 0 then
      fail("%s: %s: group %d must be a non-empty list of node names", fname, what, g)
    end
    for _, name in ipairs(group) do
      if not known[name] then fail("%s: %s: unknown node %s in group %d", fname, what, node_text(name), g) end
      if seen[name] then fail("%s: %s: node '%s' is in two groups", fname, what, name) end
      seen[name] = true
    end
  end
end

local WHEN_KEYS = { node = true, finalized = true, attempt = true, rank = true, state = true, write = true }

-- Checks a protocol point.
local function check_when(fname, what, when, known)
  if type(when) ~= "table" then
    fail("%s: %s: 'when' must be a table (got %s)", fname, what, check.show(when))
  end
  for k in pairs(when) do
    if not WHEN_KEYS[k] then
      fail("%s: %s: unknown key '%s' in 'when' (node, finalized, attempt, rank, state, write)", fname, what,
        tostring(k))
    end
  end
  if when.node ~= nil then check_node(fname, what, when.node, known) end
  local points = 0
  for _, k in ipairs { "finalized", "attempt", "state", "write" } do
    if when[k] ~= nil then points = points + 1 end
  end
  if points ~= 1 then
    fail("%s: %s: 'when' must name one point: finalized = rank, attempt = n, state = name or write = n",
      fname, what)
  end
  if when.write ~= nil and when.node == nil then
    fail("%s: %s: 'when.write' counts one node's store writes: name the node", fname, what)
  end
  for _, k in ipairs { "finalized", "attempt", "rank", "write" } do
    if when[k] ~= nil then check.integer(fname, what .. ".when." .. k, when[k], 0) end
  end
  if when.rank ~= nil and (when.finalized ~= nil or when.write ~= nil) then
    fail("%s: %s: 'when.rank' qualifies an attempt or a state", fname, what)
  end
  if when.state ~= nil then check.type(fname, what .. ".when.state", when.state, "string") end
end

--- Checks a schedule (a list of faults) against names, the run's node
-- names; raises naming fname and the fault ("faults[2]", or with label
-- "partitions", "partitions[2]"). Returns the list.
function faults.check(fname, list, names, label)
  label = label or "faults"
  if type(list) ~= "table" then
    fail("%s: the fault schedule must be a list (got %s)", fname, check.show(list))
  end
  local known = {}
  for _, name in ipairs(names) do known[name] = true end
  local gst
  for _, fault in ipairs(list) do
    if type(fault) == "table" and fault.kind == "gst" and type(fault.at) == "number" then
      gst = math.min(gst or math.huge, fault.at)
    end
  end
  for i, fault in ipairs(list) do
    local what = string.format("%s[%d]", label, i)
    if type(fault) ~= "table" or not KINDS[fault.kind] then
      fail("%s: %s must be one of %s (got %s)", fname, what, table.concat(faults.kinds, ", "),
        type(fault) == "table" and check.show(fault.kind) or check.show(fault))
    end
    local kind = fault.kind
    if kind == "drop" then
      -- a drop is of a message, not at a time: it counts from the start
      if fault.at ~= nil or fault.when ~= nil then
        fail("%s: %s: a drop names a message (from, to, message, rank, attempt, occurrence), not a time",
          fname, what)
      end
      check_node(fname, what, fault.from, known, "from")
      check_node(fname, what, fault.to, known, "to")
      check.type(fname, what .. ".message", fault.message, "string")
      check.integer(fname, what .. ".rank", fault.rank, 0, nil, true)
      check.integer(fname, what .. ".attempt", fault.attempt, 0, nil, true)
      check.integer(fname, what .. ".occurrence", fault.occurrence, 1, nil, true)
    elseif fault.when ~= nil then
      if fault.at ~= nil then fail("%s: %s: 'at' and 'when' both given (one start only)", fname, what) end
      if kind == "gst" then fail("%s: %s: a gst is at a time ('at'), not a protocol point", fname, what) end
      check_when(fname, what, fault.when, known)
    else
      check.number(fname, what .. ".at", fault.at, 0)
      if gst and kind ~= "gst" and fault.at > gst then
        fail("%s: %s starts at %g s, after the gst at %g s (no fault starts after it)", fname, what,
          fault.at, gst)
      end
    end
    if ON_NODE[kind] then check_node(fname, what, fault.node, known) end
    if WINDOWS[kind] then
      if fault.duration == nil then
        fail("%s: %s: no duration (the seconds the %s lasts)", fname, what,
          kind == "one_way" and "cut" or kind)
      end
      check.number(fname, what .. ".duration", fault.duration, 0)
    end
    if kind == "partition" then
      check_groups(fname, what, fault.groups, known)
    elseif kind == "one_way" then
      check_names(fname, what, "from", fault.from, known)
      check_names(fname, what, "to", fault.to, known)
    elseif kind == "link" then
      check_node(fname, what, fault.a, known)
      check_node(fname, what, fault.b, known)
      local any = false
      for k in pairs(LINK_PARAMS) do
        if fault[k] ~= nil then
          any = true
          local most = (k == "loss" or k == "duplicate" or k == "reorder") and 1 or nil
          check.number(fname, what .. "." .. k, fault[k], 0, most)
        end
      end
      if not any then
        fail("%s: %s: a link fault sets loss, latency, jitter, duplicate or reorder", fname, what)
      end
    elseif kind == "crash" then
      check.number(fname, what .. ".restart_after", fault.restart_after, 0, nil, true)
      check.type(fname, what .. ".durable", fault.durable, "boolean", true)
      check.integer(fname, what .. ".keep", fault.keep, 0, nil, true)
      check.type(fname, what .. ".tear", fault.tear, "boolean", true)
    end
  end
  return list
end

-- The cuts of a fault: a list of { from, to } pairs.
local function cuts_of(fault, names)
  local out = {}
  if fault.kind == "partition" then
    local group = {}
    for g, list in ipairs(fault.groups) do
      for _, name in ipairs(list) do group[name] = g end
    end
    for _, a in ipairs(names) do
      for _, b in ipairs(names) do
        if a ~= b and (group[a] or 0) ~= (group[b] or 0) then out[#out + 1] = { a, b } end
      end
    end
  elseif fault.kind == "one_way" then
    for _, a in ipairs(fault.from) do
      for _, b in ipairs(fault.to) do
        if a ~= b then out[#out + 1] = { a, b } end
      end
    end
  else -- isolate
    for _, other in ipairs(names) do
      if other ~= fault.node then
        out[#out + 1] = { fault.node, other }
        out[#out + 1] = { other, fault.node }
      end
    end
  end
  return out
end

local Armed = {}
Armed.__index = Armed

--- Arms a checked schedule on network (a csm.lab.net network). hooks:
-- crash(name, fault) is called before the node goes down, restart(name,
-- fault) after it is back up; event(kind, fields), when given, is told of
-- each fault as it starts and ends ("crash", "restart", "partition",
-- "heal", "gst", ..., with the fault's fields); gst() when the gst comes;
-- classify(msg) -> kind, rank, attempt, when the schedule names drops.
-- Timers at equal times fire in the order they were armed: the crashes
-- (each before its restart) in list order, then the other faults in list
-- order (each before its end). Returns the armed schedule, whose
-- reached(node, point, value, rank) the harness calls at each protocol
-- point ("finalized", "attempt", "state").
function faults.arm(network, list, hooks)
  if type(network) ~= "table" or type(network.at) ~= "function" or type(network.nodes) ~= "function" then
    check.argerror("faults.arm", 1, "network", "csm.lab.net network expected", network)
  end
  faults.check("faults.arm", list, network:nodes())
  if type(hooks) ~= "table" then check.argerror("faults.arm", 3, "hooks", "table expected", hooks) end
  for _, k in ipairs { "event", "gst" } do
    if hooks[k] ~= nil and type(hooks[k]) ~= "function" then
      fail("faults.arm: hooks.%s must be a function", k)
    end
  end
  for _, fault in ipairs(list) do
    if fault.kind == "crash" or fault.kind == "restart" then
      if type(hooks.crash) ~= "function" then fail("faults.arm: hooks.crash must be a function") end
      if (fault.restart_after or fault.kind == "restart") and type(hooks.restart) ~= "function" then
        fail("faults.arm: hooks.restart must be a function (a crash restarts)")
      end
    end
  end
  local self = setmetatable({ network = network, hooks = hooks, names = network:nodes(), waiting = {},
                              gst = false, event = hooks.event or function() end }, Armed)
  -- crashes first, then the rest, as the schedule's timers always were
  for _, fault in ipairs(list) do
    if fault.kind == "crash" then self:schedule(fault) end
  end
  local drops = {}
  for _, fault in ipairs(list) do
    if fault.kind == "drop" then
      drops[#drops + 1] = { fault = fault, seen = 0 }
    elseif fault.kind ~= "crash" then
      self:schedule(fault)
    end
  end
  if #drops > 0 then
    if type(hooks.classify) ~= "function" then
      fail("faults.arm: hooks.classify must be a function (the schedule names drops)")
    end
    local classify = hooks.classify
    -- the occurrence-th copy from -> to of a message kind (and rank and
    -- attempt, when named) is dropped, until the gst
    network:drop_when(function(from, to, msg)
      if self.gst then return false end
      local kind, rank, attempt
      local hit = false
      for _, d in ipairs(drops) do
        local f = d.fault
        if f.from == from and f.to == to then
          if kind == nil then kind, rank, attempt = classify(msg) end
          if f.message == kind and (f.rank == nil or f.rank == rank)
            and (f.attempt == nil or f.attempt == attempt) then
            d.seen = d.seen + 1
            if d.seen == (f.occurrence or 1) then hit = true end
          end
        end
      end
      return hit
    end)
  end
  return self
end

--- An armed schedule (faults.arm).
-- @type Armed

-- Starts fault at its time, or waits for its protocol point.
function Armed:schedule(fault)
  if fault.when then
    self.waiting[#self.waiting + 1] = fault
  else
    self:start_at(fault, fault.at)
  end
end

-- The fields of a fault for the trace: all of it but its kind.
local function fields_of(fault)
  local out = {}
  for k, v in pairs(fault) do
    if k ~= "kind" then out[k] = v end
  end
  return out
end

-- Arms fault to start at virtual time t, and its end (or restart) after.
function Armed:start_at(fault, t)
  local network, hooks, event = self.network, self.hooks, self.event
  local kind = fault.kind
  local ends = fault.duration and t + fault.duration
  if kind == "crash" then
    local name = fault.node
    network:at(t, function()
      if self.gst then return end
      event("crash", { node = name, durable = fault.durable })
      hooks.crash(name, fault)
      network:crash(name)
    end)
    if fault.restart_after then
      network:at(t + fault.restart_after, function() self:restart(fault) end)
    end
    return
  end
  if kind == "restart" then
    network:at(t, function() self:restart(fault) end)
    return
  end
  if kind == "gst" then
    network:at(t, function() self:stabilize() end)
    return
  end
  if kind == "heal" then
    network:at(t, function()
      if self.gst then return end
      event("heal", {})
      network:heal()
      network:uncut_all()
    end)
    return
  end
  local token
  network:at(t, function()
    if self.gst then return end
    event(kind, fields_of(fault))
    if kind == "link" then
      local params = {}
      for k in pairs(LINK_PARAMS) do params[k] = fault[k] end
      token = network:link_window(fault.a, fault.b, params)
    elseif kind == "pause" then
      token = network:hold(fault.node)
    else
      token = network:cut(cuts_of(fault, self.names))
    end
  end)
  network:at(ends, function()
    if token == nil then return end -- it never started, or the gst ended it
    event(kind == "partition" and "heal" or kind .. "_end", fields_of(fault))
    if kind == "link" then
      network:link_window_end(token)
    elseif kind == "pause" then
      network:release(token)
    else
      network:uncut(token)
    end
    token = nil
  end)
end

function Armed:restart(fault)
  local network, name = self.network, fault.node
  if not network:is_down(name) then return end
  self.event("restart", { node = name })
  network:restart(name)
  self.hooks.restart(name, fault)
end

-- The gst: every cut, window and pause ends, the network stops losing,
-- duplicating and reordering, and nothing starts after it.
function Armed:stabilize()
  if self.gst then return end
  self.gst = true
  self.event("gst", {})
  self.network:stabilize()
  if self.hooks.gst then self.hooks.gst() end
end

--- Tells the schedule that node reached a protocol point: point is
-- "finalized" (value: the rank), "attempt" (value: the attempt), "state"
-- (value: the state's name) or "write" (value: the count), rank the rank
-- it is deciding. Faults waiting for it start now; a crash at a write is
-- told to hooks.crash at once (hooks.frozen(name, fault)), so that the
-- write is never synced.
function Armed:reached(node, point, value, rank)
  local waiting = self.waiting
  if #waiting == 0 then return end
  local i = 1
  while i <= #waiting do
    local fault = waiting[i]
    local when = fault.when
    if (when.node == nil or when.node == node) and when[point] == value
      and (when.rank == nil or when.rank == rank) then
      table.remove(waiting, i)
      if not self.gst then
        if point == "write" and fault.kind == "crash" and self.hooks.frozen then
          self.hooks.frozen(node, fault)
        end
        self:start_at(fault, self.network.world:now())
      end
    else
      i = i + 1
    end
  end
end

return faults
