--- The lab's simulated pub/sub network on a sim world.
--
--     local net = require "csm.lab.net"
--     local network = net.new(world, { latency = 0.01, jitter = 0.005, loss = 0.05 })
--     network:join("a", function(from, msg) ... end)
--     network:publish("a", msg)        -- to every other node, never to "a"
--     network:send("a", "b", msg)
--
-- Per-link latency and jitter, loss, duplication and reordering; partitions
-- and healing; crash and restart. Every random draw comes from the world's
-- generator, so a run is a function of the world's seed. Messages in flight
-- are delivered by (delivery time, sending order) behind a single world
-- timer: one bucket per delivery time holds its messages in sending order,
-- and a heap orders the times.
-- @module csm.lab.net

local check = require "csm.check"

local net = {}
local Network = {}
Network.__index = Network

local fail, argerror = check.fail, check.argerror
local type, ipairs, pairs, tostring = type, ipairs, pairs, tostring

local DEFAULTS = { latency = 0, jitter = 0, loss = 0, duplicate = 0, reorder = 0, reorder_delay = 0 }

--- The names of a network's n nodes, in order: n01, n02, ... (three digits
-- from 100 nodes on, and so on, so that names sort as they are numbered).
function net.names(n)
  if not check.is_integer(n) or n < 0 then argerror("net.names", 1, "n", "integer >= 0 expected", n) end
  local width = math.max(2, #string.format("%d", n))
  local out = {}
  for i = 1, n do out[i] = string.format("n%0" .. width .. "d", i) end
  return out
end

local function check_params(fname, p, n)
  if type(p) ~= "table" then argerror(fname, n, "params", "table expected", p) end
  for k, v in pairs(p) do
    if DEFAULTS[k] == nil then fail("%s: unknown parameter '%s'", fname, tostring(k)) end
    if type(v) ~= "number" or not (v >= 0) or v == math.huge then
      fail("%s: parameter '%s' must be a finite number >= 0 (got %s)", fname, k, check.show(v))
    end
    if (k == "loss" or k == "duplicate" or k == "reorder") and v > 1 then
      fail("%s: parameter '%s' is a probability (got %s)", fname, k, tostring(v))
    end
  end
end

-- Raises unless name is a joined node's (argument n of fname).
local function check_node(self, fname, n, argname, name)
  if type(name) ~= "string" or self.handlers[name] == nil then
    if type(name) == "string" then
      fail("%s: bad argument #%d '%s' (unknown node '%s')", fname, n, argname, name)
    end
    argerror(fname, n, argname, "a joined node's name expected", name)
  end
end

--- A network on world. params: latency (s), jitter (s, uniform extra),
-- loss, duplicate, reorder (probabilities), reorder_delay (s, the most a
-- reordered message is held back; default 4 x (latency + jitter)).
function net.new(world, params)
  if not check.is_world(world) then argerror("net.new", 1, "world", "csm sim world expected", world) end
  params = params or {}
  check_params("net.new", params, 2)
  local p = {}
  for k, v in pairs(DEFAULTS) do p[k] = params[k] or v end
  if params.reorder_delay == nil then p.reorder_delay = 4 * (p.latency + p.jitter) end
  return setmetatable({
    world = world, params = p, links = {},
    names = {}, handlers = {}, down = {}, group = nil,
    times = {}, buckets = {}, flying = 0, timer = nil, nlinks = 0,
    stats = { sent = 0, delivered = 0, dropped = 0, duplicated = 0 },
  }, Network)
end

--- A network (net.new).
-- @type Network

--- Adds a node; handler(from, msg) gets what reaches it.
function Network:join(name, handler)
  if type(name) ~= "string" or name == "" then
    argerror("network:join", 1, "name", "non-empty string expected", name)
  end
  if type(handler) ~= "function" then argerror("network:join", 2, "handler", "function expected", handler) end
  if self.handlers[name] == nil then self.names[#self.names + 1] = name end
  self.handlers[name] = handler
  self.down[name] = nil
end

--- The joined node names, in joining order.
function Network:nodes()
  return self.names
end

--- Sets parameters for the link a <-> b (both directions).
function Network:link(a, b, params)
  check_node(self, "network:link", 1, "a", a)
  check_node(self, "network:link", 2, "b", b)
  check_params("network:link", params, 3)
  local p = {}
  for k, v in pairs(self.params) do p[k] = params[k] or v end
  local links = self.links
  links[a] = links[a] or {}
  links[b] = links[b] or {}
  if links[a][b] == nil then self.nlinks = self.nlinks + 1 end
  links[a][b], links[b][a] = p, p
end

--- Splits the network: nodes in different groups cannot reach each other;
-- nodes in no group form one more group together.
function Network:partition(groups)
  if type(groups) ~= "table" then
    argerror("network:partition", 1, "groups", "list of lists expected", groups)
  end
  local group = {}
  for i, g in ipairs(groups) do
    if type(g) ~= "table" then
      fail("network:partition: bad argument #1 'groups' (group %d is a %s, a list of names expected)", i,
        type(g))
    end
    for _, name in ipairs(g) do
      check_node(self, "network:partition", 1, "groups", name)
      if group[name] then
        fail("network:partition: bad argument #1 'groups' (node '%s' is in two groups)", name)
      end
      group[name] = i
    end
  end
  self.group = group
end

--- Ends every partition.
function Network:heal()
  self.group = nil
end

--- Whether a and b can reach each other now.
function Network:connected(a, b)
  check_node(self, "network:connected", 1, "a", a)
  check_node(self, "network:connected", 2, "b", b)
  local group = self.group
  if group == nil then return true end
  return (group[a] or 0) == (group[b] or 0)
end

--- Takes a node down: it sends and receives nothing until restart.
function Network:crash(name)
  check_node(self, "network:crash", 1, "name", name)
  self.down[name] = true
end

--- Brings a crashed node back: it sends and receives again.
function Network:restart(name)
  check_node(self, "network:restart", 1, "name", name)
  self.down[name] = nil
end

--- Whether the node is down.
function Network:is_down(name)
  check_node(self, "network:is_down", 1, "name", name)
  return self.down[name] == true
end

--- Runs fn at virtual time t (now if t has passed).
function Network:at(t, fn)
  if type(t) ~= "number" or t ~= t then argerror("network:at", 1, "t", "number expected", t) end
  if type(fn) ~= "function" then argerror("network:at", 2, "fn", "function expected", fn) end
  local delay = t - self.world:now()
  return self.world:after(delay > 0 and delay or 0, fn)
end

-- ---- messages in flight ----

-- A binary min-heap of delivery times.
local function push(heap, t)
  local i = #heap + 1
  heap[i] = t
  while i > 1 do
    local parent = (i - i % 2) / 2
    if heap[parent] <= t then break end
    heap[i], heap[parent] = heap[parent], t
    i = parent
  end
end

local function pop(heap)
  local n = #heap
  local last = heap[n]
  heap[n] = nil
  n = n - 1
  if n > 0 then
    local i = 1
    while true do
      local c = 2 * i
      if c > n then break end
      if c < n and heap[c + 1] < heap[c] then c = c + 1 end
      if last <= heap[c] then break end
      heap[i] = heap[c]
      i = c
    end
    heap[i] = last
  end
end

local function arm(self)
  local first = self.times[1]
  if first == nil then return end
  if self.timer and self.timer:active() then
    if self.armed_for <= first then return end
    self.timer:cancel()
  end
  self.armed_for = first
  self.timer = self:at(first, self.on_timer)
end

-- Delivers every message due by now; messages sent meanwhile for the same
-- time join the bucket being delivered, after the others.
local function deliver_due(self)
  local times, buckets, handlers, down, stats = self.times, self.buckets, self.handlers, self.down,
    self.stats
  local now = self.world:now()
  while times[1] ~= nil and times[1] <= now do
    local due = times[1]
    local bucket = buckets[due]
    local i = 1
    while i < bucket.n do
      local from, to, msg = bucket[i], bucket[i + 1], bucket[i + 2]
      i = i + 3
      self.flying = self.flying - 1
      local handler = handlers[to]
      local group = self.group
      if handler == nil or down[to] or down[from]
        or (group ~= nil and (group[from] or 0) ~= (group[to] or 0)) then
        stats.dropped = stats.dropped + 1
      else
        stats.delivered = stats.delivered + 1
        if self.observer then self.observer("deliver", from, to, msg) end
        handler(from, msg)
      end
    end
    buckets[due] = nil
    pop(times)
  end
  arm(self)
end

local function enqueue(self, from, to, msg, p, now)
  local random = self.world
  local due = now + p.latency
  if p.jitter > 0 then due = due + p.jitter * random:random() end
  if p.reorder > 0 and random:random() < p.reorder then
    due = due + p.reorder_delay * random:random()
  end
  local bucket = self.buckets[due]
  if bucket == nil then
    bucket = { n = 1 }
    self.buckets[due] = bucket
    push(self.times, due)
  end
  local n = bucket.n
  bucket[n], bucket[n + 1], bucket[n + 2] = from, to, msg
  bucket.n = n + 3
  self.flying = self.flying + 1
end

local function route(self, from, to, msg, now)
  local stats = self.stats
  stats.sent = stats.sent + 1
  if self.observer then self.observer("send", from, to, msg) end
  local p = self.params
  if self.nlinks > 0 then
    local mine = self.links[from]
    p = mine and mine[to] or p
  end
  local down, group = self.down, self.group
  if down[from] or down[to] or (group ~= nil and (group[from] or 0) ~= (group[to] or 0))
    or (p.loss > 0 and self.world:random() < p.loss) then
    stats.dropped = stats.dropped + 1
    return
  end
  enqueue(self, from, to, msg, p, now)
  if p.duplicate > 0 and self.world:random() < p.duplicate then
    stats.duplicated = stats.duplicated + 1
    enqueue(self, from, to, msg, p, now)
  end
end

local function flush(self)
  if self.on_timer == nil then
    self.on_timer = function() self.timer = nil; deliver_due(self) end
  end
  arm(self)
end

--- Sends msg from one node (a joined one) to another; a message to a name
-- nobody joined under is dropped and counted.
function Network:send(from, to, msg)
  if self.handlers[from] == nil then check_node(self, "network:send", 1, "from", from) end
  -- a name nobody joined under is an address with nobody there: dropped
  if type(to) ~= "string" then argerror("network:send", 2, "to", "node name expected", to) end
  if msg == nil then argerror("network:send", 3, "msg", "message expected", msg) end
  route(self, from, to, msg, self.world:now())
  flush(self)
end

--- Sends msg from a node to every other node, in joining order.
function Network:publish(from, msg)
  if self.handlers[from] == nil then check_node(self, "network:publish", 1, "from", from) end
  if msg == nil then argerror("network:publish", 2, "msg", "message expected", msg) end
  local now = self.world:now()
  for _, to in ipairs(self.names) do
    if to ~= from then route(self, from, to, msg, now) end
  end
  flush(self)
end

--- Messages waiting to be delivered.
function Network:in_flight()
  return self.flying
end

return net
