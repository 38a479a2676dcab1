-- csm.codec: the canonical wire codec (a MessagePack subset) over csm.core.
local csm = require "csm"
local codec = require "csm.codec"
local support = require "spec.support"

-- Bytes from hex digits ("c0 92 01"; spaces ignored), and back.
local function bytes(hex)
  hex = hex:gsub("%s", "")
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- encode(x) as hex, asserting it decodes back to bytes that encode alike.
local function enc(x)
  local b, err, code = codec.encode(x)
  assert(b, tostring(err) .. " " .. tostring(code))
  local y = codec.decode(b)
  assert.are.equal(hex(b), hex(assert(codec.encode(y))))
  return hex(b)
end

-- Hex digits without the spaces that group them.
local function h(s)
  return (s:gsub(" ", ""))
end

local function refusal(b)
  return { codec.decode(b) }
end

describe("csm.codec", function()
  describe("limits", function()
    it("are the frame size, depth and object count of codec.h", function()
      assert.are.same({ frame = 1048576, depth = 8, objects = 65536 }, codec.limits)
    end)
  end)

  describe("encode", function()
    it("encodes nil, booleans and integers in their shortest form", function()
      assert.are.equal("c0", enc(nil))
      assert.are.equal("c2", enc(false))
      assert.are.equal("c3", enc(true))
      local cases = {
        { 0, "00" }, { 127, "7f" }, { 128, "cc80" }, { 255, "ccff" }, { 256, "cd0100" },
        { 65535, "cdffff" }, { 65536, "ce00010000" }, { 2 ^ 32 - 1, "ceffffffff" },
        { 2 ^ 32, "cf0000000100000000" }, { 2 ^ 53, "cf0020000000000000" },
        { -1, "ff" }, { -32, "e0" }, { -33, "d0df" }, { -128, "d080" }, { -129, "d1ff7f" },
        { -32768, "d18000" }, { -32769, "d2ffff7fff" }, { -2 ^ 31, "d280000000" },
        { -2 ^ 31 - 1, "d3ffffffff7fffffff" }, { -2 ^ 53, "d3ffe0000000000000" },
      }
      for _, case in ipairs(cases) do assert.are.equal(case[2], enc(case[1]), tostring(case[1])) end
    end)

    it("encodes a number with a fraction as float64, and an integral one as the integer", function()
      assert.are.equal("cb3ff8000000000000", enc(1.5))
      assert.are.equal("cbbfd0000000000000", enc(-0.25))
      assert.are.equal("02", enc(2.0))
      assert.are.equal("00", enc(-0.0))
      assert.are.equal("cf0020000000000000", enc(2.0 ^ 53))
      assert.are.equal(1.5, codec.decode(codec.encode(1.5)))
    end)

    it("encodes strings as bin, any bytes, in the shortest form", function()
      assert.are.equal("c400", enc(""))
      assert.are.equal("c403610062", enc("a\0b"))
      assert.are.equal("c4ff", enc(string.rep("x", 255)):sub(1, 4))
      assert.are.equal("c50100", enc(string.rep("x", 256)):sub(1, 6))
      assert.are.equal("c600010000", enc(string.rep("x", 65536)):sub(1, 10))
    end)

    it("encodes a table with the keys 1..n as an array, the empty table as the empty array", function()
      assert.are.equal("90", enc({}))
      assert.are.equal(h "93 01 c4016b c3", enc({ 1, "k", true }))
      local t = {}
      for i = 1, 16 do t[i] = i end
      assert.are.equal("dc0010", enc(t):sub(1, 6))
      assert.are.same({ 1, { 2, { 3 } } }, codec.decode(codec.encode({ 1, { 2, { 3 } } })))
    end)

    it("encodes any other table as a map, its keys sorted by their encoded bytes", function()
      -- fixints first, then bin keys (shortest first), then negative fixints
      assert.are.equal(h "84 03 01 c40161 02 c40262 62 03 ff 04",
        enc({ bb = 3, a = 2, [3] = 1, [-1] = 4 }))
      assert.are.equal(h "82 01 00 03 c3", enc({ [1] = 0, [3] = true }))
      local m = codec.decode(codec.encode({ x = { y = "z" }, [7] = -2 }))
      assert.are.same({ x = { y = "z" }, [7] = -2 }, m)
    end)

    it("encodes a csm value as extension 1 holding [identity, rank(, payload)]", function()
      assert.are.equal(h "c7 06 01 92 c40269 64 03", enc(csm.value("id", 3)))
      assert.are.equal(h "d7 01 93 c40178 07 c40170", enc(csm.value("x", 7, "p")))
      local v = csm.value("3.1:n01", 2 ^ 53, { attempt = 1, parent = "2.1:n02" })
      local got = codec.decode(codec.encode({ value = v })).value
      assert.is_true(csm.is_value(got))
      assert.are.equal("3.1:n01", got:identity())
      assert.are.equal(2 ^ 53, got:rank())
      assert.are.same({ attempt = 1, parent = "2.1:n02" }, got.payload)
      assert.are_not.equal(v.payload, got.payload) -- a fresh table
      assert.is_nil(codec.decode(codec.encode(csm.value("x", 0))).payload)
    end)

    it("refuses what is not plain data, naming where it is, with a code", function()
      local cyclic = {}
      cyclic.self = cyclic
      local cases = {
        { { f = print }, "msg.f is a function", "type" },
        { { 1, { coroutine.create(print) } }, "msg[2][1] is a thread", "type" },
        { { loop = csm.sim { seed = 1 } }, "msg.loop is a userdata", "type" },
        { setmetatable({}, {}), "msg is a table with a metatable", "type" },
        { { v = csm.value("v", 1, { g = { print } }) }, "msg.v.payload.g[1] is a function", "type" },
        { { ["not a name"] = { print } }, "msg[not a name][1] is a function", "type" },
        { cyclic, "msg.self.self.self.self.self.self.self.self nests deeper than 8 tables (or is cyclic)",
          "depth" },
        { { a = { [true] = 1 } }, "msg.a has a key of type boolean", "key" },
        { { [{}] = 1 }, "msg has a key of type table", "key" },
        { { [1.5] = 1 }, "msg has a key 1.5 (a number that is not an integer)", "key" },
        { { [2 ^ 54] = 1 }, "msg has an integer key beyond 2^53", "key" },
        { { x = 0 / 0 }, "msg.x is NaN", "range" },
        { { -math.huge }, "msg[1] is an infinity", "range" },
        { { n = 2 ^ 54 }, "msg.n is an integer beyond 2^53", "range" },
        { string.rep("x", codec.limits.frame), "msg encodes to more than 1048576 bytes", "size" },
      }
      for _, case in ipairs(cases) do
        assert.are.same({ nil, case[2], case[3] }, { codec.encode(case[1]) })
      end
      if math.type then -- Lua 5.4's integers beyond 2^53
        local big = math.tointeger(2 ^ 53) + 1
        assert.are.same({ nil, "msg is an integer beyond 2^53", "range" }, { codec.encode(big) })
      end
    end)

    it("raises only when given no argument", function()
      assert.are.equal("codec.encode: bad argument #1 'x' (value expected, got no value)",
        support.error_of(codec.encode))
    end)
  end)

  describe("decode", function()
    it("raises on bytes that are not a string", function()
      assert.are.equal("codec.decode: bad argument #1 'bytes' (string expected, got nil)",
        support.error_of(codec.decode, nil))
      assert.are.equal("codec.decode: bad argument #1 'bytes' (string expected, got table)",
        support.error_of(codec.decode, {}))
    end)

    it("refuses every form encode would not produce, saying what and at which byte", function()
      local float2 = "cb4000000000000000"
      local cases = {
        { "", "truncated at byte 0", "truncated" },
        { "91 cd01", "truncated at byte 1", "truncated" },
        { "cc05", "integer not in its shortest form at byte 0", "canonical" },
        { "cd00ff", "integer not in its shortest form at byte 0", "canonical" },
        { "d005", "integer not in its shortest form at byte 0", "canonical" },
        { "d0e0", "integer not in its shortest form at byte 0", "canonical" },
        { "91 d1ff80", "integer not in its shortest form at byte 1", "canonical" },
        { "cf0020000000000001", "integer beyond 2^53 at byte 0", "range" },
        { "d3ffdfffffffffffff", "integer beyond -2^53 at byte 0", "range" },
        { float2, "float holding an integer at byte 0", "canonical" },
        { "cb7ff8000000000000", "float not finite at byte 0", "range" },
        { "cb7ff0000000000000", "float not finite at byte 0", "range" },
        { "ca3fc00000", "type not in the format at byte 0", "type" },
        { "a161", "str type not in the format (byte strings are bin) at byte 0", "type" },
        { "92 00 d90161", "str type not in the format (byte strings are bin) at byte 2", "type" },
        { "c1", "type not in the format at byte 0", "type" },
        { "c50003616263", "length not in its shortest form at byte 0", "canonical" },
        { "dc0001 00", "length not in its shortest form at byte 0", "canonical" },
        { "80", "empty map (the empty array is its form) at byte 0", "canonical" },
        { "81 01 c3", "map that is an array (keys 1..n) at byte 0", "canonical" },
        { "82 01 c3 02 c3", "map that is an array (keys 1..n) at byte 0", "canonical" },
        { "82 c40162 01 c40161 02", "map keys out of order at byte 5", "order" },
        { "82 02 c3 01 c3", "map keys out of order at byte 3", "order" },
        { "82 c40161 01 c40161 02", "duplicate map key at byte 5", "order" },
        { "81 c0 01", "map key not a byte string or integer at byte 1", "key" },
        { "81 90 01", "map key not a byte string or integer at byte 1", "key" },
        { "c0 c0", "trailing bytes at byte 1", "trailing" },
        { "92 01 c0", "nil in a table (a table holds none) at byte 2", "canonical" },
        { "81 c40161 c0", "nil in a table (a table holds none) at byte 4", "canonical" },
        { "d40200", "extension type not in the format at byte 0", "type" },
        { "d601 91c40178", "value content not [identity, rank(, payload)] at byte 2", "value" },
        { "d601 92c40003", "value identity not a non-empty byte string at byte 3", "value" },
        { "c7050192c40178ff", "value rank not an integer >= 0 at byte 7", "value" },
        { "c7060193c4017801c0", "value payload nil (omitted when none) at byte 8", "value" },
        { "c7060192c401780100", "value content shorter than its length at byte 8", "value" },
        { "d601 9201c0c0", "value identity not a non-empty byte string at byte 3", "value" },
        { "c7010192", "length not in its shortest form at byte 0", "canonical" },
        { "c7040192c40178", "length not in its shortest form at byte 0", "canonical" },
      }
      for _, case in ipairs(cases) do
        assert.are.same({ nil, case[2], case[3] }, refusal(bytes(case[1])), case[1])
      end
    end)

    it("refuses a declared length one byte beyond the bytes left, before allocating", function()
      assert.are.equal("ab", codec.decode(bytes("c402 6162")))
      local beyond = { nil, "length beyond the bytes left at byte 0", "length" }
      assert.are.same(beyond, refusal(bytes("c403 6162")))
      assert.are.same({ true, true }, codec.decode(bytes("92 c3c3")))
      assert.are.same({ nil, "length beyond the bytes left at byte 0", "length" }, refusal(bytes("93 c3c3")))
      assert.are.same({ nil, "length beyond the bytes left at byte 0", "length" },
        refusal(bytes("82 01 c0 02")))
      assert.are.same({ nil, "length beyond the bytes left at byte 0", "length" },
        refusal(bytes("ddffffffff c0")))
      assert.are.same({ nil, "length beyond the bytes left at byte 0", "length" },
        refusal(bytes("c6ffffffff 00")))
      -- inside a value, the bytes left end where its content does
      assert.are.same({ nil, "length beyond the bytes left at byte 4", "length" },
        refusal(bytes("c70501 92c40378 00 0000")))
    end)

    it("takes a frame of exactly 1 MiB and refuses one byte more", function()
      local n = codec.limits.frame - 5
      local frame = bytes("c6") .. string.char(0, 0x0f, 0xff, 0xfb) .. string.rep("z", n)
      assert.are.equal(1048576, #frame)
      assert.are.equal(n, #codec.decode(frame))
      assert.are.equal(frame, codec.encode(string.rep("z", n)))
      assert.are.same({ nil, "frame larger than 1048576 bytes at byte 1048576", "size" },
        refusal(bytes("c6") .. string.char(0, 0x0f, 0xff, 0xfc) .. string.rep("z", n + 1)))
      assert.are.same({ nil, "msg encodes to more than 1048576 bytes", "size" },
        { codec.encode(string.rep("z", n + 1)) })
    end)

    it("takes tables nested 8 deep and refuses 9", function()
      local eight = bytes(string.rep("91", 7) .. "90")
      local t = codec.decode(eight)
      for _ = 1, 7 do t = t[1] end
      assert.are.same({}, t)
      local nine = { nil, "nesting deeper than 8 at byte 8", "depth" }
      assert.are.same(nine, refusal(bytes(string.rep("91", 9) .. "c3")))
      assert.are.same(nine, refusal(bytes(string.rep("91", 8) .. "90")))
      local deep = {}
      for _ = 1, 7 do deep = { deep } end
      assert.are.equal(string.rep("91", 7) .. "90", hex(codec.encode(deep)))
      assert.are.same({ nil, "msg[1][1][1][1][1][1][1][1] nests deeper than 8 tables (or is cyclic)",
                        "depth" },
        { codec.encode({ deep }) })
      -- a value counts as a table, its table payload as one more
      local v = {}
      for _ = 1, 5 do v = { v } end
      assert.is_string(codec.encode({ csm.value("x", 1, v) }))
      assert.are.same({ nil, "msg[1].payload[1][1][1][1][1][1] nests deeper than 8 tables (or is cyclic)",
                        "depth" }, { codec.encode({ csm.value("x", 1, { v }) }) })
    end)

    it("takes 65536 objects in a frame and refuses 65537", function()
      local most = bytes("dcffff") .. string.rep("\xc3", 65535)
      assert.are.equal(65535, #codec.decode(most))
      local over = bytes("dd00010000") .. string.rep("\xc3", 65536)
      assert.are.same({ nil, "more than 65536 objects at byte 65540", "objects" }, refusal(over))
      local list = {}
      for i = 1, 65535 do list[i] = true end
      assert.are.equal(65538, #codec.encode(list))
      list[65536] = true
      assert.are.same({ nil, "msg holds more than 65536 objects", "size" }, { codec.encode(list) })
    end)

    it("builds maps in key order, so that two decodings walk alike", function()
      local b = codec.encode({ zeta = 1, alpha = 2, mid = 3, [5] = 4, [-3] = 5 })
      local function order(t)
        local out = {}
        for k in pairs(t) do out[#out + 1] = tostring(k) end
        return table.concat(out, " ")
      end
      assert.are.equal(order(codec.decode(b)), order(codec.decode(b)))
    end)

    it("gives back the bytes of every frame it accepts (mutated frames, seeded)", function()
      local seeds = {
        codec.encode({ kind = "vote", sig = "s",
                       value = csm.value("3.1:n01", 3, { attempt = 1, parent = "p" }) }),
        codec.encode({ kind = "sync_response", rank = 12, chain = { [10] = { value = csm.value("10.1:a", 10),
          cert = { attempt = 1, sigs = { a = "x", b = "y" } } } } }),
        codec.encode({ -1, -200, 70000, 1.25, true, false, "", { {} } }),
      }
      local seed, accepted = 12345, 0
      local function rand(n)
        seed = (seed * 1103515245 + 12345) % 2147483648
        return seed % n
      end
      for i = 1, 3000 do
        local b = seeds[i % #seeds + 1]
        local pos = rand(#b) + 1
        local mutated = b:sub(1, pos - 1) .. string.char(rand(256)) .. b:sub(pos + 1)
        local x, err = codec.decode(mutated)
        if err == nil then
          accepted = accepted + 1
          assert.are.equal(hex(mutated), hex(assert(codec.encode(x))))
        else
          assert.is_truthy(err:find(" at byte %d+$"), err)
        end
      end
      assert.is_true(accepted > 0)
    end)
  end)
end)
