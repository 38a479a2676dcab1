-- The reference protocol, the same source the lab runs, on the real loop
-- over real transports with write-ahead logs: four nodes in this process,
-- on loopback, finalizing while hundreds of connections that never
-- authenticate hammer one of them.
local uv = require "luv"
local cjson = require "cjson"
local csm = require "csm"
local keys = require "csm.node.keys"
local config = require "csm.node.config"
local transport = require "csm.node.transport"
local wal = require "csm.node.wal"
local reference = require "csm.protocols.reference"
local support = require "support"
local wait_for = support.wait_for

describe("csm.protocols.reference on csm.node.transport", function()
  it("finalizes in agreement while 300 unauthenticated connections come and go", function()
    local dir = uv.fs_mkdtemp("/tmp/csm-cluster-spec-XXXXXX")
    local base = support.free_ports(5)
    local ks, list = {}, {}
    for i = 1, 4 do
      ks[i] = keys.generate()
      list[i] = { name = string.format("n%02d", i), public = ks[i].public,
                  address = "127.0.0.1:" .. (base + i) }
    end
    local cfg = assert(config.check(cjson.decode(config.json("spec", list, {}))))
    local publics = {}
    for _, n in ipairs(cfg.nodes) do publics[n.name] = n.public end
    local nodes, ts, stores = {}, {}, {}
    local finalized = {}
    for i = 1, 4 do
      ts[i] = transport.new { name = list[i].name, key = ks[i], config = cfg,
        limits = { handshake_timeout = 0.5 } }
      assert(ts[i]:start())
      stores[i] = assert(wal.open(dir .. "/" .. list[i].name,
        { fingerprint = cfg.fingerprint, public = ks[i].public }))
      nodes[i] = reference.node { name = list[i].name, names = cfg.names, world = csm.loop(), network = ts[i],
        signer = keys.signer(ks[i], publics), store = stores[i], initial = csm.value("genesis", 0),
        on_finalize = function(_, rank, state)
          local d = reference.digest(state)
          assert.is_true(finalized[rank] == nil or finalized[rank] == d, "two states at rank " .. rank)
          finalized[rank] = d
        end }
    end
    for _, n in ipairs(nodes) do n:start() end
    local function lowest()
      local low = math.huge
      for _, n in ipairs(nodes) do low = math.min(low, n.height) end
      return low
    end
    assert.is_true(wait_for(function() return lowest() >= 10 end))
    -- the flood: connections that send garbage or nothing, 300 of them
    local socks, opened = {}, 0
    local function open_one()
      local tcp = uv.new_tcp()
      socks[#socks + 1] = tcp
      opened = opened + 1
      tcp:connect("127.0.0.1", base + 1, function(err)
        if not err and not tcp:is_closing() then
          tcp:write(opened % 2 == 0 and string.rep("\0", 32) or "x")
          tcp:read_start(function(rerr, chunk)
            if (rerr or not chunk) and not tcp:is_closing() then tcp:close() end
          end)
        end
      end)
    end
    for _ = 1, 300 do open_one() end
    local from = lowest()
    assert.is_true(wait_for(function() return lowest() >= from + 20 end))
    assert.is_true((ts[1].stats.refused["handshake: too many pending"] or 0) > 0
      or (ts[1].stats.refused["handshake: deadline"] or 0) > 0
      or (ts[1].stats.refused["handshake: auth"] or 0) > 0)
    assert.is_true(ts[1].npending <= transport.defaults.pending)
    for _, s in ipairs(socks) do if not s:is_closing() then s:close() end end
    for i = 1, 4 do
      nodes[i].sm:close()
      ts[i]:close()
      stores[i]:close()
    end
    uv.run("nowait")
    os.execute("rm -rf '" .. dir .. "'")
  end)
end)
