--- `csm node`: one reference node as a process, on the real loop, over
-- authenticated encrypted TCP (csm.node.transport) with its round state in
-- a write-ahead log (csm.node.wal). It logs JSON lines on stdout.
-- @module csm.cmd.node

local cmd = require "csm.cmd"

local node = {}

node.summary = "Run one real reference node (TCP, Ed25519, a write-ahead log); logs JSON lines."

--- Exit status: a configuration or key error.
node.CONFIG = 2
--- Exit status: the data directory is refused (locked, foreign, corrupt).
node.DATA = 3
--- Exit status: the store failed (an I/O or sync error).
node.STORAGE = 4

function node.add(c)
  c:description([[
Runs the node NAME of the cluster configuration FILE (csm.node.config: the
cluster's name, the protocol, the timing, each node's name, public key and
address) with the secret key in --key (csm keygen) and its write-ahead log
in --data. It listens on its address, dials every other node, and logs one
JSON object per line on stdout: start, peer_up and peer_down, finalized
(rank, id, digest), refusals (counts by reason, every 5 s when they
changed), evidence, storage, stop.

Exit status: 0 after SIGTERM or SIGINT (or --ranks reached), 2 for a
configuration or key error, 3 for a data directory it refuses (locked by
another process, another cluster's or key's, corrupt: --repair keeps a
backup and cuts the log at the damage), 4 when the store fails (an I/O or
sync error: the node stops before sending what the write guarded).]])
  c:option("--config", "The cluster configuration (JSON)."):argname("FILE"):count(1)
  c:option("--name", "This node's name in the configuration."):count(1)
  c:option("--key", "This node's secret key file (csm keygen --out)."):argname("FILE"):count(1)
  c:option("--data", "This node's data directory (created if missing)."):argname("DIR"):count(1)
  c:flag("--repair", "Back up a corrupt log and cut it at the damage instead of refusing to start.")
  c:flag("--rejoin", "This node lost its data: with an empty --data, abstain in the ranks in progress.")
  c:option("--ranks", "Exit 0 once this many ranks are finalized (default: run until signalled).")
    :convert(cmd.integer("--ranks", 1))
end

local function now_wall()
  local uv = require "luv"
  local s, us = uv.gettimeofday()
  return s + us / 1e6
end

function node.run(args)
  local cjson = require("cjson").new()
  cjson.encode_invalid_numbers(true)
  local uv = require "luv"
  local csm = require "csm"
  local config = require "csm.node.config"
  local keys = require "csm.node.keys"
  local wal = require "csm.node.wal"
  local transport = require "csm.node.transport"
  local name = args.name

  -- one JSON object per line; bytes that are not text go out as hex
  local function log(event, fields)
    local t = { t = now_wall(), node = name, event = event }
    for k, v in pairs(fields or {}) do
      if type(v) == "string" and not v:match("^[%g ]*$") then v = keys.hex(v) end
      t[k] = v
    end
    io.stdout:write(cjson.encode(t), "\n")
  end
  local function fail(status, fmt, ...)
    local msg = string.format(fmt, ...)
    io.stderr:write("csm node: ", msg, "\n")
    log("stop", { status = status, error = msg })
    io.stdout:flush()
    return status
  end

  local cfg, why = config.read(args.config)
  if not cfg then return fail(node.CONFIG, "%s", why) end
  local me = cfg.by_name[name]
  if not me then return fail(node.CONFIG, "%s: no node named %s", args.config, name) end
  local key, kwhy = keys.read(args.key)
  if not key then return fail(node.CONFIG, "%s", kwhy) end
  if key.public ~= me.public then
    return fail(node.CONFIG, "%s: the key's public key %s is not %s's in %s (%s)", args.key,
      keys.hex(key.public), name, args.config, keys.hex(me.public))
  end
  local store, swhy, scode = wal.open(args.data, { fingerprint = cfg.fingerprint, public = key.public,
    repair = args.repair })
  if not store then
    return fail(scode == "io" and node.STORAGE or node.DATA, "%s", swhy)
  end
  if store.repaired then log("repaired", store.repaired) end
  if (store.cut or 0) > 0 then log("cut", { bytes = store.cut }) end
  local restarted = #store:records() > 0
  -- fsyncs, for the figures (csm local reports them per rank)
  local syncs = 0
  local sync = store.sync
  store.sync = function(st, done)
    syncs = syncs + 1
    return sync(st, done)
  end

  local t = transport.new { name = name, key = key, config = cfg,
    log = function(event, fields)
      if event ~= "refused" then log(event, fields) end
    end }
  local ok, lwhy = t:start()
  if not ok then
    store:close()
    return fail(node.CONFIG, "%s", lwhy)
  end

  local protocol = require(config.protocols[cfg.protocol])
  local status
  local stop
  local target = args.ranks
  local timing = cfg.timing
  local n = protocol.node {
    name = name, names = cfg.names, world = csm.loop(), network = t,
    signer = keys.signer(key, (function()
      local publics = {}
      for _, nd in ipairs(cfg.nodes) do publics[nd.name] = nd.public end
      return publics
    end)()),
    store = store, sync = restarted or args.rejoin, initial = csm.value("genesis", 0),
    timing = timing.scale and { scale = timing.scale } or nil,
    view_timeout = timing.view_timeout, sync_wait = timing.sync_wait,
    on_finalize = function(_, rank, state)
      log("finalized", { rank = rank, id = state:identity(), digest = protocol.digest(state) })
      if target and rank >= target then stop(0) end
    end,
    note = function(kind, fields)
      if kind == "storage" then
        log("storage", fields)
        stop(node.STORAGE, "the store failed: " .. tostring(fields.error))
      elseif kind == "evidence" then
        log("evidence", { voter = fields.voter, kind = fields.kind, rank = fields.rank,
          attempt = fields.attempt })
      elseif kind == "abstain" then
        log("abstain", fields)
      end
    end,
  }

  -- refusals by reason, the protocol's and the transport's, every 5 s when
  -- they changed
  local last = ""
  local function refusals()
    local counts = {}
    for k, v in pairs(n.refusals or {}) do counts[k] = v end
    for k, v in pairs(t.stats.refused) do counts["transport: " .. k] = v end
    local keys_ = {}
    for k in pairs(counts) do keys_[#keys_ + 1] = k end
    table.sort(keys_)
    local parts = {}
    for _, k in ipairs(keys_) do parts[#parts + 1] = k .. "=" .. counts[k] end
    local text = table.concat(parts, ",")
    if text ~= last then
      last = text
      log("refusals", { counts = next(counts) and counts or nil, dropped = t.stats.dropped })
    end
    log("stats", { height = n.height, syncs = syncs, sent = t.stats.sent, delivered = t.stats.delivered,
      dropped = t.stats.dropped, rss = uv.resident_set_memory(), heap_kib = collectgarbage("count") })
  end
  local ticker = uv.new_timer()
  ticker:start(5000, 5000, refusals)

  local signals = {}
  stop = function(code, msg)
    if status then return end
    status = code
    refusals()
    ticker:close()
    for _, s in ipairs(signals) do s:close() end
    n.sm:close()
    t:close()
    store:close()
    if msg then io.stderr:write("csm node: ", msg, "\n") end
    log("stop", { status = code, error = msg, height = n.height, syncs = syncs })
    io.stdout:flush()
  end
  for _, sig in ipairs { "sigterm", "sigint" } do
    local s = uv.new_signal()
    s:start(sig, function() stop(0) end)
    signals[#signals + 1] = s
  end

  log("start", { address = me.address, cluster = cfg.cluster, height = n.height, restarted = restarted,
    public = keys.hex(key.public) })
  n:start()
  while status == nil do
    uv.run("once")
  end
  return status
end

return node
