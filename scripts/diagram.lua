#!/usr/bin/env lua
-- Writes the machine's transition diagram, with how often each edge was
-- taken in a short 4-node run, as Graphviz DOT, Mermaid, and (when
-- Graphviz's `dot` is installed) PNG.
--   lua5.4 scripts/diagram.lua [out-prefix]   -> csm.dot, csm.mmd, csm.png
local csm = require "csm"
local net = require "csm.lab.net"
local reference = require "csm.protocols.reference"

local prefix = arg[1] or "csm"
local world = csm.sim { seed = 1 }
local network = net.new(world, { latency = 0.01, jitter = 0.005, loss = 0.1 })
local names = { "n01", "n02", "n03", "n04" }
local nodes = {}
for i, name in ipairs(names) do
  nodes[i] = reference.node { name = name, names = names, world = world, network = network,
    initial = csm.value("genesis", 0) }
end
for _, node in ipairs(nodes) do node:start() end
world:run_until(function() return nodes[1].height >= 50 end, 3600)
local sm = nodes[1].sm

local function write(path, text)
  local fh = assert(io.open(path, "w"))
  fh:write(text)
  fh:close()
  print("wrote " .. path)
end
write(prefix .. ".dot", csm.viz.dot(sm))
write(prefix .. ".mmd", csm.viz.mermaid(sm))
io.write(csm.viz.transition_table(sm))
if os.execute("command -v dot >/dev/null 2>&1") then
  if os.execute(string.format("dot -Tpng %q -o %q", prefix .. ".dot", prefix .. ".png")) then
    print("wrote " .. prefix .. ".png")
  end
else
  print("Graphviz is not installed: no PNG (apt-get install graphviz)")
end
for _, node in ipairs(nodes) do node.sm:close() end
