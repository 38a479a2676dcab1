-- csm.value, csm.peer, csm.is_value and the value methods.
local csm = require "csm"
local support = require "support"

local error_of = support.error_of

describe("csm", function()
  describe("value", function()
    it("holds identity and rank", function()
      local v = csm.value("a", 3)
      assert.are.equal("a", v:identity())
      assert.are.equal(3, v:rank())
    end)

    it("accepts rank 0", function()
      assert.are.equal(0, csm.value("a", 0):rank())
    end)

    it("accepts any bytes as identity", function()
      local id = "\0\1\255 x\n\0"
      local v = csm.value(id, 1)
      assert.are.equal(id, v:identity())
      assert.are.equal(#id, #v:identity())
    end)

    it("accepts a long identity", function()
      local id = string.rep("x", 10000)
      assert.are.equal(id, csm.value(id, 1):identity())
    end)

    it("accepts a large rank", function()
      assert.are.equal(1000000000000, csm.value("a", 1000000000000):rank())
    end)

    it("accepts ranks up to 2^53", function()
      assert.are.equal(2 ^ 53, csm.value("a", 2 ^ 53):rank())
    end)

    it("accepts an integral float rank", function()
      assert.are.equal(2, csm.value("a", 2.0):rank())
    end)

    if support.lua54 then
      it("accepts math.maxinteger on Lua 5.4 and returns an integer", function()
        local v = csm.value("a", math.maxinteger)
        assert.are.equal(math.maxinteger, v:rank())
        assert.are.equal("integer", math.type(v:rank()))
        assert.are.equal("integer", math.type(csm.value("a", 2.0):rank()))
      end)

      it("refuses the float 2^63 on Lua 5.4 (it does not fit an integer)", function()
        assert.are.equal(
          "csm.value: bad argument #2 'rank' (integer >= 0 expected, got 9.2233720368547758e+18)",
          error_of(csm.value, "a", 2 ^ 63))
      end)
    else
      it("refuses ranks beyond 2^53 on LuaJIT", function()
        assert.are.equal(
          "csm.value: bad argument #2 'rank' (integer >= 0 expected, got 9007199254740994)",
          error_of(csm.value, "a", 2 ^ 53 + 2))
      end)
    end

    it("holds a payload of any type", function()
      local t, f = {}, function() end
      assert.are.equal(t, csm.value("a", 1, t).payload)
      assert.are.equal(f, csm.value("a", 1, f).payload)
      assert.are.equal("s", csm.value("a", 1, "s").payload)
      assert.are.equal(5, csm.value("a", 1, 5).payload)
      assert.are.equal(false, csm.value("a", 1, false).payload)
    end)

    it("has no payload when none or nil is given", function()
      assert.is_nil(csm.value("a", 1).payload)
      assert.is_nil(csm.value("a", 1, nil).payload)
      assert.is_nil(csm.value("a", 1).field)
    end)

    it("raises on a non-string identity", function()
      assert.are.equal(
        "csm.value: bad argument #1 'identity' (non-empty string expected, got number)",
        error_of(csm.value, 1, 0))
      assert.are.equal(
        "csm.value: bad argument #1 'identity' (non-empty string expected, got table)",
        error_of(csm.value, {}, 0))
      assert.are.equal(
        "csm.value: bad argument #1 'identity' (non-empty string expected, got no value)",
        error_of(csm.value))
    end)

    it("raises on an empty identity", function()
      assert.are.equal(
        "csm.value: bad argument #1 'identity' (non-empty string expected, got string)",
        error_of(csm.value, "", 0))
    end)

    it("raises on a negative rank", function()
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got -1)",
        error_of(csm.value, "a", -1))
    end)

    it("raises on a non-integer rank", function()
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got 1.5)",
        error_of(csm.value, "a", 1.5))
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got inf)",
        error_of(csm.value, "a", math.huge))
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got -inf)",
        error_of(csm.value, "a", -math.huge))
    end)

    it("raises on NaN as rank", function()
      local err = error_of(csm.value, "a", 0 / 0)
      assert.is_truthy(err)
      assert.is_truthy(err:find("csm.value: bad argument #2 'rank' (integer >= 0 expected, got ",
        1, true))
    end)

    it("raises on a missing or non-number rank", function()
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got no value)",
        error_of(csm.value, "a"))
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got string)",
        error_of(csm.value, "a", "1"))
      assert.are.equal("csm.value: bad argument #2 'rank' (integer >= 0 expected, got nil)",
        error_of(csm.value, "a", nil))
    end)
  end)

  describe("peer", function()
    it("makes a value of rank 0", function()
      local p = csm.peer("node-1")
      assert.is_true(csm.is_value(p))
      assert.are.equal("node-1", p:identity())
      assert.are.equal(0, p:rank())
      assert.is_nil(p.payload)
    end)

    it("equals a value of the same identity and rank 0", function()
      assert.is_true(csm.peer("x") == csm.value("x", 0))
      assert.is_false(csm.peer("x") == csm.value("x", 1))
    end)

    it("raises on a bad identity", function()
      assert.are.equal("csm.peer: bad argument #1 'identity' (non-empty string expected, got number)",
        error_of(csm.peer, 1))
      assert.are.equal("csm.peer: bad argument #1 'identity' (non-empty string expected, got string)",
        error_of(csm.peer, ""))
      assert.are.equal(
        "csm.peer: bad argument #1 'identity' (non-empty string expected, got no value)",
        error_of(csm.peer))
    end)
  end)

  describe("is_value", function()
    it("is true for values and peers", function()
      assert.is_true(csm.is_value(csm.value("a", 1)))
      assert.is_true(csm.is_value(csm.peer("a")))
      assert.is_true(csm.is_value(csm.value("a", 1, {}):clone()))
    end)

    it("is false for anything else", function()
      assert.is_false(csm.is_value(nil))
      assert.is_false(csm.is_value("a"))
      assert.is_false(csm.is_value(1))
      assert.is_false(csm.is_value({}))
      assert.is_false(csm.is_value(setmetatable({}, getmetatable(csm.value("a", 1)) or {})))
      assert.is_false(csm.is_value(csm.sim()))
      assert.is_false(csm.is_value(io.stdout))
      assert.is_false(csm.is_value())
    end)
  end)
end)

describe("csm value", function()
  describe("identity", function()
    it("raises when self is not a value", function()
      local v = csm.value("a", 1)
      assert.are.equal("value:identity: bad self (csm value expected, got no value)",
        error_of(v.identity))
      assert.are.equal("value:identity: bad self (csm value expected, got nil)",
        error_of(v.identity, nil))
      assert.are.equal("value:identity: bad self (csm value expected, got string)",
        error_of(v.identity, "a"))
    end)
  end)

  describe("rank", function()
    it("raises when self is not a value", function()
      local v = csm.value("a", 1)
      assert.are.equal("value:rank: bad self (csm value expected, got table)",
        error_of(v.rank, {}))
    end)
  end)

  describe("clone", function()
    it("returns a new value with the same identity and rank", function()
      local v = csm.value("a\0b", 7)
      local c = v:clone()
      assert.is_true(csm.is_value(c))
      assert.is_false(rawequal(v, c))
      assert.are.equal("a\0b", c:identity())
      assert.are.equal(7, c:rank())
      assert.is_true(v == c)
      assert.is_nil(c.payload)
    end)

    it("copies a table payload one level deep", function()
      local inner = { deep = 1 }
      local mt = { __index = { inherited = "yes" } }
      local payload = setmetatable({ x = 1, inner = inner, [1] = "first" }, mt)
      local v = csm.value("a", 1, payload)
      local c = v:clone()
      assert.is_false(rawequal(payload, c.payload))
      assert.are.equal(1, c.payload.x)
      assert.are.equal("first", c.payload[1])
      assert.are.equal(inner, c.payload.inner) -- nested tables are shared
      assert.are.equal(mt, getmetatable(c.payload))
      assert.are.equal("yes", c.inherited)
      -- changing the original's table does not reach the clone
      payload.x = 2
      assert.are.equal(1, c.x)
      assert.are.equal(2, v.x)
    end)

    it("shares a non-table payload", function()
      local f = function() end
      assert.are.equal(f, csm.value("a", 1, f):clone().payload)
      assert.are.equal("text", csm.value("a", 1, "text"):clone().payload)
      assert.are.equal(42, csm.value("a", 1, 42):clone().payload)
      local ud = csm.value("inner", 0)
      assert.is_true(rawequal(ud, csm.value("a", 1, ud):clone().payload))
    end)

    it("works on a clone of a clone", function()
      local c = csm.value("a", 3, { x = 1 }):clone():clone()
      assert.are.equal("a", c:identity())
      assert.are.equal(3, c:rank())
      assert.are.equal(1, c.x)
    end)

    it("raises when self is not a value", function()
      local v = csm.value("a", 1)
      assert.are.equal("value:clone: bad self (csm value expected, got table)",
        error_of(v.clone, {}))
    end)
  end)

  describe("payload fields", function()
    it("reads through to a table payload", function()
      local v = csm.value("a", 1, { height = 10, [2] = "two", parent = "genesis" })
      assert.are.equal(10, v.height)
      assert.are.equal("genesis", v.parent)
      assert.are.equal("two", v[2])
      assert.is_nil(v.missing)
    end)

    it("follows the payload's __index", function()
      local v = csm.value("a", 1, setmetatable({}, { __index = function(_, k) return k .. "!" end }))
      assert.are.equal("x!", v.x)
    end)

    it("reads nil fields of a non-table payload", function()
      assert.is_nil(csm.value("a", 1, "text").len)
      assert.is_nil(csm.value("a", 1, 5).x)
    end)

    it("puts methods before payload fields", function()
      local v = csm.value("a", 1, { rank = 99, identity = "other" })
      assert.are.equal("function", type(v.rank))
      assert.are.equal(1, v:rank())
      assert.are.equal("a", v:identity())
    end)
  end)

  describe("read-only", function()
    it("raises on assignment to a field", function()
      local v = csm.value("a", 1, { x = 1 })
      assert.are.equal("csm value is read-only (field 'x')", error_of(function() v.x = 2 end))
      assert.are.equal(1, v.x)
    end)

    it("raises on assignment to payload", function()
      local v = csm.value("a", 1)
      assert.are.equal("csm value is read-only (field 'payload')",
        error_of(function() v.payload = {} end))
      assert.is_nil(v.payload)
    end)

    it("raises on assignment with a non-string key", function()
      local v = csm.value("a", 1)
      assert.are.equal("csm value is read-only (field 'number')",
        error_of(function() v[1] = 2 end))
    end)
  end)

  describe("tostring", function()
    it("shows identity and rank", function()
      assert.are.equal('csm.value("a", 3)', tostring(csm.value("a", 3)))
      assert.are.equal('csm.value("node-1", 0)', tostring(csm.peer("node-1")))
    end)

    it("escapes non-printable bytes, quotes and backslashes", function()
      assert.are.equal('csm.value("a\\x00\\x22\\x5c\\xff", 1)',
        tostring(csm.value('a\0"\\\255', 1)))
    end)

    it("cuts long identities", function()
      assert.are.equal('csm.value("' .. string.rep("x", 64) .. '...", 2)',
        tostring(csm.value(string.rep("x", 100), 2)))
    end)

    if support.lua54 then
      it("shows math.maxinteger exactly", function()
        assert.are.equal('csm.value("a", 9223372036854775807)',
          tostring(csm.value("a", math.maxinteger)))
      end)
    end

    it("shows 2^53 exactly", function()
      assert.are.equal('csm.value("a", 9007199254740992)', tostring(csm.value("a", 2 ^ 53)))
    end)
  end)

  describe("==", function()
    it("is true for the same identity and rank", function()
      assert.is_true(csm.value("a", 1) == csm.value("a", 1))
      assert.is_true(csm.value("a\0", 1) == csm.value("a\0", 1))
    end)

    it("ignores the payload", function()
      assert.is_true(csm.value("a", 1, { x = 1 }) == csm.value("a", 1, { x = 2 }))
    end)

    it("is false when identity or rank differ", function()
      assert.is_false(csm.value("a", 1) == csm.value("a", 2))
      assert.is_false(csm.value("a", 1) == csm.value("b", 1))
      assert.is_false(csm.value("a", 1) == csm.value("a\0", 1))
      assert.is_true(csm.value("a", 1) ~= csm.value("b", 1))
    end)

    it("is false against a string", function()
      assert.is_false(csm.value("a", 0) == "a")
    end)
  end)
end)
