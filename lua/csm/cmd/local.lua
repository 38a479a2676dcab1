--- `csm local`: the real-network twin of `csm experiment`. It writes keys
-- and a cluster configuration into a directory, starts N `csm node`
-- processes on loopback, optionally kills a random one with SIGKILL every
-- S seconds and starts it again on its data, stops when every node
-- finalized R ranks, and checks agreement from the nodes' logs.
-- @module csm.cmd.local

local cmd = require "csm.cmd"
local percentile = require("csm.lab.report").percentile

local M = {}

M.summary = "Run N real nodes on this machine (processes, TCP, fsync), kill some, check agreement."

function M.add(c)
  c:description([[
Writes a key per node and cluster.json into --dir (a new temporary
directory by default, kept afterwards), starts --nodes `csm node`
processes on 127.0.0.1 with their logs in DIR/nNN.log and data in DIR/nNN,
and waits until every node finalized --ranks ranks. With --kill-every S, a
random node is killed (SIGKILL) every S seconds, jittered by up to a
quarter, and started again at once on its data. Then every node is sent
SIGTERM and the report is printed: ranks, rounds per second, the time
between a node's finalizations (p50, p99), restarts, and agreement — no two
nodes logged different states for one rank, and no node logged evidence
of a double vote.

With --duration S the run lasts S seconds, and every node must have
finalized a rank in the last quarter of it. With --stop-for S one node is
stopped (SIGSTOP) for S seconds and must catch up. The report gives each
node's largest resident memory (from its periodic stats line) and the
fsyncs per finalized rank.

Exit status: 0 all nodes reached --ranks in agreement, 1 agreement or the
no-double-vote check failed (or a node's memory passed --rss-limit), 2 a
usage error or a node refused to start, 3 --timeout passed first.]])
  c:option("--nodes", "Nodes.", "4"):convert(cmd.integer("--nodes", 1, 64))
  c:option("--ranks", "Ranks every node finalizes.", "50"):convert(cmd.integer("--ranks", 1))
  c:option("--kill-every", "Kill a random node every S seconds (SIGKILL) and restart it.")
    :argname("S"):convert(cmd.number("--kill-every", 0.1))
  c:option("--duration", "Run for S seconds instead of to --ranks (with --kill-every: a kill soak).")
    :argname("S"):convert(cmd.number("--duration", 1))
  c:option("--stop-for", "Stop a random node (SIGSTOP) for S seconds, 2 s in, then continue it (SIGCONT).")
    :argname("S"):convert(cmd.number("--stop-for", 0.1))
  c:option("--rss-limit", "Fail if a node's resident memory passes this many MiB.", "256")
    :argname("MIB"):convert(cmd.number("--rss-limit", 1))
  c:option("--dir", "Directory for keys, configuration, data and logs (default: a new one in /tmp).")
  c:option("--port", "First TCP port (nodes use PORT .. PORT+N-1; default: a free range).")
    :convert(cmd.integer("--port", 1024, 65000))
  c:option("--timeout", "Give up after this many wall seconds.", "300"):convert(cmd.number("--timeout", 1))
  c:option("--scale", "The protocol's timing scale (cluster.json's timing.scale).", "1")
    :convert(cmd.number("--scale", 0.001))
  c:option("--seed", "Seed of the kill schedule (default: from the clock)."):convert(cmd.integer("--seed", 0))
  c:flag("--quiet", "Print only the report.")
end

local function now_wall()
  local s, us = require("luv").gettimeofday()
  return s + us / 1e6
end


-- A free range of n TCP ports on 127.0.0.1 from a random start, below
-- Linux's ephemeral ports, which outgoing connections take.
local function free_ports(uv, n)
  for _ = 1, 50 do
    local base = 10000 + math.random(0, 22000) -- below the ephemeral ports (32768-)
    local ok = true
    for i = 0, n - 1 do
      local s = uv.new_tcp()
      local bound = s:bind("127.0.0.1", base + i)
      s:close()
      if not bound then ok = false break end
    end
    uv.run("nowait")
    if ok then return base end
  end
  return nil
end

function M.run(args)
  local uv = require "luv"
  local cjson = require("cjson.safe").new()
  local keys = require "csm.node.keys"
  local config = require "csm.node.config"
  local n, target = args.nodes, args.ranks
  local say = args.quiet and function() end or function(fmt, ...) print(string.format(fmt, ...)) end
  math.randomseed(args.seed or os.time())

  local dir = args.dir
  if not dir then
    dir = uv.fs_mkdtemp("/tmp/csm-local-XXXXXX")
    if not dir then cmd.usage_error("cannot make a directory in /tmp") end
  else
    local st = uv.fs_stat(dir)
    if not st then
      local ok, err = uv.fs_mkdir(dir, 448)
      if not ok then cmd.usage_error("--dir: cannot make %s: %s", dir, tostring(err)) end
    elseif st.type ~= "directory" then
      cmd.usage_error("--dir: %s is not a directory", dir)
    end
  end
  local port = args.port or free_ports(uv, n)
  if not port then cmd.usage_error("no free range of %d ports found on 127.0.0.1", n) end

  -- keys (reused when --dir already holds them) and the configuration
  local nodes = {}
  for i = 1, n do
    local name = string.format("n%02d", i)
    local path = string.format("%s/%s.key", dir, name)
    local key = keys.read(path)
    if not key then
      key = keys.generate()
      local ok, err = keys.write(path, key)
      if not ok then cmd.usage_error("%s", err) end
    end
    nodes[i] = { name = name, public = key.public, address = "127.0.0.1:" .. (port + i - 1), key = path,
                 data = dir .. "/" .. name, log = dir .. "/" .. name .. ".log" }
  end
  local cfg_path = dir .. "/cluster.json"
  local fh = assert(io.open(cfg_path, "w"))
  fh:write(config.json("local", nodes, { scale = args.scale }))
  fh:close()
  say("csm local: %d nodes in %s, ports %d-%d", n, dir, port, port + n - 1)

  local command = cmd.self_command()
  local program = command[1]
  local base = {}
  for k = 2, #command do base[#base + 1] = command[k] end

  local by_rank = {}       -- rank -> { id = first id, by = node }
  local conflicts = {}
  local evidence = 0
  local started = uv.hrtime()
  local gaps = {}
  local restarts = 0
  local failure
  local live = 0

  local function on_line(node, line)
    node.logf:write(line, "\n")
    local e = cjson.decode(line)
    if type(e) ~= "table" then return end
    if e.event == "finalized" and type(e.rank) == "number" then
      local seen = by_rank[e.rank]
      if seen == nil then
        by_rank[e.rank] = { id = e.digest, by = node.name }
      elseif seen.id ~= e.digest and #conflicts < 20 then
        conflicts[#conflicts + 1] = string.format("rank %d: %s finalized %s, %s finalized %s", e.rank,
          seen.by, tostring(seen.id), node.name, tostring(e.digest))
      end
      if e.rank > node.height then
        if node.last_t and e.rank == node.height + 1 then gaps[#gaps + 1] = e.t - node.last_t end
        node.height, node.last_t = e.rank, e.t
      end
    elseif e.event == "evidence" then
      evidence = evidence + 1
    elseif (e.event == "stats" or e.event == "stop") and type(e.syncs) == "number" then
      node.syncs_now = e.syncs
      if type(e.rss) == "number" and e.rss > (node.rss or 0) then node.rss = e.rss end
      if e.event == "stop" then
        node.syncs_total = (node.syncs_total or 0) + e.syncs
        node.syncs_now = 0
      end
    end
  end

  local function start(node)
    local out = uv.new_pipe(false)
    local a = {}
    for _, x in ipairs(base) do a[#a + 1] = x end
    for _, x in ipairs { "node", "--config", cfg_path, "--name", node.name, "--key", node.key,
                         "--data", node.data } do
      a[#a + 1] = x
    end
    local handle, pid
    handle, pid = uv.spawn(program, { args = a, stdio = { nil, out, 2 } }, function(code, signal)
      node.running = false
      live = live - 1
      node.handle:close()
      node.exit, node.signal = code, signal
      if not node.killed and not node.stopping then
        failure = failure or string.format("%s exited with status %d (signal %d): see %s", node.name,
          code, signal, node.log)
      end
    end)
    if not handle then
      failure = string.format("cannot start %s: %s", node.name, tostring(pid))
      out:close()
      return
    end
    node.handle, node.pid, node.running, node.killed = handle, pid, true, false
    live = live + 1
    local buf = ""
    out:read_start(function(err, chunk)
      if err or not chunk then
        if buf ~= "" then on_line(node, buf) end
        buf = ""
        out:close()
        return
      end
      buf = buf .. chunk
      while true do
        local i = buf:find("\n", 1, true)
        if not i then break end
        on_line(node, buf:sub(1, i - 1))
        buf = buf:sub(i + 1)
      end
    end)
  end

  for _, node in ipairs(nodes) do
    node.height = 0
    node.logf = assert(io.open(node.log, "a"))
    start(node)
  end

  local function all_done()
    if args.duration then return (uv.hrtime() - started) / 1e9 >= args.duration end
    for _, node in ipairs(nodes) do
      if node.height < target then return false end
    end
    return true
  end

  if args.stop_for then
    local stopper = uv.new_timer()
    stopper:start(2000, 0, function()
      local node = nodes[math.random(1, n)]
      if not node.running then return stopper:close() end
      uv.kill(node.pid, "sigstop")
      say("  stopped %s at rank %d for %.1f s", node.name, node.height, args.stop_for)
      stopper:start(math.floor(args.stop_for * 1000), 0, function()
        if node.running then uv.kill(node.pid, "sigcont") end
        say("  continued %s", node.name)
        node.continued_at = uv.hrtime()
        stopper:close()
      end)
    end)
  end

  local killer
  if args.kill_every then
    killer = uv.new_timer()
    local function arm()
      local s = args.kill_every * (0.75 + 0.5 * math.random())
      killer:start(math.floor(s * 1000), 0, function()
        local node = nodes[math.random(1, n)]
        if node.running and not all_done() then
          node.killed = true
          uv.kill(node.pid, "sigkill")
          restarts = restarts + 1
          say("  killed %s at rank %d (%.1f s)", node.name, node.height, (uv.hrtime() - started) / 1e9)
          local again = uv.new_timer()
          local function restart()
            if node.running then return again:start(20, 0, restart) end
            again:close()
            if not failure then start(node) end
          end
          again:start(20, 0, restart)
        end
        arm()
      end)
    end
    arm()
  end

  local progress = uv.new_timer()
  progress:start(2000, 2000, function()
    local hs = {}
    for i, node in ipairs(nodes) do hs[i] = string.format("%d", node.height) end
    say("  %.0f s: ranks %s", (uv.hrtime() - started) / 1e9, table.concat(hs, " "))
  end)

  local deadline = started + math.max(args.timeout, (args.duration or 0) + 30) * 1e9
  local timed_out = false
  while not failure and not all_done() do
    uv.run("once")
    if uv.hrtime() > deadline then timed_out = true break end
  end
  local elapsed = (uv.hrtime() - started) / 1e9
  if killer then killer:close() end
  progress:close()
  for _, node in ipairs(nodes) do
    node.stopping = true
    if node.running then uv.kill(node.pid, "sigterm") end
  end
  local wait_until = uv.hrtime() + 10e9
  while live > 0 and uv.hrtime() < wait_until do uv.run("once") end
  for _, node in ipairs(nodes) do
    if node.running then uv.kill(node.pid, "sigkill") end
  end
  while live > 0 do uv.run("once") end
  uv.run("nowait")
  local bad_exit = {}
  for _, node in ipairs(nodes) do
    node.logf:close()
    if node.exit ~= 0 and not node.killed then
      bad_exit[#bad_exit + 1] = node.name .. "=" .. tostring(node.exit)
    end
  end

  table.sort(gaps)
  local low, high = math.huge, 0
  local syncs, rss = 0, {}
  for _, node in ipairs(nodes) do
    low, high = math.min(low, node.height), math.max(high, node.height)
    syncs = syncs + (node.syncs_total or 0) + (node.syncs_now or 0)
    rss[#rss + 1] = string.format("%s %.1f", node.name, (node.rss or 0) / 1048576)
  end
  print(string.format("csm local: %d nodes, %s, %s", n,
    args.duration and string.format("%.0f s", args.duration) or (target .. " ranks"), dir))
  print(string.format("  ranks finalized: lowest %d in %.2f s: %.1f ranks/s", low, elapsed, low / elapsed))
  print(string.format("  between finalizations: p50 %.4f s, p99 %.4f s (%d gaps)", percentile(gaps, 0.5),
    percentile(gaps, 0.99), #gaps))
  print(string.format("  restarts: %d (SIGKILL)", restarts))
  print(string.format("  fsyncs: %d, %.1f per rank per node (counted to the last stats line)", syncs,
    syncs / math.max(1, high) / n))
  print("  largest RSS (MiB): " .. table.concat(rss, ", "))
  print(string.format("  agreement: %s", #conflicts == 0 and "ok" or "VIOLATED"))
  for _, c in ipairs(conflicts) do print("    " .. c) end
  print(string.format("  double votes (evidence the nodes logged): %d", evidence))
  if #bad_exit > 0 then print("  nodes that exited badly on SIGTERM: " .. table.concat(bad_exit, ", ")) end
  if failure then
    print("  failed: " .. failure)
    return cmd.USAGE
  end
  local heavy = {}
  for _, node in ipairs(nodes) do
    if (node.rss or 0) > args.rss_limit * 1048576 then heavy[#heavy + 1] = node.name end
  end
  if #heavy > 0 then
    print(string.format("  resident memory beyond --rss-limit %.0f MiB: %s", args.rss_limit,
      table.concat(heavy, ", ")))
  end
  if #conflicts > 0 or evidence > 0 or #heavy > 0 then return cmd.VIOLATED end
  if args.duration and not timed_out then
    -- every node must still be finalizing at the end
    local late = {}
    for _, node in ipairs(nodes) do
      if not node.last_t or node.last_t < now_wall() - args.duration / 4 then late[#late + 1] = node.name end
    end
    if #late > 0 then
      print("  no progress in the last quarter of the run: " .. table.concat(late, ", "))
      return cmd.UNKNOWN
    end
  end
  if timed_out then
    print(string.format("  timed out after %.0f s", args.timeout))
    return cmd.UNKNOWN
  end
  if #bad_exit > 0 then return cmd.VIOLATED end
  return cmd.OK
end

return M
