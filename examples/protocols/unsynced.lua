--- The reference protocol with a planted bug: a node sends what a record
-- guards before the record is synced to its store (the order a careless
-- disk store gets wrong). A crash between the send and the sync loses the
-- record while the message is out; the restarted node does not know what
-- it sent, and may send something else in the same slot. The lab's
-- crash-at-every-write sweep catches it as honest equivocation.
--
--   bin/csm experiment --protocol examples/protocols/unsynced.lua \
--     --fault 'crash node=n01 when=n01.write=9 restart_after=0.3' --ranks 25 --loss 0.05
local reference = require "csm.protocols.reference"

local unsynced = {}
for k, v in pairs(reference) do unsynced[k] = v end
unsynced.name = "unsynced"

-- Sends first, then writes and syncs.
local function guarded(self, fields, send)
  send()
  self:write(fields)
  self:flush()
end

function unsynced.node(options)
  local node = reference.node(options)
  node.guarded = guarded
  return node
end

return unsynced
