--- The wire codec: messages to canonical bytes and back. A real node signs
-- and sends these bytes, and the lab's network carries every message
-- through them, so whatever runs in the lab can go between processes.
--
--     local codec = require "csm.codec"
--     local bytes = codec.encode { kind = "vote", value = csm.value("3.1:n01", 3) }
--     local msg, err, code = codec.decode(bytes)
--
-- The format is a subset of MessagePack with one form per message: nil,
-- booleans, integers in [-2^53, 2^53] (shortest form), numbers with a
-- fraction (float64), strings (as bin: any bytes), arrays (a table whose
-- keys are exactly 1..n; the empty table is the empty array), maps (string
-- or integer keys, sorted by their encoded bytes) and csm values
-- (extension 1: [identity, rank(, payload)]). Decoding refuses every byte
-- sequence encode would not produce, so `encode(decode(b)) == b` for every
-- b it accepts. See docs/codec.md.
-- @module csm.codec

local core = require "csm.core"

local codec = {}

--- The limits a frame keeps, on both sides: `frame` bytes (1 MiB), `depth`
-- nested tables (a csm value counts as one, its payload as one more) and
-- `objects` (every scalar, table and value, a value's identity and rank
-- counted too).
-- @table limits
codec.limits = { frame = core.codec_limits.frame, depth = core.codec_limits.depth,
                 objects = core.codec_limits.objects }

--- The bytes of x, or nil, a message naming the part that cannot be
-- encoded (`"msg.value.payload.f is a function"`) and a code: "type" (a
-- function, thread, userdata other than a csm value, or a table with a
-- metatable), "key" (a key that is not a string or an integer), "range"
-- (NaN, an infinity, an integer beyond 2^53), "depth" (nesting deeper than
-- limits.depth, or a cycle), "size" (beyond limits.frame bytes or
-- limits.objects objects). Raises only when called without an argument.
-- @function encode
-- @param x the message
-- @treturn string bytes
codec.encode = core.encode

--- The message bytes encode, or nil, "<reason> at byte N" (N from 0) and a
-- code: "truncated", "length" (a length or count beyond the bytes left),
-- "type" (a type not in the format: str, float32, other extensions...),
-- "canonical" (a form encode would not produce), "range", "key", "order"
-- (map keys unsorted or repeated), "value" (a malformed csm value),
-- "depth", "objects", "size" or "trailing". Raises unless bytes is a string.
-- @function decode
-- @tparam string bytes
codec.decode = core.decode

return codec
