--- A cluster's configuration: what every node of a real cluster agrees on
-- (its name, the protocol and its version, the timing, and each node's
-- name, Ed25519 public key and address), read from JSON and checked. Its
-- fingerprint, a hash of its canonical encoding, binds every connection's
-- handshake and every data directory to this one configuration.
--
--     {
--       "cluster": "demo",
--       "protocol": "reference/1",
--       "timing": { "scale": 1 },
--       "nodes": [
--         { "name": "n01", "public": "<64 hex digits>", "address": "127.0.0.1:7001" },
--         ...
--       ]
--     }
--
-- `timing` is optional: `scale` multiplies the reference protocol's
-- timeouts (csm.new's `timing.scale`), `view_timeout` and `sync_wait`
-- (seconds) set those of the protocol directly.
-- @module csm.node.config

local check = require "csm.check"
local codec = require "csm.codec"
local keys = require "csm.node.keys"
local core = require "csm.core"

local config = {}

--- The protocols a configuration may name, with their versions.
config.protocols = { ["reference/1"] = "csm.protocols.reference" }

local TOP = { cluster = true, protocol = true, timing = true, nodes = true }
local NODE = { name = true, public = true, address = true }
local TIMING = { scale = true, view_timeout = true, sync_wait = true }
local MAX_NODES = 256

local function refuse(fmt, ...)
  return nil, string.format(fmt, ...), "config"
end

-- host and port of "host:port" (an IPv4 address or a name, or [IPv6]).
local function address(text)
  if type(text) ~= "string" then return nil end
  local host, port = text:match("^%[([%x:]+)%]:(%d+)$")
  if not host then host, port = text:match("^([%w%.%-]+):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 or port % 1 ~= 0 then return nil end
  return host, port
end

local function positive(x)
  return type(x) == "number" and x > 0 and x < math.huge
end

--- Checks a decoded configuration t. Returns the configuration (a new
-- table: cluster, protocol, timing, nodes = { {name, public (32 bytes),
-- address, host, port}, ... }, names, by_name, fingerprint (32 bytes)), or
-- nil, message, "config".
function config.check(t)
  if type(t) ~= "table" then return refuse("the configuration is not a JSON object") end
  for k in pairs(t) do
    if not TOP[k] then
      return refuse("unknown field '%s' (fields: cluster, protocol, timing, nodes)", tostring(k))
    end
  end
  if type(t.cluster) ~= "string" or t.cluster == "" or #t.cluster > 64 then
    return refuse("'cluster': a name of 1 to 64 characters expected")
  end
  if not config.protocols[t.protocol] then
    local known = {}
    for name in pairs(config.protocols) do known[#known + 1] = name end
    table.sort(known)
    return refuse("'protocol': %s is not known (known: %s)", tostring(t.protocol), table.concat(known, ", "))
  end
  local timing = {}
  if t.timing ~= nil then
    if type(t.timing) ~= "table" then return refuse("'timing': an object expected") end
    for k, v in pairs(t.timing) do
      if not TIMING[k] then
        return refuse("'timing': unknown field '%s' (fields: scale, view_timeout, sync_wait)", tostring(k))
      end
      if not positive(v) then return refuse("'timing.%s': a positive number expected", k) end
      timing[k] = v
    end
  end
  if type(t.nodes) ~= "table" or #t.nodes == 0 then return refuse("'nodes': a list of nodes expected") end
  if #t.nodes > MAX_NODES then return refuse("'nodes': at most %d nodes", MAX_NODES) end
  local out = { cluster = t.cluster, protocol = t.protocol, timing = timing, nodes = {}, names = {},
                by_name = {}, by_key = {} }
  local addresses = {}
  for i, n in ipairs(t.nodes) do
    local where = string.format("'nodes[%d]'", i)
    if type(n) ~= "table" then return refuse("%s: an object expected", where) end
    for k in pairs(n) do
      if not NODE[k] then
        return refuse("%s: unknown field '%s' (fields: name, public, address)", where, tostring(k))
      end
    end
    if type(n.name) ~= "string" or not n.name:match("^[%w_%-%.]+$") or #n.name > 64 then
      return refuse("%s: 'name': 1 to 64 letters, digits, '_', '-' or '.' expected", where)
    end
    if out.by_name[n.name] then return refuse("%s: the name %s is taken by another node", where, n.name) end
    local public = type(n.public) == "string" and #n.public == 64 and keys.unhex(n.public)
    if not public then return refuse("%s (%s): 'public': 64 hex digits expected", where, n.name) end
    if out.by_key[public] then
      return refuse("%s (%s): the public key is %s's too", where, n.name, out.by_key[public])
    end
    local host, port = address(n.address)
    if not host then return refuse("%s (%s): 'address': host:port expected", where, n.name) end
    if addresses[n.address] then
      return refuse("%s (%s): the address %s is %s's too", where, n.name, n.address, addresses[n.address])
    end
    addresses[n.address] = n.name
    local node = { name = n.name, public = public, address = n.address, host = host, port = port }
    out.nodes[i], out.names[i], out.by_name[n.name], out.by_key[public] = node, n.name, node, n.name
  end
  -- the fingerprint: a hash of the canonical encoding of what was checked
  local list = {}
  for i, n in ipairs(out.nodes) do list[i] = { n.name, n.public, n.address } end
  local bytes = assert(codec.encode { "csm-cluster", out.cluster, out.protocol, timing, list })
  out.fingerprint = core.sodium.hash(bytes, nil, 32)
  return out
end

--- Reads and checks the configuration in the JSON file path. Returns it
-- (config.check), or nil, message, "config".
function config.read(path)
  if type(path) ~= "string" then check.argerror("config.read", 1, "path", "string expected", path) end
  local fh, err = io.open(path, "rb")
  if not fh then return refuse("cannot read %s", tostring(err)) end
  local text = fh:read(1024 * 1024 + 1) or ""
  fh:close()
  if #text > 1024 * 1024 then return refuse("%s: larger than 1 MiB", path) end
  local cjson = require("cjson.safe").new()
  local t, why = cjson.decode(text)
  if t == nil then return refuse("%s: not JSON (%s)", path, tostring(why)) end
  local c, msg, code = config.check(t)
  if not c then return nil, path .. ": " .. msg, code end
  return c
end

--- The configuration's JSON text for nodes (a list of { name, public
-- (32 bytes), address }), with the cluster's name and timing.
function config.json(cluster, nodes, timing)
  local cjson = require("cjson").new()
  local list = {}
  for i, n in ipairs(nodes) do
    list[i] = string.format('    { "name": %s, "public": "%s", "address": %s }', cjson.encode(n.name),
      keys.hex(n.public), cjson.encode(n.address))
  end
  local t = {}
  for k, v in pairs(timing or {}) do t[#t + 1] = string.format("%s: %s", cjson.encode(k), cjson.encode(v)) end
  table.sort(t)
  return string.format('{\n  "cluster": %s,\n  "protocol": "reference/1",\n  "timing": { %s },\n'
    .. '  "nodes": [\n%s\n  ]\n}\n', cjson.encode(cluster), table.concat(t, ", "), table.concat(list, ",\n"))
end

return config
