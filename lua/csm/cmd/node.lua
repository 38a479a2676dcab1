--- `csm node` (being built).
-- @module csm.cmd.node
local cmd = require "csm.cmd"
local m = {}
m.summary = "(not yet available)"
function m.add(c) end
function m.run(args) cmd.usage_error("csm node is not available yet") end
return m
