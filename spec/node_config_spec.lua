local cjson = require "cjson"
local config = require "csm.node.config"
local keys = require "csm.node.keys"

local function nodes(n)
  local list = {}
  for i = 1, n do
    list[i] = { name = string.format("n%02d", i), public = keys.generate().public,
                address = "127.0.0.1:" .. (7000 + i) }
  end
  return list
end

local function decoded(list, cluster, timing)
  return cjson.decode(config.json(cluster or "c", list, timing or {}))
end

describe("csm.node.config", function()
  describe("check", function()
    it("takes a configuration config.json wrote, and fingerprints it", function()
      local list = nodes(4)
      local c = assert(config.check(decoded(list, "c", { scale = 0.5 })))
      assert.same({ "n01", "n02", "n03", "n04" }, c.names)
      assert.equal(list[2].public, c.by_name.n02.public)
      assert.equal("n03", c.by_key[list[3].public])
      assert.equal(7004, c.by_name.n04.port)
      assert.equal(0.5, c.timing.scale)
      assert.equal(32, #c.fingerprint)
      assert.equal(c.fingerprint, assert(config.check(decoded(list, "c", { scale = 0.5 }))).fingerprint)
    end)

    it("gives another fingerprint to another cluster name, timing, key or address", function()
      local list = nodes(3)
      local fp = assert(config.check(decoded(list))).fingerprint
      assert.not_equal(fp, assert(config.check(decoded(list, "d"))).fingerprint)
      assert.not_equal(fp, assert(config.check(decoded(list, "c", { scale = 2 }))).fingerprint)
      list[2].address = "127.0.0.1:9999"
      assert.not_equal(fp, assert(config.check(decoded(list))).fingerprint)
      list[2].public = keys.generate().public
      assert.not_equal(fp, assert(config.check(decoded(list))).fingerprint)
    end)

    local function refused(t, message)
      local c, msg, code = config.check(t)
      assert.is_nil(c)
      assert.equal("config", code)
      assert.equal(message, msg)
    end

    it("refuses duplicate names, keys and addresses", function()
      local list = nodes(3)
      list[3].name = "n01"
      refused(decoded(list), "'nodes[3]': the name n01 is taken by another node")
      list = nodes(3)
      list[2].public = list[1].public
      refused(decoded(list), "'nodes[2]' (n02): the public key is n01's too")
      list = nodes(3)
      list[3].address = list[1].address
      refused(decoded(list), "'nodes[3]' (n03): the address 127.0.0.1:7001 is n01's too")
    end)

    it("refuses malformed fields, naming them", function()
      local t = decoded(nodes(2))
      t.extra = 1
      refused(t, "unknown field 'extra' (fields: cluster, protocol, timing, nodes)")
      t = decoded(nodes(2))
      t.protocol = "raft/9"
      refused(t, "'protocol': raft/9 is not known (known: reference/1)")
      t = decoded(nodes(2))
      t.nodes[1].public = "abc"
      refused(t, "'nodes[1]' (n01): 'public': 64 hex digits expected")
      t = decoded(nodes(2))
      t.nodes[2].address = "127.0.0.1:70000"
      refused(t, "'nodes[2]' (n02): 'address': host:port expected")
      t = decoded(nodes(2))
      t.timing = { scale = -1 }
      refused(t, "'timing.scale': a positive number expected")
      t = decoded(nodes(2))
      t.nodes = {}
      refused(t, "'nodes': a list of nodes expected")
      refused("x", "the configuration is not a JSON object")
    end)
  end)

  describe("read", function()
    it("refuses a file that is not JSON, naming it", function()
      local path = os.tmpname()
      local fh = assert(io.open(path, "w"))
      fh:write("{ not json")
      fh:close()
      local c, msg, code = config.read(path)
      os.remove(path)
      assert.is_nil(c)
      assert.equal("config", code)
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ": not JSON", msg)
    end)

    it("raises for a path that is not a string", function()
      assert.has_error(function() config.read(nil) end,
        "config.read: bad argument #1 'path' (string expected, got nil)")
    end)
  end)
end)
