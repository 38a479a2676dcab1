--- The lab's store: what a node writes down so that a crash cannot make
-- it forget, kept as the bytes a disk would hold. The interface, which the
-- real node's write-ahead log offers too:
--
--     store:append(bytes)       -- a record; not durable until a sync
--     store:sync(done)          -- done(true) once every appended record is
--                               -- durable, or done(nil, err, code); a node
--                               -- sends what a record guards only then
--     store:records()           -- the durable records, oldest first (a
--                               -- torn tail is cut)
--     store:rewrite(list, done) -- replaces every record by list, atomically
--                               -- (compaction), then done(true)
--     store:writes()            -- how many records were appended, ever
--
-- The lab's store frames each record (its length and a checksum) into one
-- byte string, its "file". A crash (store:crash{ keep =, tear = }) loses
-- what was appended and not synced — or keeps the first `keep` of those
-- records, as a disk may have written some — and with `tear` leaves the
-- next one half written; recovery reads the file back with the checks a
-- disk store makes, so the code a real restart runs is exercised by every
-- simulated crash. `on_append(fn)` calls fn(count) at each append (the lab
-- crashes a node there: the crash-at-every-write test).
-- @module csm.lab.store

local check = require "csm.check"
local fnv = require "csm.fnv"

local format, concat, sub = string.format, table.concat, string.sub

local store = {}

local Store = {}
Store.__index = Store

-- A frame: "<length>:<checksum>:<bytes>"; the checksum covers the length
-- and the bytes.
local function frame(bytes)
  local len = tostring(#bytes)
  return format("%s:%08x:%s", len, fnv.hash32(bytes, fnv.hash32(len)), bytes)
end

-- The records of file, and the byte offset where the intact frames end.
local function parse(file)
  local out, pos = {}, 1
  while pos <= #file do
    local len, sum, body = file:match("^(%d+):(%x%x%x%x%x%x%x%x):()", pos)
    if len == nil then break end
    local n = tonumber(len)
    local bytes = sub(file, body, body + n - 1)
    if #bytes < n or format("%08x", fnv.hash32(bytes, fnv.hash32(len))) ~= sum then break end
    out[#out + 1] = bytes
    pos = body + n
  end
  return out, pos - 1
end

--- A new, empty store.
function store.sim()
  return setmetatable({ file = "", pending = {}, appended = 0, cut = 0, crashed = false }, Store)
end

--- Adds a record (a string); durable after the next sync.
function Store:append(bytes)
  if type(bytes) ~= "string" then check.argerror("store:append", 1, "bytes", "string expected", bytes) end
  if self.crashed then return end
  self.appended = self.appended + 1
  local pending = self.pending
  pending[#pending + 1] = bytes
  if self.hook then self.hook(self.appended) end
end

--- Makes every appended record durable, then calls done(true). A crashed
-- store never calls done: what the sync guarded is never sent.
function Store:sync(done)
  if type(done) ~= "function" then check.argerror("store:sync", 1, "done", "function expected", done) end
  if self.crashed then return end
  local pending = self.pending
  if #pending > 0 then
    local parts = { self.file }
    for i, bytes in ipairs(pending) do parts[i + 1] = frame(bytes) end
    self.file = concat(parts)
    self.pending = {}
  end
  done(true)
end

--- The durable records, oldest first; a torn tail is cut from the file
-- (store.cut counts the bytes cut, over the store's life).
function Store:records()
  local list, intact = parse(self.file)
  if intact < #self.file then
    self.cut = self.cut + #self.file - intact
    self.file = sub(self.file, 1, intact)
  end
  return list
end

--- Replaces every record with those of list (compaction), atomically, then
-- done(true).
function Store:rewrite(list, done)
  if type(list) ~= "table" then check.argerror("store:rewrite", 1, "list", "table expected", list) end
  if self.crashed then return end
  local parts = {}
  for i, bytes in ipairs(list) do parts[i] = frame(bytes) end
  self.file, self.pending = concat(parts), {}
  if done then done(true) end
end

--- How many records were appended over the store's life.
function Store:writes()
  return self.appended
end

--- The file's size in bytes.
function Store:size()
  return #self.file
end

--- Calls fn(count) at each append, after counting it (nil: no more).
function Store:on_append(fn)
  self.hook = fn
end

--- A crash: the store takes no more writes and completes no more syncs
-- until store:recover(). Of what was appended and not synced, the first
-- `keep` records (default 0) reach the file, and with `tear` half of the
-- next one does.
function Store:crash(o)
  o = o or {}
  local pending, parts = self.pending, { self.file }
  local keep = math.min(o.keep or 0, #pending)
  for i = 1, keep do parts[#parts + 1] = frame(pending[i]) end
  local torn = pending[keep + 1]
  if o.tear and torn then
    local f = frame(torn)
    parts[#parts + 1] = sub(f, 1, math.max(1, math.floor(#f / 2)))
  end
  self.file, self.pending, self.crashed = concat(parts), {}, true
end

--- Opens the store again after a crash (a restarted node's).
function Store:recover()
  self.crashed = false
  self.hook = nil
  return self
end

--- Whether x has the store interface.
function store.is_store(x)
  return type(x) == "table" and type(x.append) == "function" and type(x.sync) == "function"
    and type(x.records) == "function" and type(x.rewrite) == "function"
end

return store
