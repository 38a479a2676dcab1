--- 32-bit FNV-1a, the same number on Lua 5.4 and LuaJIT: what the lab's
-- fingerprints, its simulated signer and the reference protocol's content
-- names are made of. It identifies; on its own it protects nothing.
-- @module csm.fnv

local byte = string.byte
local core_hash = require("csm.core").fnv1a32

local fnv = {}

--- The FNV-1a offset basis: hash32's default start.
fnv.BASIS = 2166136261

-- Exclusive or of two integers in [0, 2^32).
local bxor
if jit then
  local bit = require "bit"
  bxor = function(a, b) return bit.bxor(a, b) % 4294967296 end
else
  bxor = load("return function(a, b) return a ~ b end")()
end

-- The same in Lua (the C core's is what fnv.hash32 is): specs compare them.
function fnv.lua_hash32(text, h)
  h = h or 2166136261
  for i = 1, #text do
    h = bxor(h, byte(text, i))
    -- h * 16777619 mod 2^32, exact in a double: 16777619 = 2^24 + 403
    h = (h * 403 + (h % 256) * 16777216) % 4294967296
  end
  return h
end

--- The hash of text as an integer in [0, 2^32), from h (default BASIS):
-- hash32(b, hash32(a)) == hash32(a .. b). The C core computes it.
fnv.hash32 = core_hash

--- The hash of text as 8 hex digits.
function fnv.hex(text)
  return string.format("%08x", fnv.hash32(text))
end

return fnv
