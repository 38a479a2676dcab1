-- Checks the logs of a real-fault run of scripts/realnet.sh: the node whose
-- store failed (its log first) exited 4 after logging the failure and
-- finalized nothing after it, and the other nodes went on finalizing past
-- the rank it stopped at.
-- Usage: lua5.4 tools/realnet_check.lua WHAT STATUS FAILED.log OTHER.log...
--        lua5.4 tools/realnet_check.lua heights LOG...   the highest rank
--          each log finalized, on one line; exits 1 if two logs finalized
--          different states at one rank, or one logged evidence
local cjson = require "cjson.safe"

local what, status = arg[1], tonumber(arg[2])
local fail
local function events(path)
  local list = {}
  local fh = io.open(path)
  if not fh then return list end -- (a node that has not logged yet)
  fh:close()
  for line in io.lines(path) do
    local e = cjson.decode(line)
    if type(e) == "table" then list[#list + 1] = e end
  end
  return list
end
function fail(fmt, ...)
  io.stderr:write("realnet_check ", what, ": ", string.format(fmt, ...), "\n")
  os.exit(1)
end

if what == "heights" then
  local by_rank, out = {}, {}
  for i = 2, #arg do
    local top = 0
    for _, e in ipairs(events(arg[i])) do
      if e.event == "finalized" then
        top = math.max(top, e.rank)
        local seen = by_rank[e.rank]
        if seen and seen ~= e.digest then fail("rank %d: %s and %s", e.rank, seen, tostring(e.digest)) end
        by_rank[e.rank] = e.digest
      elseif e.event == "evidence" then
        fail("%s logged evidence: %s signed two %ss at rank %s", arg[i], tostring(e.voter), tostring(e.kind),
          tostring(e.rank))
      end
    end
    out[#out + 1] = string.format("%d", top)
  end
  print(table.concat(out, " "))
  os.exit(0)
end
if status ~= 4 then fail("the node exited %s, not 4", tostring(status)) end
local failed, height, stopped = events(arg[3]), 0, false
for _, e in ipairs(failed) do
  if e.event == "storage" then stopped = true end
  if e.event == "finalized" then
    if stopped then fail("%s finalized rank %d after its store failed", arg[3], e.rank) end
    height = math.max(height, e.rank)
  end
end
if not stopped then fail("%s logged no storage failure", arg[3]) end
for i = 4, #arg do
  local top = 0
  for _, e in ipairs(events(arg[i])) do
    if e.event == "finalized" then top = math.max(top, e.rank) end
  end
  if top <= height + 1 then
    fail("%s reached only rank %d (the failed node stopped at %d)", arg[i], top, height)
  end
end
print(string.format("realnet_check %s: exit 4 at rank %d after the store failed; the others went on", what,
  height))
