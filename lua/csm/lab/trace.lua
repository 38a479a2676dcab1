--- The lab's trace: every message sent and delivered, every transition and
-- every finalization of a run, as JSON lines with a fixed field order and
-- fixed number formats, so the same seed gives the same bytes.
--
--     {"t":0.010123,"kind":"deliver","node":"n01","to":"n02","message":"prevote","rank":1}
-- @module csm.lab.trace

local check = require "csm.check"

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
-- values are left out): integers as integers, other numbers with six
-- decimals.
function trace.line(fields)
  local parts = {}
  for i = 1, #fields, 2 do
    local k, v = fields[i], fields[i + 1]
    if v ~= nil then
      local text
      if type(v) == "number" then
        text = v % 1 == 0 and string.format("%d", v) or string.format("%.6f", v)
      else
        text = json_string(v)
      end
      parts[#parts + 1] = json_string(k) .. ":" .. text
    end
  end
  return "{" .. table.concat(parts, ",") .. "}\n"
end

local line = trace.line

--- Opens a trace file at path for a run on world. Returns the trace, or
-- nil, message, "io" when the file cannot be written.
function trace.open(path, world)
  if type(path) ~= "string" then check.argerror("trace.open", 1, "path", "string expected", path) end
  if not check.is_world(world, true) then
    check.argerror("trace.open", 2, "world", "csm loop expected", world)
  end
  local file, err = io.open(path, "w")
  if not file then return nil, "cannot write the trace: " .. tostring(err), "io" end
  return setmetatable({ file = file, world = world }, Trace)
end

--- A trace being written (trace.open).
-- @type Trace

--- A message event: what is "send" or "deliver".
function Trace:message(what, from, to, msg, rank)
  self.file:write(line { "t", self.world:now(), "kind", what, "node", from, "to", to,
    "message", msg.kind, "rank", rank })
end

--- A node finalized identity at rank.
function Trace:finalize(node, rank, identity)
  self.file:write(line { "t", self.world:now(), "kind", "finalize", "node", node, "rank", rank,
    "identity", identity })
end

--- A node's machine took a transition while deciding rank.
function Trace:transition(node, from, event, to, rank)
  self.file:write(line { "t", self.world:now(), "kind", "transition", "node", node,
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
