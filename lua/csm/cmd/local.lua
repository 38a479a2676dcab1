--- `csm local` (being built).
-- @module csm.cmd.local
local cmd = require "csm.cmd"
local m = {}
m.summary = "(not yet available)"
function m.add(c) end
function m.run(args) cmd.usage_error("csm local is not available yet") end
return m
