-- The real transport on loopback: nodes of one process, each with its own
-- listening socket, connections that authenticate, and raw sockets that
-- misbehave. Waits are bounded so a broken transport fails the spec
-- instead of hanging it; no spec asserts how long anything took.
local uv = require "luv"
local keys = require "csm.node.keys"
local config = require "csm.node.config"
local transport = require "csm.node.transport"
local secret = require "csm.node.secret"
local codec = require "csm.codec"

local support = require "support"
local wait_for = support.wait_for

local function cluster(n, limits, cluster_name)
  local base = support.free_ports(n + 8) -- (strangers take base + 5 and base + 7)
  local nodes, ks = {}, {}
  for i = 1, n do
    ks[i] = keys.generate()
    nodes[i] = { name = string.format("n%02d", i), public = ks[i].public,
                 address = "127.0.0.1:" .. (base + i - 1) }
  end
  local cjson = require "cjson"
  local cfg = assert(config.check(cjson.decode(config.json(cluster_name or "spec", nodes, {}))))
  local ts, got = {}, {}
  for i = 1, n do
    got[i] = {}
    ts[i] = transport.new { name = nodes[i].name, key = ks[i], config = cfg, limits = limits }
    assert(ts[i]:start())
    ts[i].endpoint = ts[i]:join(nodes[i].name, function(from, msg) got[i][#got[i] + 1] = { from, msg } end)
  end
  return { ts = ts, got = got, keys = ks, cfg = cfg, base = base, nodes = nodes }
end

local function all_up(c)
  for _, t in ipairs(c.ts) do
    local up = t:up()
    for _, name in ipairs(c.cfg.names) do
      if name ~= t.name and not up[name] then return false end
    end
  end
  return true
end

local function close(c)
  for _, t in ipairs(c.ts) do t:close() end
  uv.run("nowait")
end

-- A raw TCP connection to port; received bytes go to the returned buffer.
local function raw(port)
  local tcp = uv.new_tcp()
  local r = { tcp = tcp, data = "", closed = false }
  tcp:connect("127.0.0.1", port, function(err)
    if err then r.closed = true return end
    r.connected = true
    tcp:read_start(function(rerr, chunk)
      if rerr or not chunk then r.closed = true return end
      r.data = r.data .. chunk
    end)
  end)
  return r
end

describe("csm.node.transport", function()
  describe("join, publish, send", function()
    it("delivers what a node publishes and sends, from its true sender", function()
      local c = cluster(3)
      assert.is_true(wait_for(function() return all_up(c) end))
      c.ts[1].endpoint:publish { kind = "hello", n = 1 }
      c.ts[2].endpoint:send("n01", { kind = "back", data = "\0\1\2" })
      assert.is_true(wait_for(function() return #c.got[2] == 1 and #c.got[3] == 1 and #c.got[1] == 1 end))
      assert.same({ "n01", { kind = "hello", n = 1 } }, c.got[2][1])
      assert.same({ "n01", { kind = "hello", n = 1 } }, c.got[3][1])
      assert.same({ "n02", { kind = "back", data = "\0\1\2" } }, c.got[1][1])
      close(c)
    end)

    it("refuses a message the codec cannot encode, naming the function", function()
      local c = cluster(2)
      assert.has_error(function() c.ts[1].endpoint:publish { f = print } end)
      local ok, err = pcall(c.ts[1].endpoint.send, c.ts[1].endpoint, "n02", { f = print })
      assert.is_false(ok)
      assert.matches("^.-endpoint:send: bad argument #1 'msg'", err)
      close(c)
    end)

    it("queues what waits for a peer that is down, up to its limit, and counts the rest", function()
      local c = cluster(2, { queue = 10 })
      c.ts[2]:close()
      for i = 1, 50 do c.ts[1].endpoint:send("n02", { i = i }) end
      assert.equal(40, c.ts[1].stats.dropped)
      close(c)
    end)
  end)

  describe("connections", function()
    it("refuses a node whose key is not in the configuration; the others go on", function()
      local c = cluster(2)
      assert.is_true(wait_for(function() return all_up(c) end))
      -- a stranger with a configuration of its own that names n01's address
      local stranger = keys.generate()
      local nodes = { { name = "n01", public = c.keys[1].public, address = c.nodes[1].address },
                      { name = "x", public = stranger.public, address = "127.0.0.1:" .. (c.base + 5) } }
      local cjson = require "cjson"
      local cfg = assert(config.check(cjson.decode(config.json("spec", nodes, {}))))
      local x = transport.new { name = "x", key = stranger, config = cfg }
      assert(x:start())
      assert.is_true(wait_for(function() return (c.ts[1].stats.refused["handshake: unknown"] or 0) > 0
        or (c.ts[1].stats.refused["handshake: auth"] or 0) > 0 end))
      assert.is_nil(x:up().n01)
      c.ts[1].endpoint:send("n02", { still = true })
      assert.is_true(wait_for(function() return #c.got[2] == 1 end))
      x:close()
      close(c)
    end)

    it("refuses a peer of another configuration (fingerprint)", function()
      local c = cluster(2)
      local cjson = require "cjson"
      local t = cjson.decode(config.json("other", {
        { name = "n01", public = c.keys[1].public, address = c.nodes[1].address },
        { name = "n02", public = c.keys[2].public, address = "127.0.0.1:" .. (c.base + 7) } }, {}))
      local other = transport.new { name = "n02", key = c.keys[2], config = assert(config.check(t)) }
      assert(other:start())
      assert.is_true(wait_for(function() return (c.ts[1].stats.refused["handshake: auth"] or 0) > 0 end))
      assert.is_nil(other:up().n01)
      other:close()
      close(c)
    end)

    it("closes connections that do not authenticate in time, and caps how many may try", function()
      local c = cluster(2, { handshake_timeout = 0.5, pending = 20 })
      assert.is_true(wait_for(function() return all_up(c) end))
      local socks = {}
      for i = 1, 200 do socks[i] = raw(c.base) end
      assert.is_true(wait_for(function()
        return (c.ts[1].stats.refused["handshake: too many pending"] or 0) > 0
      end))
      -- the cluster keeps delivering meanwhile
      c.ts[2].endpoint:send("n01", { during = true })
      assert.is_true(wait_for(function() return #c.got[1] == 1 end))
      assert.is_true(wait_for(function()
        for _, s in ipairs(socks) do if not s.closed then return false end end
        return true
      end))
      assert.is_true(c.ts[1].npending <= 20)
      for _, s in ipairs(socks) do if not s.tcp:is_closing() then s.tcp:close() end end
      close(c)
    end)

    it("closes a peer that sends one byte every 100 ms at the handshake's deadline", function()
      local c = cluster(1, { handshake_timeout = 0.5 })
      local s = raw(c.base)
      local dribble = uv.new_timer()
      dribble:start(100, 100, function()
        if s.connected and not s.closed and not s.tcp:is_closing() then s.tcp:write("x") end
      end)
      assert.is_true(wait_for(function() return s.closed end))
      assert.equal(1, c.ts[1].stats.refused["handshake: deadline"])
      dribble:close()
      s.tcp:close()
      close(c)
    end)

    -- an authenticated connection made by hand, to send frames the transport never would
    local function authenticated_raw(c)
      local s = raw(c.base)
      local h = secret.handshake { public = c.keys[2].public, secret = c.keys[2].secret,
        fingerprint = c.cfg.fingerprint, expect = c.keys[1].public,
        known = function(pk) return c.cfg.by_key[pk] end }
      assert.is_true(wait_for(function() return s.connected end))
      s.tcp:write(h:start())
      local status
      assert.is_true(wait_for(function()
        if s.data ~= "" then
          local out
          out, status = h:feed(s.data)
          s.data = ""
          assert(out, status)
          if out ~= "" then s.tcp:write(out) end
        end
        return status == "done"
      end))
      return s, h:session()
    end

    it("delivers frames split at every offset, and refuses an oversize length before its body", function()
      local c = cluster(2)
      c.ts[2]:close()
      local s, session = authenticated_raw(c)
      local frame = session:seal(assert(codec.encode { kind = "split", data = string.rep("y", 40) }))
      for cut = 1, #frame - 1 do
        s.tcp:write(frame:sub(1, cut))
        uv.run("nowait")
        s.tcp:write(frame:sub(cut + 1))
        frame = session:seal(assert(codec.encode { kind = "split", data = string.rep("y", 40) }))
      end
      assert.is_true(wait_for(function() return #c.got[1] == #frame - 1 end))
      -- a declared length beyond the largest frame, and nothing after it
      s.tcp:write("\255\255\255\255")
      assert.is_true(wait_for(function() return s.closed end))
      assert.equal(1, c.ts[1].stats.refused["frame: oversize"])
      close(c)
    end)

    it("closes a connection whose frame was tampered with", function()
      local c = cluster(2)
      c.ts[2]:close()
      local s, session = authenticated_raw(c)
      local frame = session:seal(assert(codec.encode { kind = "t" }))
      local i = #frame - 3
      s.tcp:write(frame:sub(1, i - 1) .. string.char((frame:byte(i) + 1) % 256) .. frame:sub(i + 1))
      assert.is_true(wait_for(function() return s.closed end))
      assert.equal(1, c.ts[1].stats.refused["frame: tampered"])
      assert.equal(0, #c.got[1])
      close(c)
    end)

    it("pauses a flooding connection's reads for the rest of a loop turn, and delivers it all", function()
      local c = cluster(2, { budget = 16 })
      c.ts[2]:close()
      local s, session = authenticated_raw(c)
      local frames = {}
      for i = 1, 1000 do frames[i] = session:seal(assert(codec.encode { i = i })) end
      s.tcp:write(table.concat(frames))
      assert.is_true(wait_for(function() return #c.got[1] == 1000 end))
      assert.is_true(c.ts[1].stats.paused > 0)
      for i = 1, 1000 do assert.equal(i, c.got[1][i][2].i) end
      close(c)
    end)

    it("closes a connection that went silent (no heartbeat) for dead_after", function()
      local c = cluster(2, { heartbeat = 0.1, dead_after = 0.4 })
      c.ts[2]:close()
      -- the raw side authenticates, then sends nothing, not even heartbeats
      local s = authenticated_raw(c)
      assert.is_not_nil(c.ts[1].inbound.n02)
      assert.is_true(wait_for(function() return c.ts[1].inbound.n02 == nil end))
      assert.is_true(wait_for(function() return s.closed end))
      close(c)
    end)

    it("tells its observer what it sends, delivers and drops", function()
      local c = cluster(2, { queue = 1 })
      local seen = {}
      c.ts[1].observer = function(what, from, to) seen[#seen + 1] = what .. " " .. from .. ">" .. to end
      c.ts[2].observer = function(what, from, to) seen[#seen + 1] = what .. " " .. from .. ">" .. to end
      assert.is_true(wait_for(function() return all_up(c) end))
      c.ts[1].endpoint:send("n02", { a = 1 })
      assert.is_true(wait_for(function() return #c.got[2] == 1 end))
      assert.same({ "send n01>n02", "deliver n01>n02" }, seen)
      close(c)
    end)

    it("counts frames the codec refuses, and goes on", function()
      local c = cluster(2)
      c.ts[2]:close()
      local s, session = authenticated_raw(c)
      s.tcp:write(session:seal("\193"))
      s.tcp:write(session:seal(assert(codec.encode { ok = true })))
      assert.is_true(wait_for(function() return #c.got[1] == 1 end))
      local refusals = 0
      for reason, count in pairs(c.ts[1].stats.refused) do
        if reason:match("^codec") then refusals = refusals + count end
      end
      assert.equal(1, refusals)
      close(c)
    end)
  end)
end)
