--- The real network: TCP between the nodes of a cluster on libuv's loop
-- (luv, the loop csm.loop() runs on), with the lab network's interface, so
-- a protocol runs on it unchanged:
--
--     local t = transport.new { name = "n01", key = key, config = cfg }
--     assert(t:start())
--     local endpoint = t:join("n01", function(from, msg) ... end)
--     endpoint:publish(msg)        -- to every other node
--     endpoint:send("n02", msg)
--
-- Each node dials every other node and sends its messages on the
-- connection it dialled; it reads what others send on the connections they
-- dialled. Every connection is authenticated and encrypted
-- (csm.node.secret: a peer whose key is not the configured one is
-- refused), every message is a frame of the canonical codec (csm.codec).
-- Both ends send a heartbeat when they have sent nothing for
-- `heartbeat` seconds, and close a connection that was silent for
-- `dead_after`. A lost connection is dialled again after a back-off that
-- doubles up to `backoff_max`, with jitter. What a node cannot send — its
-- peer is down and `queue` messages wait, or the kernel holds `write_max`
-- bytes unsent — is dropped and counted: the protocol re-sends what
-- matters. Reads pause for the rest of a loop turn once a connection
-- delivered `budget` messages in it, so one flooding peer cannot starve
-- the timers. At most `pending` connections may be authenticating at once
-- and each has `handshake_timeout` seconds to do it.
--
-- As on the lab's network, `transport.stats` counts what was sent,
-- delivered and dropped (and refusals by reason), and `transport.observer`,
-- when set, is called as observer(what, from, to, msg [, why]) for each
-- "send", "deliver" and "drop".
-- @module csm.node.transport

local uv = require "luv"
local check = require "csm.check"
local codec = require "csm.codec"
local secret = require "csm.node.secret"

local transport = {}

--- The defaults of transport.new's limits (seconds, counts, bytes).
transport.defaults = {
  heartbeat = 0.5, dead_after = 2, backoff_min = 0.05, backoff_max = 2, handshake_timeout = 5,
  pending = 64, queue = 1024, write_max = 4 * 1024 * 1024, budget = 256,
}

local Transport = {}
Transport.__index = Transport

local Endpoint = {}
Endpoint.__index = Endpoint

local function now()
  return uv.now() / 1000
end

-- Counts a refusal by reason.
local function refused(self, reason, peer)
  local r = self.stats.refused
  r[reason] = (r[reason] or 0) + 1
  if self.log then self.log("refused", { reason = reason, peer = peer }) end
end

-- Runs fn(...) and logs what it raised instead of letting it unwind
-- through libuv.
local function guarded(self, where, fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then
    self.stats.errors = self.stats.errors + 1
    if self.log then self.log("error", { where = where, error = tostring(err) }) end
  end
end

local function close_handle(h)
  if h and not h:is_closing() then h:close() end
end

--- A transport for node name of the configuration cfg (csm.node.config),
-- speaking with key (csm.node.keys). options: name, key, config, log
-- (fn(event, fields): "peer_up" { peer, dir }, "peer_down" { peer, dir,
-- reason }, "refused" { reason, peer }, "error" { where, error }), limits
-- (any of transport.defaults).
function transport.new(options)
  options = check.options("transport.new", options, { name = true, key = true, config = true, log = true,
    limits = true })
  local cfg = options.config
  if type(cfg) ~= "table" or type(cfg.by_name) ~= "table" then
    check.argerror("transport.new", 1, "config", "checked configuration expected (csm.node.config)", cfg)
  end
  if type(options.name) ~= "string" or not cfg.by_name[options.name] then
    check.argerror("transport.new", 1, "name", "a node of the configuration expected", options.name)
  end
  local key = options.key
  if type(key) ~= "table" or type(key.public) ~= "string" or type(key.secret) ~= "string" then
    check.argerror("transport.new", 1, "key", "key expected (csm.node.keys)", key)
  end
  check.type("transport.new", "log", options.log, "function", true)
  local limits = {}
  for k, v in pairs(transport.defaults) do limits[k] = v end
  for k, v in pairs(check.options("transport.new", options.limits, transport.defaults, true) or {}) do
    if type(v) ~= "number" or not (v > 0) then
      check.argerror("transport.new", 1, "limits." .. k, "positive number expected", v)
    end
    limits[k] = v
  end
  local self = setmetatable({
    name = options.name, key = key, config = cfg, log = options.log, limits = limits,
    peers = {}, out = {}, inbound = {}, pending = {}, npending = 0, handler = nil, paused = {},
    closed = false,
    stats = { sent = 0, delivered = 0, dropped = 0, refused = {}, errors = 0, handshakes = 0,
              connects = 0, paused = 0 },
    observer = nil,
  }, Transport)
  for _, n in ipairs(cfg.nodes) do
    if n.name ~= self.name then self.peers[#self.peers + 1] = n end
  end
  return self
end

--- The node names of the configuration, in its order.
function Transport:nodes()
  return self.config.names
end

local function known(self)
  return function(pk)
    local name = self.config.by_key[pk]
    if name == self.name then return nil end
    return name
  end
end

local function handshake(self, expect)
  return secret.handshake { public = self.key.public, secret = self.key.secret,
    fingerprint = self.config.fingerprint, expect = expect, known = known(self) }
end

-- ---------------------------------------------------------------- connections
-- A connection: { tcp, dir = "out" | "in", peer (name, once known), hs,
-- session, received (time), sent (time), turn (messages this loop turn),
-- deadline (timer while authenticating) }.

local schedule_dial

local function conn_close(self, c, reason)
  if c.closed then return end
  c.closed = true
  close_handle(c.deadline)
  close_handle(c.tcp)
  if c.hs and not c.session then
    self.pending[c] = nil
    self.npending = self.npending - 1
  end
  local up = c.session ~= nil
  if c.dir == "out" then
    local o = self.out[c.peer]
    if o.conn == c then
      o.conn = nil
      if up and self.log then self.log("peer_down", { peer = c.peer, dir = "out", reason = reason }) end
      if not self.closed then schedule_dial(self, o) end
    end
  elseif c.peer and self.inbound[c.peer] == c then
    self.inbound[c.peer] = nil
    if self.log then self.log("peer_down", { peer = c.peer, dir = "in", reason = reason }) end
  end
end

local function write(self, c, bytes)
  c.sent = now()
  c.tcp:write(bytes, function(err)
    if err then conn_close(self, c, "write: " .. tostring(err)) end
  end)
end

-- Sends what waits for peer o on its connection.
local function drain(self, o)
  local c = o.conn
  local q = o.queue
  for i = o.head, o.tail - 1 do
    write(self, c, c.session:seal(q[i]))
    q[i] = nil
    self.stats.sent = self.stats.sent + 1
  end
  o.head, o.tail = 1, 1
end

local function deliver(self, c, plain)
  c.received = now()
  if plain == "" then return end -- a heartbeat
  local msg, why, code = codec.decode(plain)
  if msg == nil or type(msg) ~= "table" then
    refused(self, "codec: " .. tostring(code or "not a table"), c.peer)
    return why
  end
  self.stats.delivered = self.stats.delivered + 1
  if self.observer then self.observer("deliver", c.peer, self.name, msg) end
  if self.handler then guarded(self, "handler", self.handler, c.peer, msg) end
end

local function authenticated(self, c)
  c.session = c.hs:session()
  self.pending[c] = nil
  self.npending = self.npending - 1
  close_handle(c.deadline)
  c.deadline = nil
  self.stats.handshakes = self.stats.handshakes + 1
  local peer = c.hs.peer.name
  if c.dir == "out" then
    local o = self.out[c.peer]
    o.failures = 0
    if self.log then self.log("peer_up", { peer = peer, dir = "out" }) end
    drain(self, o)
  else
    c.peer = peer
    local old = self.inbound[peer]
    self.inbound[peer] = c
    if old then conn_close(self, old, "replaced") end
    if self.log then self.log("peer_up", { peer = peer, dir = "in" }) end
  end
end

local function on_read(self, c, err, chunk)
  if c.closed then return end
  if err or chunk == nil then return conn_close(self, c, err and tostring(err) or "closed by peer") end
  if not c.session then
    local out, status, code = c.hs:feed(chunk)
    if out == nil then
      refused(self, "handshake: " .. tostring(code), c.peer)
      return conn_close(self, c, "handshake: " .. tostring(status))
    end
    if out ~= "" then write(self, c, out) end
    if status ~= "done" then return end
    authenticated(self, c)
    chunk = ""
  end
  local list, why, code = c.session:feed(chunk)
  if list == nil then
    refused(self, "frame: " .. tostring(code), c.peer)
    return conn_close(self, c, "frame: " .. tostring(why))
  end
  for i = 1, #list do deliver(self, c, list[i]) end
  c.turn = c.turn + #list
  if c.turn >= self.limits.budget and not c.closed then
    self.stats.paused = self.stats.paused + 1
    c.tcp:read_stop()
    self.paused[#self.paused + 1] = c
  end
end

local function start_connection(self, c, expect)
  c.turn, c.received, c.sent = 0, now(), now()
  c.tcp:nodelay(true)
  c.hs = handshake(self, expect)
  self.pending[c] = true
  self.npending = self.npending + 1
  c.deadline = uv.new_timer()
  c.deadline:start(math.floor(self.limits.handshake_timeout * 1000), 0, function()
    refused(self, "handshake: deadline", c.peer)
    conn_close(self, c, "handshake deadline")
  end)
  write(self, c, c.hs:start())
  c.read = function(err, chunk) guarded(self, "read", on_read, self, c, err, chunk) end
  c.tcp:read_start(c.read)
end

local function dial(self, o)
  o.timer_armed = false
  if self.closed or o.conn then return end
  local tcp = uv.new_tcp()
  local c = { tcp = tcp, dir = "out", peer = o.node.name }
  o.conn = c
  self.stats.connects = self.stats.connects + 1
  local ok, err = tcp:connect(o.ip, o.node.port, function(cerr)
    guarded(self, "connect", function()
      if c.closed then return end
      if cerr then return conn_close(self, c, "connect: " .. tostring(cerr)) end
      start_connection(self, c, o.node.public)
    end)
  end)
  if not ok then conn_close(self, c, "connect: " .. tostring(err)) end
end

schedule_dial = function(self, o)
  if o.timer_armed then return end
  o.failures = (o.failures or 0) + 1
  local delay = math.min(self.limits.backoff_max, self.limits.backoff_min * 2 ^ (o.failures - 1))
  delay = delay * (0.5 + 0.5 * math.random())
  o.timer_armed = true
  o.timer:start(math.floor(delay * 1000), 0, function() guarded(self, "dial", dial, self, o) end)
end

local function accept(self)
  local tcp = uv.new_tcp()
  if not self.server:accept(tcp) then
    close_handle(tcp)
    return
  end
  if self.npending >= self.limits.pending then
    refused(self, "handshake: too many pending")
    close_handle(tcp)
    return
  end
  start_connection(self, { tcp = tcp, dir = "in" }, nil)
end

-- Every heartbeat: a heartbeat frame on each connection that sent nothing
-- for that long, and silent connections closed.
local function beat(self)
  local t, hb, dead = now(), self.limits.heartbeat, self.limits.dead_after
  local function visit(c)
    if c.closed or not c.session then return end
    if t - c.received > dead then return conn_close(self, c, "silent for " .. dead .. " s") end
    if t - c.sent >= hb * 0.9 then write(self, c, c.session:seal("")) end
  end
  for _, o in pairs(self.out) do if o.conn then visit(o.conn) end end
  local list = {}
  for _, c in pairs(self.inbound) do list[#list + 1] = c end
  for _, c in ipairs(list) do visit(c) end
end

--- Listens on this node's address and dials every peer. Returns true, or
-- nil, message, code ("address": the address cannot be resolved or
-- listened on).
function Transport:start()
  if self.closed then return nil, "transport: closed", "closed" end
  local me = self.config.by_name[self.name]
  local function resolve(node)
    local res = uv.getaddrinfo(node.host, nil, { socktype = "stream", family = "inet" })
      or uv.getaddrinfo(node.host, nil, { socktype = "stream" })
    if not res or not res[1] then return nil end
    return res[1].addr
  end
  local ip = resolve(me)
  if not ip then return nil, "cannot resolve " .. me.host, "address" end
  self.server = uv.new_tcp()
  local ok, err = self.server:bind(ip, me.port)
  if ok then
    ok, err = self.server:listen(128, function(lerr)
      if lerr then return end
      guarded(self, "accept", accept, self)
    end)
  end
  if not ok then
    close_handle(self.server)
    return nil, string.format("cannot listen on %s: %s", me.address, tostring(err)), "address"
  end
  for _, node in ipairs(self.peers) do
    local pip = resolve(node)
    if not pip then
      self:close()
      return nil, "cannot resolve " .. node.host .. " (" .. node.name .. ")", "address"
    end
    self.out[node.name] = { node = node, ip = pip, queue = {}, head = 1, tail = 1, failures = 0,
                            timer = uv.new_timer() }
  end
  -- a write to a closed socket must not kill the process
  self.sigpipe = uv.new_signal()
  self.sigpipe:start("sigpipe", function() end)
  self.sigpipe:unref()
  self.beat = uv.new_timer()
  self.beat:start(math.floor(self.limits.heartbeat * 1000), math.floor(self.limits.heartbeat * 1000),
    function() guarded(self, "heartbeat", beat, self) end)
  -- the read budget is per loop turn: paused reads resume in the next one
  self.turns = uv.new_check()
  self.turns:start(function()
    local paused = self.paused
    if #paused == 0 then
      for _, o in pairs(self.out) do if o.conn then o.conn.turn = 0 end end
      for _, c in pairs(self.inbound) do c.turn = 0 end
      return
    end
    self.paused = {}
    for _, c in ipairs(paused) do
      c.turn = 0
      if not c.closed then c.tcp:read_start(c.read) end
    end
  end)
  for _, o in pairs(self.out) do dial(self, o) end
  return true
end

local function dropped(self, o, msg, why)
  self.stats.dropped = self.stats.dropped + 1
  if self.observer then self.observer("drop", self.name, o.node.name, msg, why) end
end

-- Queues the encoded message bytes for peer o, or sends them at once.
local function post(self, o, bytes, msg)
  local c = o.conn
  if self.observer then self.observer("send", self.name, o.node.name, msg) end
  if c and c.session then
    if c.tcp:get_write_queue_size() > self.limits.write_max then return dropped(self, o, msg, "write_max") end
    write(self, c, c.session:seal(bytes))
    self.stats.sent = self.stats.sent + 1
    return
  end
  if o.tail - o.head >= self.limits.queue then return dropped(self, o, msg, "queue") end
  o.queue[o.tail] = bytes
  o.tail = o.tail + 1
end

local function encode(fname, msg)
  local bytes, why = codec.encode(msg)
  if bytes == nil then
    error(string.format("%s: bad argument #1 'msg' (%s; a message is plain data the codec encodes)", fname,
      tostring(why)), 3)
  end
  return bytes
end

--- Adds this node's handler(from, msg) for what peers send; returns the
-- endpoint through which it sends as itself.
function Transport:join(name, handler)
  if name ~= self.name then
    check.argerror("transport:join", 1, "name", "this transport's node (" .. self.name .. ") expected", name)
  end
  if type(handler) ~= "function" then
    check.argerror("transport:join", 2, "handler", "function expected", handler)
  end
  self.handler = handler
  return setmetatable({ name = name, transport = self }, Endpoint)
end

--- Sends msg to node to (a name not in the configuration: dropped and
-- counted).
function Endpoint:send(to, msg)
  local t = self.transport
  local bytes = encode("endpoint:send", msg)
  local o = t.out[to]
  if not o then
    t.stats.dropped = t.stats.dropped + 1
    return
  end
  post(t, o, bytes, msg)
end

--- Sends msg to every other node.
function Endpoint:publish(msg)
  local t = self.transport
  local bytes = encode("endpoint:publish", msg)
  for _, node in ipairs(t.peers) do post(t, t.out[node.name], bytes, msg) end
end

--- The configuration's node names.
function Endpoint:nodes()
  return self.transport.config.names
end

--- The peers whose connection this node dialled is up, by name (true).
function Transport:up()
  local out = {}
  for name, o in pairs(self.out) do
    if o.conn and o.conn.session then out[name] = true end
  end
  return out
end

--- Stops listening and closes every connection and timer (idempotent).
function Transport:close()
  if self.closed then return end
  self.closed = true
  for _, o in pairs(self.out) do
    if o.conn then conn_close(self, o.conn, "closing") end
    close_handle(o.timer)
  end
  for c in pairs(self.pending) do conn_close(self, c, "closing") end
  local list = {}
  for _, c in pairs(self.inbound) do list[#list + 1] = c end
  for _, c in ipairs(list) do conn_close(self, c, "closing") end
  close_handle(self.server)
  close_handle(self.beat)
  close_handle(self.turns)
  close_handle(self.sigpipe)
end

return transport
