--- The lab's simulated pub/sub network on a sim world.
--
--     local net = require "csm.lab.net"
--     local network = net.new(world, { latency = 0.01, jitter = 0.005, loss = 0.05 })
--     local a = network:join("a", function(from, msg) ... end)
--     a:publish(msg)                   -- to every other node, never to "a"
--     a:send("b", msg)
--
-- As on a wire, a message is plain data (nil, booleans, numbers, strings,
-- csm values, and tables of them with string or integer keys), encoded by
-- csm.codec when it is sent: every receiver gets its own copy, decoded
-- from those bytes, and what one receiver does to it reaches nobody else.
-- A node sends through the endpoint join gave it, so `from` is always the
-- true sender; net.new(world, params, { unauthenticated = true }) models
-- channels where anyone may claim to be anyone (network:send(from, ...)).
--
-- Per-link latency and jitter, loss, duplication and reordering; partitions
-- and healing; crash and restart. Every random draw comes from the world's
-- generator, so a run is a function of the world's seed. Messages in flight
-- are delivered by (delivery time, sending order) behind a single world
-- timer: one bucket per delivery time holds its messages in sending order,
-- and a heap orders the times.
-- @module csm.lab.net

local check = require "csm.check"
local codec = require "csm.codec"

local net = {}
local Network = {}
Network.__index = Network
local Endpoint = {}
Endpoint.__index = Endpoint

local fail, argerror = check.fail, check.argerror
local type, ipairs, pairs, tostring, getmetatable = type, ipairs, pairs, tostring, getmetatable
local encode, decode = codec.encode, codec.decode
local flush -- (below) arms the delivery timer for what is in flight

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

-- ---- messages as plain data ----

--- How deep a message's tables may nest: the codec's limit (a csm value
-- counts as one table, its table payload as one more).
net.max_depth = codec.limits.depth

-- The copy of msg that goes on the wire and its bytes; raises, naming
-- fname and argument n, unless msg is plain data.
local function wire_copy(fname, n, msg)
  if msg == nil then argerror(fname, n, "msg", "message expected", msg) end
  local bytes, why = encode(msg)
  if bytes == nil then
    fail("%s: bad argument #%d 'msg' (%s; a message is plain data: booleans, numbers, strings, csm "
      .. "values and tables of them, with string or integer keys)", fname, n, why)
  end
  return decode(bytes), bytes
end

--- A copy of msg as a receiver gets it (decoded from the bytes
-- csm.codec encodes it to), or nil and what makes msg not plain data (a
-- function, a userdata other than a csm value, a metatable, a key neither
-- a string nor an integer, NaN or an infinity, nesting deeper than
-- net.max_depth tables, or a cycle).
function net.copy(msg)
  local bytes, why = encode(msg)
  if bytes == nil then return nil, why end
  return decode(bytes)
end

--- A network on world. params: latency (s), jitter (s, uniform extra),
-- loss, duplicate, reorder (probabilities), reorder_delay (s, the most a
-- reordered message is held back; default 4 x (latency + jitter)).
-- options.unauthenticated: anyone may send as anyone (network:send and
-- network:publish take a sender); by default only endpoints send.
function net.new(world, params, options)
  if not check.is_world(world) then argerror("net.new", 1, "world", "csm sim world expected", world) end
  params = params or {}
  check_params("net.new", params, 2)
  options = check.options("net.new", options, { unauthenticated = true }, true)
  check.type("net.new", "unauthenticated", options.unauthenticated, "boolean", true)
  local p = {}
  for k, v in pairs(DEFAULTS) do p[k] = params[k] or v end
  if params.reorder_delay == nil then p.reorder_delay = 4 * (p.latency + p.jitter) end
  return setmetatable({
    world = world, params = p, links = {},
    names = {}, handlers = {}, down = {}, group = nil,
    times = {}, buckets = {}, flying = 0, timer = nil, nlinks = 0, next_id = 0,
    stats = { sent = 0, delivered = 0, dropped = 0, duplicated = 0 },
    unauthenticated = options.unauthenticated == true,
  }, Network)
end

--- A network (net.new).
-- @type Network

--- Adds a node (or gives a restarted one a new handler); handler(from,
-- msg) gets what reaches it. Returns the node's endpoint, through which it
-- sends as itself.
function Network:join(name, handler)
  if type(name) ~= "string" or name == "" then
    argerror("network:join", 1, "name", "non-empty string expected", name)
  end
  if type(handler) ~= "function" then argerror("network:join", 2, "handler", "function expected", handler) end
  if self.handlers[name] == nil then self.names[#self.names + 1] = name end
  self.handlers[name] = handler
  self.down[name] = nil
  return setmetatable({ name = name, network = self }, Endpoint)
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

--- Cuts the directed links of pairs (a list of { from, to } names): no
-- message passes from -> to until uncut. Cuts add up: a link is open again
-- when every cut of it has ended. Returns a token for uncut.
function Network:cut(pairs_list)
  if type(pairs_list) ~= "table" then
    argerror("network:cut", 1, "pairs", "list of { from, to } expected", pairs_list)
  end
  for i, p in ipairs(pairs_list) do
    if type(p) ~= "table" then
      fail("network:cut: bad argument #1 'pairs' (item %d is a %s, { from, to } expected)", i, type(p))
    end
    check_node(self, "network:cut", 1, "pairs", p[1])
    check_node(self, "network:cut", 1, "pairs", p[2])
  end
  local cuts = self.cuts or {}
  self.cuts = cuts
  for _, p in ipairs(pairs_list) do
    local mine = cuts[p[1]] or {}
    cuts[p[1]] = mine
    mine[p[2]] = (mine[p[2]] or 0) + 1
  end
  return { pairs = pairs_list }
end

--- Ends the cut a token stands for (once; a second time does nothing).
function Network:uncut(token)
  if type(token) ~= "table" or type(token.pairs) ~= "table" then
    argerror("network:uncut", 1, "token", "token of network:cut expected", token)
  end
  local cuts = self.cuts
  if token.done or cuts == nil then return end
  token.done = true
  for _, p in ipairs(token.pairs) do
    local mine = cuts[p[1]]
    if mine and mine[p[2]] then
      mine[p[2]] = mine[p[2]] > 1 and mine[p[2]] - 1 or nil
    end
  end
end

--- Ends every cut.
function Network:uncut_all()
  self.cuts = nil
end

--- Sets the link a <-> b to params (as network:link) until
-- link_window_end(token); returns the token.
function Network:link_window(a, b, params)
  local links = self.links
  local before = links[a] and links[a][b]
  self:link(a, b, params)
  return { a = a, b = b, before = before, params = links[a][b] }
end

--- Puts the link of a link_window token back as it was before, unless
-- something set it since.
function Network:link_window_end(token)
  local links = self.links
  local a, b = token.a, token.b
  if links[a] == nil or links[a][b] ~= token.params then return end
  if token.before then
    links[a][b], links[b][a] = token.before, token.before
  else
    links[a][b], links[b][a] = nil, nil
    self.nlinks = self.nlinks - 1
  end
end

--- Holds everything name sends or is sent as it arrives, until release:
-- then what was held is delivered, in order. Returns a token for release.
function Network:hold(name)
  check_node(self, "network:hold", 1, "name", name)
  local held = self.held or {}
  self.held = held
  held[name] = (held[name] or 0) + 1
  self.holding = self.holding or {}
  return { name = name }
end

--- Ends the hold of a token of network:hold; what the node no longer has
-- held is delivered now, in the order it arrived.
function Network:release(token)
  if type(token) ~= "table" or type(token.name) ~= "string" then
    argerror("network:release", 1, "token", "token of network:hold expected", token)
  end
  local held = self.held
  if token.done or held == nil or held[token.name] == nil then return end
  token.done = true
  held[token.name] = held[token.name] > 1 and held[token.name] - 1 or nil
  local keep, now = {}, self.world:now()
  for _, m in ipairs(self.holding) do
    if held[m[1]] or held[m[2]] then
      keep[#keep + 1] = m
    else
      self:requeue(m, now)
    end
  end
  self.holding = keep
  flush(self)
end

--- The global stabilization time: every partition, cut, link window and
-- hold ends, and the network stops losing, duplicating and reordering
-- messages (its latency and jitter stay).
function Network:stabilize()
  self.group, self.cuts = nil, nil
  self.links, self.nlinks = {}, 0
  local params = self.params
  params.loss, params.duplicate, params.reorder = 0, 0, 0
  if self.held then
    self.held = nil
    local now = self.world:now()
    for _, m in ipairs(self.holding or {}) do self:requeue(m, now) end
    self.holding = nil
    flush(self)
  end
end

-- The parameters of the link from -> to.
local function link_of(self, from, to)
  if self.nlinks > 0 then
    local mine = self.links[from]
    if mine and mine[to] then return mine[to] end
  end
  return self.params
end

-- Whether a partition or a cut keeps from's messages from reaching to.
local function separated(self, from, to)
  local group = self.group
  if group ~= nil and (group[from] or 0) ~= (group[to] or 0) then return true end
  local cuts = self.cuts
  if cuts ~= nil then
    local mine = cuts[from]
    if mine and (mine[to] or 0) > 0 then return true end
  end
  return false
end

--- Whether a and b can reach each other now, both ways (no partition or
-- cut between them; a node down is still connected).
function Network:connected(a, b)
  check_node(self, "network:connected", 1, "a", a)
  check_node(self, "network:connected", 2, "b", b)
  return not (separated(self, a, b) or separated(self, b, a))
end

--- Takes a node down: it sends and receives nothing until restart (what
-- it sent before is still delivered).
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

-- Why a message from -> to cannot pass now, or nil. At delivery
-- (arriving), a sender that crashed since does not matter: what it sent
-- before is on the wire.
local function blocked(self, from, to, arriving)
  local down = self.down
  if down[to] or (down[from] and not arriving) then return "down" end
  if separated(self, from, to) then return "partition" end
  return nil
end

local function observe(self, what, from, to, msg, id, why)
  local observer = self.observer
  if observer then observer(what, from, to, msg, id, why) end
end

-- Delivers every message due by now; messages sent meanwhile for the same
-- time join the bucket being delivered, after the others.
local function deliver_due(self)
  local times, buckets, handlers, stats = self.times, self.buckets, self.handlers, self.stats
  local now = self.world:now()
  while times[1] ~= nil and times[1] <= now do
    local due = times[1]
    local bucket = buckets[due]
    local i = 1
    while i < bucket.n do
      local from, to, msg, id = bucket[i], bucket[i + 1], bucket[i + 2], bucket[i + 3]
      i = i + 4
      self.flying = self.flying - 1
      local handler = handlers[to]
      local why = handler == nil and "no such node" or blocked(self, from, to, true)
      local held = self.held
      if why == nil and held ~= nil and (held[from] or held[to]) then
        local holding = self.holding
        holding[#holding + 1] = { from, to, msg, id }
      elseif why then
        stats.dropped = stats.dropped + 1
        observe(self, "drop", from, to, msg, id, why)
      else
        stats.delivered = stats.delivered + 1
        observe(self, "deliver", from, to, msg, id)
        handler(from, msg)
      end
    end
    buckets[due] = nil
    pop(times)
  end
  arm(self)
end

-- Puts a copy of msg (whose bytes are bytes) in flight, extra seconds
-- later than the link says.
local function enqueue(self, from, to, msg, bytes, p, now, id, extra)
  local random = self.world
  local due = now + p.latency + extra
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
  -- the first receiver gets the copy made at sending, the others decode
  -- the same bytes again
  if self.fresh == msg then self.fresh = nil else msg = decode(bytes) end
  bucket[n], bucket[n + 1], bucket[n + 2], bucket[n + 3] = from, to, msg, id
  bucket.n = n + 4
  self.flying = self.flying + 1
end

-- What the interceptor decided for a message: extra delay, extra copies
-- and a replacement, or false to drop it. Raises on a decision that is none.
local function intercept(self, from, to, msg, id)
  local decision = self.interceptor(id, from, to, msg)
  if decision == nil or decision == "pass" then return 0, 0, nil end
  if decision == "drop" then return false end
  if type(decision) ~= "table" then
    fail("network interceptor: decision must be nil, \"pass\", \"drop\" or a table (got %s)",
      check.show(decision))
  end
  local delay, copies = decision.delay or 0, decision.duplicate or 0
  if type(delay) ~= "number" or not (delay >= 0) or delay == math.huge then
    fail("network interceptor: delay must be a finite number >= 0 (got %s)", check.show(decision.delay))
  end
  if not check.is_integer(copies) or copies < 0 or copies > 1000 then
    fail("network interceptor: duplicate must be an integer in [0, 1000] (got %s)",
      check.show(decision.duplicate))
  end
  return delay, copies, decision.replace
end

local function route(self, from, to, msg, bytes, now)
  local stats = self.stats
  stats.sent = stats.sent + 1
  local id = self.next_id + 1
  self.next_id = id
  observe(self, "send", from, to, msg, id)
  -- a drop the schedule names (csm.lab.faults, kind "drop")
  if self.dropper and self.dropper(from, to, msg) then
    stats.dropped = stats.dropped + 1
    observe(self, "drop", from, to, msg, id, "schedule")
    return
  end
  local extra, copies = 0, 0
  if self.interceptor then
    local replace
    extra, copies, replace = intercept(self, from, to, msg, id)
    if extra == false then
      stats.dropped = stats.dropped + 1
      observe(self, "drop", from, to, msg, id, "adversary")
      return
    end
    if replace ~= nil then
      msg, bytes = wire_copy("network interceptor", 1, replace)
      self.fresh = msg
    end
  end
  local p = link_of(self, from, to)
  local why = blocked(self, from, to)
  if why == nil and p.loss > 0 and self.world:random() < p.loss then why = "loss" end
  if why then
    stats.dropped = stats.dropped + 1
    observe(self, "drop", from, to, msg, id, why)
    return
  end
  enqueue(self, from, to, msg, bytes, p, now, id, extra)
  if p.duplicate > 0 and self.world:random() < p.duplicate then copies = copies + 1 end
  for _ = 1, copies do
    stats.duplicated = stats.duplicated + 1
    observe(self, "duplicate", from, to, msg, id)
    enqueue(self, from, to, msg, bytes, p, now, id, extra)
  end
end

flush = function(self)
  self.fresh = nil
  if self.on_timer == nil then
    self.on_timer = function() self.timer = nil; deliver_due(self) end
  end
  arm(self)
end

local function send(self, fname, from, to, msg, n)
  if type(to) ~= "string" then argerror(fname, n, "to", "node name expected", to) end
  local bytes
  msg, bytes = wire_copy(fname, n + 1, msg)
  self.fresh = msg
  -- a name nobody joined under is an address with nobody there: dropped
  route(self, from, to, msg, bytes, self.world:now())
  flush(self)
end

local function publish(self, fname, from, msg, n)
  local bytes
  msg, bytes = wire_copy(fname, n, msg)
  self.fresh = msg
  local now = self.world:now()
  for _, to in ipairs(self.names) do
    if to ~= from then route(self, from, to, msg, bytes, now) end
  end
  flush(self)
end

local function check_unauthenticated(self, fname)
  if not self.unauthenticated then
    fail("%s: this network authenticates senders: a node sends through the endpoint network:join "
      .. "returned (net.new(world, params, { unauthenticated = true }) lets anyone claim any sender)", fname)
  end
end

--- On a network of unauthenticated channels only: sends msg as from (a
-- joined node) to another; a message to a name nobody joined under is
-- dropped and counted.
function Network:send(from, to, msg)
  check_unauthenticated(self, "network:send")
  if self.handlers[from] == nil then check_node(self, "network:send", 1, "from", from) end
  send(self, "network:send", from, to, msg, 2)
end

--- On a network of unauthenticated channels only: publishes msg as from.
function Network:publish(from, msg)
  check_unauthenticated(self, "network:publish")
  if self.handlers[from] == nil then check_node(self, "network:publish", 1, "from", from) end
  publish(self, "network:publish", from, msg, 2)
end

--- Messages waiting to be delivered (held ones included).
function Network:in_flight()
  return self.flying + (self.holding and #self.holding or 0)
end

-- Puts a held message ({ from, to, msg, id }) back in flight, due at t.
function Network:requeue(m, t)
  local bucket = self.buckets[t]
  if bucket == nil then
    bucket = { n = 1 }
    self.buckets[t] = bucket
    push(self.times, t)
  end
  local n = bucket.n
  bucket[n], bucket[n + 1], bucket[n + 2], bucket[n + 3] = m[1], m[2], m[3], m[4]
  bucket.n = n + 4
  self.flying = self.flying + 1
end

--- The messages in flight, in delivery order: a list of { id, from, to,
-- msg, due }.
function Network:pending()
  local times, out = {}, {}
  for t in pairs(self.buckets) do times[#times + 1] = t end
  table.sort(times)
  for _, t in ipairs(times) do
    local bucket = self.buckets[t]
    for i = 1, bucket.n - 1, 4 do
      out[#out + 1] = { id = bucket[i + 3], from = bucket[i], to = bucket[i + 1], msg = bucket[i + 2],
                        due = t }
    end
  end
  return out
end

--- Puts one more copy of message copy id (from -> to, msg) in flight now,
-- as the network would a duplicate sent late: traced as a duplicate of id,
-- and, like every copy, dropped on arrival if the nodes are apart or down.
function Network:replay(id, from, to, msg)
  if not check.is_integer(id) or id < 1 or id > self.next_id then
    argerror("network:replay", 1, "id", "id of a copy sent expected", id)
  end
  check_node(self, "network:replay", 2, "from", from)
  if type(to) ~= "string" then argerror("network:replay", 3, "to", "node name expected", to) end
  local bytes
  msg, bytes = wire_copy("network:replay", 4, msg)
  self.fresh = msg
  local p = link_of(self, from, to)
  self.stats.duplicated = self.stats.duplicated + 1
  observe(self, "duplicate", from, to, msg, id)
  enqueue(self, from, to, msg, bytes, p, self.world:now(), id, 0)
  flush(self)
end

--- Sets fn(id, from, to, msg) to decide the fate of every message sent
-- from now on (nil: none), before the network's own faults: it returns nil
-- or "pass", "drop", or a table { delay = extra seconds, duplicate = extra
-- copies, replace = another message } (any of them). msg is the copy on the
-- wire; id numbers the copies sent, from 1.
--- Sets fn(from, to, msg) -> boolean, which drops each copy it says true
-- for before anything else decides its fate (nil: none); the fault
-- schedule's named drops use it. The drop is observed with why "schedule".
function Network:drop_when(fn)
  if fn ~= nil and type(fn) ~= "function" then
    argerror("network:drop_when", 1, "fn", "function or nil expected", fn)
  end
  self.dropper = fn
end

function Network:intercept(fn)
  if fn ~= nil and type(fn) ~= "function" then
    argerror("network:intercept", 1, "fn", "function or nil expected", fn)
  end
  self.interceptor = fn
end

--- A node's endpoint on a network (network:join): it sends as that node.
-- @type Endpoint

local function check_endpoint(self, fname)
  if getmetatable(self) ~= Endpoint then check.selferror(fname, "network endpoint expected", self) end
end

--- Sends a copy of msg to node to; a message to a name nobody joined under
-- is dropped and counted.
function Endpoint:send(to, msg)
  check_endpoint(self, "endpoint:send")
  send(self.network, "endpoint:send", self.name, to, msg, 1)
end

--- Sends a copy of msg to every other node, in joining order.
function Endpoint:publish(msg)
  check_endpoint(self, "endpoint:publish")
  publish(self.network, "endpoint:publish", self.name, msg, 1)
end

--- The joined node names, in joining order.
function Endpoint:nodes()
  return self.network.names
end

return net
