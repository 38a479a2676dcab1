-- csm.fnv (the core's FNV-1a), csm.lab.signer and csm.lab.store: the
-- pieces the reference protocol signs and writes down with.
local fnv = require "csm.fnv"
local signer = require "csm.lab.signer"
local store = require "csm.lab.store"
local support = require "spec.support"

local error_of = support.error_of

describe("csm.fnv", function()
  describe("hash32", function()
    it("is FNV-1a, the same in C as in Lua, continued from any start", function()
      assert.are.equal(2166136261, fnv.hash32(""))
      assert.are.equal("e40c292c", fnv.hex("a"))
      local x = 7
      for _ = 1, 200 do
        local parts = {}
        for i = 1, x % 40 do
          x = (x * 16807) % 2147483647
          parts[i] = string.char(x % 256)
        end
        local s = table.concat(parts)
        local h = x % 4294967296
        assert.are.equal(fnv.lua_hash32(s, h), fnv.hash32(s, h))
        assert.are.equal(fnv.hash32(s .. "tail"), fnv.hash32("tail", fnv.hash32(s)))
      end
    end)

    it("raises naming the argument", function()
      assert.are.equal("fnv.hash32: bad argument #1 'text' (string expected, got number)",
        error_of(fnv.hash32, 1))
      for _, h in ipairs { -1, 0.5, 2 ^ 32, 0 / 0 } do
        assert.are.equal("fnv.hash32: bad argument #2 'h' (integer in [0, 2^32) expected, got number)",
          error_of(fnv.hash32, "x", h))
      end
    end)
  end)
end)

describe("csm.lab.signer", function()
  local names = { "n01", "n02", "n03" }

  it("signs as one node only; anyone verifies; another seed gives other signatures", function()
    local keyring = signer.keyring(1, names)
    local a, b = keyring:signer("n01"), keyring:signer("n02")
    local sig = a:sign("vote 3")
    assert.is_true(b:verify("n01", "vote 3", sig))
    assert.is_false(b:verify("n02", "vote 3", sig))
    assert.is_false(b:verify("n01", "vote 4", sig))
    assert.is_false(b:verify("n09", "vote 3", sig))
    assert.is_false(b:verify("n01", "vote 3", 42))
    assert.are.equal(sig, signer.keyring(1, names):signer("n01"):sign("vote 3"))
    assert.are_not.equal(sig, signer.keyring(2, names):signer("n01"):sign("vote 3"))
    assert.is_true(signer.is_signer(a))
  end)

  it("refuses a name it has no key for", function()
    assert.are.equal("keyring:signer: no key for 'n09'", error_of(signer.keyring(1, names).signer,
      signer.keyring(1, names), "n09"))
  end)
end)

describe("csm.lab.store", function()
  it("keeps what was synced, in order, and loses the rest in a crash", function()
    local s = store.sim()
    s:append("one")
    s:append("two")
    local synced = false
    s:sync(function(ok) synced = ok end)
    assert.is_true(synced)
    s:append("three")
    assert.are.same({ "one", "two" }, s:records())
    s:crash()
    assert.is_true(s.crashed)
    -- a crashed store takes nothing and completes no sync
    s:append("four")
    s:sync(function() error("a crashed store synced") end)
    s:recover()
    assert.are.same({ "one", "two" }, s:records())
    assert.are.equal(3, s:writes())
  end)

  it("cuts a torn tail, and keeps as many unsynced records as a crash lets through", function()
    local s = store.sim()
    s:append("one")
    s:sync(function() end)
    s:append("two")
    s:append("three")
    s:append("four")
    s:crash { keep = 1, tear = true }
    s:recover()
    local before = s:size()
    assert.are.same({ "one", "two" }, s:records())
    assert.is_true(s.cut > 0 and s:size() < before)
    -- what comes after is read back whole
    s:append("five")
    s:sync(function() end)
    assert.are.same({ "one", "two", "five" }, s:records())
  end)

  it("rewrites every record at once, and calls on_append at each write", function()
    local s, seen = store.sim(), {}
    s:on_append(function(n) seen[#seen + 1] = n end)
    s:append("a")
    s:append("b")
    s:rewrite({ "c" }, function() end)
    assert.are.same({ "c" }, s:records())
    assert.are.same({ 1, 2 }, seen)
    assert.is_true(store.is_store(s))
    assert.are.equal("store:append: bad argument #1 'bytes' (string expected, got number)",
      error_of(s.append, s, 1))
  end)
end)
