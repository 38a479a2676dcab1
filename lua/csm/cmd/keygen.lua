--- `csm keygen` (being built).
-- @module csm.cmd.keygen
local cmd = require "csm.cmd"
local m = {}
m.summary = "(not yet available)"
function m.add(c) end
function m.run(args) cmd.usage_error("csm keygen is not available yet") end
return m
