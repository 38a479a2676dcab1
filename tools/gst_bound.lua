--- How long after a global stabilization time (gst) every honest node of
-- the reference protocol finalizes again, over many seeds: each seed draws
-- a swarm of faults (loss up to 20 %, partitions, an isolation, a pause:
-- csm.lab.generate) over the first HORIZON virtual seconds, a gst ends them
-- at HORIZON, and the run goes on AFTER seconds more. Prints the worst
-- delay over seeds and nodes, and exits 1 when a node finalized nothing
-- after the gst, or when agreement broke.
--
--   lua5.4 tools/gst_bound.lua [--seeds A-B] [--nodes N] [--adversary FILE] [--horizon S] [--after S]
local harness = require "csm.lab.harness"
local generate = require "csm.lab.generate"
local net = require "csm.lab.net"

local o = { first = 1, last = 20, nodes = 4, horizon = 300, after = 90 }
local i = 1
while i <= #arg do
  local k, v = arg[i], arg[i + 1]
  if k == "--seeds" then
    o.first, o.last = v:match("^(%d+)-(%d+)$")
    o.first, o.last = tonumber(o.first), tonumber(o.last)
  elseif k == "--nodes" then o.nodes = tonumber(v)
  elseif k == "--adversary" then o.adversary = dofile(v)
  elseif k == "--horizon" then o.horizon = tonumber(v)
  elseif k == "--after" then o.after = tonumber(v)
  else
    io.stderr:write("usage: tools/gst_bound.lua [--seeds A-B] [--nodes N] [--adversary FILE] [--horizon S] "
      .. "[--after S]\n")
    os.exit(2)
  end
  if not (o.first and o.last and o.nodes and o.horizon and o.after) then
    io.stderr:write("gst_bound: bad value for " .. k .. "\n")
    os.exit(2)
  end
  i = i + 2
end

local f = math.floor((o.nodes - 1) / 3)
local worst, where, failed = 0, nil, 0
for seed = o.first, o.last do
  local d = generate.draw(seed)
  local rates, schedule = generate.swarm(d, net.names(o.nodes), o.horizon)
  schedule[#schedule + 1] = { kind = "gst", at = o.horizon }
  local c = { nodes = o.nodes, seed = seed, ranks = 1e9, time = o.horizon + o.after, loss = rates.loss,
              duplicate = rates.duplicate, reorder = rates.reorder, schedule = schedule, restarts = 1 }
  if o.adversary then
    c.adversary, c.byzantine = o.adversary, { adversary = f }
  end
  local r = harness.run(c)
  local ok = r.agreement and r.safe
  for _, node in ipairs(r.nodes) do
    if node.part == "honest" then
      local first
      for _, t in pairs(r.finalized_at[node.name]) do
        if t >= o.horizon and (first == nil or t < first) then first = t end
      end
      if first == nil then
        ok = false
      elseif first - o.horizon > worst then
        worst, where = first - o.horizon, string.format("seed %d, %s", seed, node.name)
      end
    end
  end
  if not ok then
    failed = failed + 1
    print(string.format("seed %d: %s", seed, r.agreement
      and string.format("a node finalized nothing within %g s of the gst", o.after) or "agreement VIOLATED"))
  end
end
print(string.format("gst_bound: %d seeds, %d nodes%s: every honest node finalized within %.3f s of the gst "
  .. "(worst: %s); %d failed", o.last - o.first + 1, o.nodes,
  o.adversary and (", " .. f .. " adversary") or "", worst, where or "-", failed))
os.exit(failed == 0 and 0 or 1)
