--- The lab's trace: a header (what made the run), then every message with
-- its id and its fate (sent, delivered, dropped and why, duplicated, still
-- in flight at the end), every transition, every finalization (identity and
-- digest) and the notes a protocol emits, as JSON lines with a fixed field
-- order and fixed number formats, so the same seed gives the same bytes.
--
--     {"kind":"header","config":{...},"csm":"csm 0.1.0",...}
--     {"t":0.010123,"kind":"deliver","id":7,"node":"n01","to":"n02","message":"prevote","rank":1,"attempt":0}
-- @module csm.lab.trace

local csm = require "csm"
local check = require "csm.check"
local fnv = require "csm.fnv"

local trace = {}
local Trace = {}
Trace.__index = Trace

-- lua-cjson escapes the strings; it is loaded only when a trace is written
local encode
local function json_string(s)
  encode = encode or require("cjson").encode
  return encode(s)
end

--- One JSON object from fields, a flat list of name, value pairs (nil
-- values are left out; fields.n, when set, is the list's length, since a
-- list with nil in it has no reliable # on every interpreter): integers as integers, other numbers with six
-- decimals, tables as canonical JSON (trace.json).
function trace.line(fields)
  local parts = {}
  for i = 1, fields.n or #fields, 2 do
    local k, v = fields[i], fields[i + 1]
    if v ~= nil then
      local text
      if type(v) == "number" then
        text = v % 1 == 0 and string.format("%d", v) or string.format("%.6f", v)
      elseif type(v) == "table" then
        text = trace.json(v)
      else
        text = json_string(v)
      end
      parts[#parts + 1] = json_string(k) .. ":" .. text
    end
  end
  return "{" .. table.concat(parts, ",") .. "}\n"
end

local line = trace.line

-- Canonical JSON of plain data into out: object keys sorted, a table with
-- keys 1..n (and no others) an array, integers as integers and other
-- numbers with 17 digits; csm values as { identity, rank }; functions and
-- other userdata as their type's name.
local function json(x, out)
  local t = type(x)
  if t == "string" then
    out[#out + 1] = json_string(x)
  elseif t == "number" then
    if x ~= x or x == math.huge or x == -math.huge then
      out[#out + 1] = json_string(tostring(x))
    else
      if x % 1 == 0 and math.abs(x) <= 2 ^ 53 then
        out[#out + 1] = string.format("%d", x)
      else
        -- the shortest of 15 to 17 digits that reads back as x
        local text = string.format("%.15g", x)
        if tonumber(text) ~= x then text = string.format("%.16g", x) end
        if tonumber(text) ~= x then text = string.format("%.17g", x) end
        out[#out + 1] = text
      end
    end
  elseif t == "boolean" then
    out[#out + 1] = tostring(x)
  elseif t == "nil" then
    out[#out + 1] = "null"
  elseif t == "table" then
    local n, keys = #x, {}
    for k in pairs(x) do keys[#keys + 1] = k end
    if #keys == n and n > 0 then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        json(x[i], out)
      end
      out[#out + 1] = "]"
      return
    end
    for i, k in ipairs(keys) do keys[i] = tostring(k) end
    table.sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = json_string(k) .. ":"
      local v = x[k]
      if v == nil then v = x[tonumber(k)] end
      json(v, out)
    end
    out[#out + 1] = "}"
  elseif csm.is_value(x) then
    json({ identity = x:identity(), rank = x:rank() }, out)
  else
    out[#out + 1] = json_string(t)
  end
end

--- A fingerprint of text (32-bit FNV-1a, as 8 hex digits): the header
-- names an adversary's source by it. It identifies; it does not protect.
function trace.fingerprint(text)
  if type(text) ~= "string" then check.argerror("trace.fingerprint", 1, "text", "string expected", text) end
  return "fnv1a32:" .. fnv.hex(text)
end

--- Canonical JSON text of plain data (object keys sorted): what the header
-- holds, the same bytes for the same data in every process.
function trace.json(x)
  local out = {}
  json(x, out)
  return table.concat(out)
end

--- Opens a trace file at path for a run on world and writes header (a
-- table of plain data, when given) as its first line, with "kind":
-- "header". Returns the trace, or nil, message, "io" when the file cannot
-- be written.
function trace.open(path, world, header)
  if type(path) ~= "string" then check.argerror("trace.open", 1, "path", "string expected", path) end
  if not check.is_world(world, true) then
    check.argerror("trace.open", 2, "world", "csm loop expected", world)
  end
  if header ~= nil and type(header) ~= "table" then
    check.argerror("trace.open", 3, "header", "table or nil expected", header)
  end
  local file, err = io.open(path, "w")
  if not file then return nil, "cannot write the trace: " .. tostring(err), "io" end
  if header then
    local h = {}
    for k, v in pairs(header) do h[k] = v end
    h.kind = nil
    local rest = trace.json(h)
    file:write('{"kind":"header"', rest == "{}" and "" or "," .. rest:sub(2, -2), "}\n")
  end
  return setmetatable({ file = file, world = world }, Trace)
end

--- A trace being written (trace.open).
-- @type Trace

--- A message event of copy id: what is "send", "deliver", "drop" (why
-- says why), "duplicate" or "in_flight" (at the end of the run); kind, rank
-- and attempt are the message's, as its protocol classifies it.
function Trace:message(what, id, from, to, kind, rank, attempt, why)
  self.file:write(line { n = 18, "t", self.world:now(), "kind", what, "id", id, "node", from, "to", to,
    "message", kind, "rank", rank, "attempt", attempt, "why", why })
end

--- A node finalized identity at rank; digest is what honest copies must
-- agree on.
function Trace:finalize(node, rank, identity, digest)
  self.file:write(line { n = 12, "t", self.world:now(), "kind", "finalize", "node", node, "rank", rank,
    "identity", identity, "digest", digest })
end

--- A note of a node's protocol (its kind, and plain-data fields).
function Trace:note(node, kind, fields)
  self.file:write(line { n = 10, "t", self.world:now(), "kind", "note", "node", node, "note", kind,
    "fields", fields or {} })
end

--- A line of any kind with plain-data fields (a fault, an adversary's
-- action).
function Trace:event(kind, fields)
  self.file:write(line { n = 6, "t", self.world:now(), "kind", kind, "fields", fields or {} })
end

--- A node's machine took a transition while deciding rank.
function Trace:transition(node, from, event, to, rank)
  self.file:write(line { n = 14, "t", self.world:now(), "kind", "transition", "node", node,
    "from", from, "event", event, "to", to, "rank", rank })
end

--- Closes the file. Returns true, or nil, message, "io" when what was
-- written did not reach it (a full disk, say).
function Trace:close()
  local file = self.file
  if not file then return true end
  self.file = nil
  local ok, err = file:flush()
  file:close()
  if not ok then return nil, "cannot write the trace: " .. tostring(err), "io" end
  return true
end

return trace
