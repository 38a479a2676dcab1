--- Memory samples for soaks and benchmarks: the process's resident set and
-- the Lua heap.
-- @module csm.lab.memory

local memory = {}

--- The resident set size in bytes (from /proc/self/statm; 0 where there is
-- none).
function memory.rss_bytes()
  local fh = io.open("/proc/self/statm")
  if not fh then return 0 end
  local _, resident = fh:read("*n", "*n")
  fh:close()
  return (resident or 0) * 4096
end

--- The Lua heap in bytes; after two full collections when collect is true.
function memory.heap_bytes(collect)
  if collect then
    collectgarbage("collect")
    collectgarbage("collect")
  end
  return collectgarbage("count") * 1024
end

return memory
