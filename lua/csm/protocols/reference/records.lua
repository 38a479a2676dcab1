--- What a reference node writes to its store, and how it reads it back:
-- each record a list of fields, each field "<length>:<bytes>" (so any bytes
-- fit, and a record cut short is told from a whole one).
--
--     finalized  F rank id parent attempt offer cert_attempt data|"" voter sig ...
--     proposal   P rank offer id parent data|"" sig       (one this node offered)
--     prevote    V rank attempt id sig
--     vote       W rank attempt id parent sig
--     attempt    A rank attempt                          (this node moved there)
--     header     H name                                  (a new store's first)
-- @module csm.protocols.reference.records

local concat, sub, tostring = table.concat, string.sub, tostring

local records = {}

--- The bytes of a record of fields (strings and integers).
function records.encode(fields)
  local out = {}
  for i, f in ipairs(fields) do
    f = type(f) == "number" and string.format("%d", f) or tostring(f)
    out[i] = #f .. ":" .. f
  end
  return concat(out)
end

--- The fields of bytes (strings), or nil and why.
function records.decode(bytes)
  if type(bytes) ~= "string" then return nil, "not bytes" end
  local fields, pos = {}, 1
  while pos <= #bytes do
    local len, start = bytes:match("^(%d+):()", pos)
    if len == nil then return nil, "bad field at byte " .. pos end
    local n = tonumber(len)
    if start + n - 1 > #bytes then return nil, "field past the end at byte " .. pos end
    fields[#fields + 1] = sub(bytes, start, start + n - 1)
    pos = start + n
  end
  return fields
end

--- An integer field, or nil.
function records.int(f)
  local x = f and f:match("^%d+$") and tonumber(f)
  return x
end

return records
