--- `csm diagram`: the machine's transition diagram, with how often each
-- edge was taken in a short 4-node run, as Graphviz DOT and Mermaid, and as
-- PNG when Graphviz's `dot` is installed (run directly, never through a
-- shell).
-- @module csm.cmd.diagram

local cmd = require "csm.cmd"
local csm = require "csm"
local cluster = require "csm.lab.cluster"
local checker = require "csm.lab.checker"
local reference = require "csm.protocols.reference"

local diagram = {}

diagram.summary = "Draw the machine's transition diagram (DOT, Mermaid, PNG)."

function diagram.add(c)
  c:description([[
Runs 4 reference nodes (10 % loss) until the first has finalized --ranks
ranks, then writes the first node's transition diagram, each edge labelled
with how often it was taken: PREFIX.dot (Graphviz), PREFIX.mmd (Mermaid)
and, when Graphviz's dot is installed, PREFIX.png. Prints the transition
table.]])
  c:option("--out", "Prefix of the files written.", "csm")
  c:option("--ranks", "Ranks the first node finalizes first.", "50"):convert(cmd.integer("--ranks", 0))
  cmd.seed_option(c)
end

local function write(path, text)
  local fh, err = io.open(path, "w")
  if not fh then cmd.usage_error("cannot write %s", tostring(err)) end
  fh:write(text)
  fh:close()
  print("wrote " .. path)
end

-- Runs dot -Tpng on the DOT file (no shell). Returns true, or nil and why.
local function render_png(dot, png)
  local status, err = cmd.spawn("dot", { "-Tpng", dot, "-o", png })
  if not status then
    if tostring(err):find("ENOENT", 1, true) then
      return nil, "Graphviz is not installed: no PNG (apt-get install graphviz)"
    end
    if tostring(err):find("luv", 1, true) then return nil, err end
    return nil, "cannot run dot: " .. tostring(err)
  end
  if status ~= 0 then return nil, "dot failed (exit " .. tostring(status) .. ")" end
  return true
end

function diagram.run(args)
  local world = csm.sim { seed = args.seed }
  local nodes = cluster.new { protocol = reference, n = 4, world = world,
    params = { latency = 0.01, jitter = 0.005, loss = 0.1 } }
  for _, node in ipairs(nodes) do node:start() end
  world:run_until(function() return checker.reached({ nodes[1] }, args.ranks) end, 3600)
  local sm = nodes[1].sm
  local prefix = args.out
  write(prefix .. ".dot", csm.viz.dot(sm))
  write(prefix .. ".mmd", csm.viz.mermaid(sm))
  io.write(csm.viz.transition_table(sm))
  for _, node in ipairs(nodes) do node.sm:close() end
  local ok, why = render_png(prefix .. ".dot", prefix .. ".png")
  if ok then print("wrote " .. prefix .. ".png") else print(why) end
  return cmd.OK
end

return diagram
