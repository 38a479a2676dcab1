--- The durable store of a real node: a write-ahead log on disk, with the
-- lab store's interface (see csm.lab.store) plus open and close.
--
--     local store, err, code = wal.open(dir, { fingerprint = fp, public = pk })
--     store:append(bytes)          -- durable after the next completed sync
--     store:sync(function(ok, err, code) ... end)
--
-- `DIR/wal` is a header (magic "CSMWAL", the format version, the cluster
-- configuration's fingerprint, the node's public key and a CRC-32C of
-- those) and then records: a length (u32 big-endian, of the payload), a
-- CRC-32C (u32 big-endian) over the type byte and the payload seeded with
-- the previous record's CRC (the first record's with the header's), the
-- type byte (1) and the payload. The chain makes a record moved, dropped
-- or replayed from another log fail its check. `DIR/LOCK` is held (flock)
-- for the store's life. Writes and syncs run on libuv's thread pool
-- through luv, in call order; the first I/O error stops the store for
-- good, since a failed fdatasync may have dropped the dirty pages and a
-- retry could report success for data that never reached the disk.
--
-- Callbacks (done) run from libuv's callbacks: they must not raise.
-- @module csm.node.wal

local check = require "csm.check"
local core = require "csm.core"
local uv = require "luv"

local byte, char, sub, format, concat = string.byte, string.char, string.sub, string.format, table.concat
local floor = math.floor
local unpack = table.unpack or unpack -- luacheck: ignore 113
local crc32c, lock = core.crc32c, core.os.lock

local wal = {}

--- The format version this module writes and reads.
wal.VERSION = 1

--- The largest record payload, in bytes: a longer length field is damage.
wal.MAX_RECORD = 16 * 1024 * 1024

local MAGIC = "CSMWAL"
local HEADER = 6 + 2 + 32 + 32 + 4 -- magic, version, fingerprint, key, CRC
local FRAME = 9                   -- length, CRC, type
local RECORD = 1                  -- the type byte of a record
-- Appended bytes are handed to the disk once this many wait, so that a
-- node appending without syncing holds a bounded buffer.
local FLUSH_AT = 1024 * 1024

local Store = {}
Store.__index = Store

local function u32(n)
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

local function read_u32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function hex(s)
  return (s:gsub(".", function(c) return format("%02x", byte(c)) end))
end

local function refuse(message, code)
  return nil, message, code
end

-- The header of a log, and its CRC (the chain's seed).
local function header(fingerprint, public)
  local h = MAGIC .. char(0, wal.VERSION) .. fingerprint .. public
  local crc = crc32c(h)
  return h .. u32(crc), crc
end

-- One record's frame, chained to prev; returns the frame and its CRC.
local function frame(bytes, prev)
  local body = char(RECORD) .. bytes
  local crc = crc32c(body, prev)
  return u32(#bytes) .. u32(crc) .. body, crc
end

-- Frames every string of list after the header; returns the parts and the
-- last CRC.
local function frames(list, seed, parts)
  local crc = seed
  for i = 1, #list do
    parts[#parts + 1], crc = frame(list[i], crc)
  end
  return parts, crc
end

-- Whether a record chained to seed starts anywhere in data after from:
-- then damage at from is followed by intact records, not a torn tail.
local function intact_after(data, from, seed)
  local size = #data
  for q = from + 1, size - FRAME + 1 do
    if byte(data, q + 8) == RECORD then
      local len = read_u32(data, q)
      if q + FRAME + len - 1 <= size and len <= wal.MAX_RECORD
        and crc32c(sub(data, q + 8, q + 8 + len), seed) == read_u32(data, q + 4) then
        return true
      end
    end
  end
  return false
end

-- The records of a log's bytes after the header (data: the whole file,
-- seed: the header's CRC). Returns the list, the byte count of the intact
-- prefix, the last CRC, and when the log does not end there: "torn" (the
-- tail may be cut) or "damaged" with why, or "type" with the unknown type.
local function parse(data, seed, keep)
  local list, pos, size, crc = {}, HEADER + 1, #data, seed
  while pos <= size do
    if size - pos + 1 < FRAME then return list, pos - 1, crc, "torn" end
    local len, want = read_u32(data, pos), read_u32(data, pos + 4)
    local stop = pos + FRAME + len - 1
    if len > wal.MAX_RECORD or stop > size then
      -- its end is unknown: damage only if something intact follows it
      if intact_after(data, pos, want) then
        return list, pos - 1, crc, "damaged", len > wal.MAX_RECORD and "length out of range"
          or "length past the end of the file"
      end
      return list, pos - 1, crc, "torn"
    end
    if crc32c(sub(data, pos + 8, stop), crc) ~= want then
      if stop == size then return list, pos - 1, crc, "torn" end
      return list, pos - 1, crc, "damaged", "checksum mismatch"
    end
    local kind = byte(data, pos + 8)
    if kind ~= RECORD then return list, pos - 1, crc, "type", kind end
    if keep then list[#list + 1] = sub(data, pos + FRAME, stop) end
    crc, pos = want, stop + 1
  end
  return list, size, crc
end

-- Creates dir and its missing parents (mode 0700).
local function mkdirs(dir)
  if uv.fs_stat(dir) then return true end
  local path = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    if not uv.fs_stat(path) then
      local ok, err, name = uv.fs_mkdir(path, 448)
      if not ok and name ~= "EEXIST" then return nil, err, "io" end
    end
  end
  return true
end

-- Reads the first size bytes of fd (fewer if the file is shorter).
local function read_upto(fd, size)
  local parts, got = {}, 0
  while got < size do
    local chunk, rerr = uv.fs_read(fd, math.min(size - got, 64 * 1024 * 1024), got)
    if not chunk then return nil, rerr, "io" end
    if chunk == "" then break end
    parts[#parts + 1], got = chunk, got + #chunk
  end
  return concat(parts)
end

-- Reads the whole file of fd.
local function read_all(fd)
  local stat, err = uv.fs_fstat(fd)
  if not stat then return nil, err, "io" end
  return read_upto(fd, stat.size)
end

-- Writes data at offset of fd synchronously, all of it.
local function write_all(fd, data, offset)
  while #data > 0 do
    local n, err = uv.fs_write(fd, data, offset)
    if not n then return nil, err, "io" end
    if n == 0 then return nil, "write made no progress", "io" end
    data, offset = sub(data, n + 1), offset + n
  end
  return true
end

-- Writes a new file path with data, synced (not the directory), exclusively
-- when excl; returns its fd, open for reading and writing.
local function write_file(path, data, excl)
  local fd, err, name = uv.fs_open(path, excl and "wx+" or "w+", 384)
  if not fd then return nil, err, name == "EEXIST" and "exists" or "io" end
  local ok, werr = write_all(fd, data, 0)
  if ok then ok, werr = uv.fs_fdatasync(fd) end
  if not ok then
    uv.fs_close(fd)
    return nil, werr, "io"
  end
  return fd
end

-- Copies the log's bytes to DIR/wal.corrupt-<unix time> (synced; a suffix
-- when that name is taken); returns the backup's path.
local function backup(dir, data)
  local base = format("%s/wal.corrupt-%d", dir, os.time())
  for i = 1, 100 do
    local path = i == 1 and base or format("%s-%d", base, i)
    local fd, err, code = write_file(path, data, true)
    if fd then
      uv.fs_close(fd)
      return path
    end
    if code ~= "exists" then return nil, err, "io" end
  end
  return nil, base .. ": too many backups of this second", "io"
end

local function check_key(name, v)
  if type(v) ~= "string" or #v ~= 32 then
    check.fail("wal.open: option '%s' must be a 32-byte string (got %s)", name, check.show(v))
  end
end

-- Closes the store's descriptors and releases its lock (idempotent).
local function release(res)
  if res.fd then uv.fs_close(res.fd) res.fd = nil end
  if res.dirfd then uv.fs_close(res.dirfd) res.dirfd = nil end
  if res.lock then res.lock:unlock() res.lock = nil end
end

-- Finalizes the descriptors once the store is collected (a table's __gc
-- on Lua 5.4, a proxy's on LuaJIT, which has no __gc for tables).
local function guard(res)
  if newproxy then -- luacheck: ignore 113
    local p = newproxy(true) -- luacheck: ignore 113
    getmetatable(p).__gc = function() release(res) end
    return p
  end
  return setmetatable({}, { __gc = function() release(res) end })
end

--- Opens (creating when missing) the log in directory dir.
-- Options: `fingerprint` (32 bytes: the cluster configuration's hash),
-- `public` (32 bytes: the node's Ed25519 public key), `repair` (a damaged
-- log is backed up to DIR/wal.corrupt-<unix time> and cut at the damage).
-- A torn tail is cut (`store.cut` counts the bytes); a repair leaves
-- `store.repaired = { at = offset, backup = path }`.
-- @return the store, or nil, message, code: "locked", "foreign", "corrupt",
-- "format" or "io"
function wal.open(dir, opts)
  if type(dir) ~= "string" then check.argerror("wal.open", 1, "dir", "string expected", dir) end
  if type(opts) ~= "table" then check.argerror("wal.open", 2, "options", "table expected", opts) end
  check.options("wal.open", opts, { fingerprint = true, public = true, repair = true })
  check_key("fingerprint", opts.fingerprint)
  check_key("public", opts.public)
  check.type("wal.open", "repair", opts.repair, "boolean", true)
  if dir == "" or dir:find("\0", 1, true) then
    check.argerror("wal.open", 1, "dir", "directory path expected", dir)
  end
  local ok, err, code = mkdirs(dir)
  if not ok then return refuse(err, code) end
  local res = {}
  local function fail(message, c)
    release(res)
    return refuse(message, c)
  end
  res.lock, err, code = lock(dir .. "/LOCK")
  if not res.lock then return refuse(err, code) end
  local path, newpath = dir .. "/wal", dir .. "/wal.new"
  -- a rewrite that stopped before its rename: the old log is the log
  if uv.fs_stat(newpath) then
    ok, err = uv.fs_unlink(newpath)
    if not ok then return fail(err, "io") end
  end
  res.dirfd, err = uv.fs_open(dir, "r", 0)
  if not res.dirfd then return fail(err, "io") end
  local head, seed = header(opts.fingerprint, opts.public)
  if not uv.fs_stat(path) then
    -- made whole elsewhere and renamed, so a log never lacks its header
    res.fd, err = write_file(newpath, head, false)
    if not res.fd then return fail(err, "io") end
    ok, err = uv.fs_rename(newpath, path)
    if ok then ok, err = uv.fs_fsync(res.dirfd) end
    if not ok then return fail(err, "io") end
  else
    res.fd, err = uv.fs_open(path, "r+", 384)
    if not res.fd then return fail(err, "io") end
  end
  local data
  data, err = read_all(res.fd)
  if not data then return fail(err, "io") end
  if #data < HEADER or sub(data, 1, 6) ~= MAGIC then
    return fail(path .. ": not a csm write-ahead log", "format")
  end
  local version = byte(data, 7) * 256 + byte(data, 8)
  if version ~= wal.VERSION then
    return fail(format("%s: unknown log format version %d (this csm reads %d)", path, version, wal.VERSION),
      "format")
  end
  if crc32c(sub(data, 1, HEADER - 4)) ~= read_u32(data, HEADER - 3) then
    return fail(path .. ": damaged header (checksum mismatch at byte 0); it cannot be repaired", "corrupt")
  end
  if sub(data, 9, 40) ~= opts.fingerprint then
    return fail(format("%s: foreign log: it belongs to the cluster configuration %s..., not %s...", path,
      hex(sub(data, 9, 16)), hex(sub(opts.fingerprint, 1, 8))), "foreign")
  end
  if sub(data, 41, 72) ~= opts.public then
    return fail(format("%s: foreign log: it belongs to the node key %s..., not %s...", path,
      hex(sub(data, 41, 48)), hex(sub(opts.public, 1, 8))), "foreign")
  end
  local list, intact, crc, why, detail = parse(data, seed, true)
  local s = setmetatable({
    dir = dir, path = path, cut = 0, repaired = nil,
    res = res, list = list, last = crc, header = head, seed = seed,
    buf = {}, buffered = 0, queue = {}, head = 1, tail = 0, busy = false,
    fsize = intact, durable = intact, logical = intact, appended = 0,
  }, Store)
  s.guard = guard(res)
  if why == "type" then
    return fail(format("%s: unknown record type %d at byte %d", path, detail, intact), "format")
  elseif why == "damaged" then
    if not opts.repair then
      return fail(format("%s: damaged record at byte %d (%s) with %d more bytes after it; "
        .. "--repair would keep a backup of the log and cut it there", path, intact, detail,
        #data - intact), "corrupt")
    end
    local saved
    saved, err = backup(dir, data)
    if not saved then return fail(err, "io") end
    ok, err = uv.fs_fsync(res.dirfd)
    if not ok then return fail(err, "io") end
    s.repaired = { at = intact, backup = saved }
  elseif why == "torn" then
    s.cut = #data - intact
  end
  if intact < #data then
    ok, err = uv.fs_ftruncate(res.fd, intact)
    if ok then ok, err = uv.fs_fsync(res.fd) end
    if not ok then return fail(err, "io") end
  end
  return s
end

local function check_self(self, fname)
  if getmetatable(self) ~= Store then check.selferror(fname, "wal store expected", self) end
end

-- Calls fn(...) from the loop, not from inside the caller's call.
local function later(fn, ...)
  local args, n = { ... }, select("#", ...)
  local t = uv.new_timer()
  t:start(0, 0, function()
    t:close()
    fn(unpack(args, 1, n))
  end)
end

local pump

-- Stops the store at its first I/O error (err, of the operation op under
-- way): op's done, then that of every operation waiting, is refused.
local function stop(self, op, err)
  self.busy = false
  local message = self.failure or (self.path .. ": " .. err)
  self.failure = message
  self.buf, self.buffered = {}, 0
  local q, waiting = self.queue, {}
  for i = self.head, self.tail do
    waiting[#waiting + 1] = q[i]
    q[i] = nil
  end
  self.head, self.tail = 1, 0
  if self.closed then release(self.res) end
  if op.done then op.done(nil, message, "io") end
  for _, w in ipairs(waiting) do
    if w.done then w.done(nil, message, "io") end
  end
end

local function push(self, op)
  self.tail = self.tail + 1
  self.queue[self.tail] = op
  if not self.busy then pump(self) end
end

-- Hands what was appended to the disk, in a write operation.
local function flush(self)
  if self.buffered == 0 then return end
  local data = concat(self.buf)
  self.buf, self.buffered = {}, 0
  push(self, { kind = "write", data = data })
end

-- The end of an operation that succeeded: the next one starts.
local function finish(self)
  self.busy = false
  if self.closed then return release(self.res) end
  pump(self)
end

-- Writes data at offset of the fd, all of it, then calls k(err).
local function write_async(fd, data, offset, k)
  uv.fs_write(fd, data, offset, function(err, n)
    if err then return k(err) end
    if n == #data then return k(nil) end
    if n == 0 then return k("write made no progress") end
    -- a short write: the rest either goes or says why (ENOSPC...)
    write_async(fd, sub(data, n + 1), offset + n, k)
  end)
end

local run = {}

function run.write(self, op)
  write_async(self.res.fd, op.data, self.fsize, function(err)
    if err then return stop(self, op, err) end
    self.fsize = self.fsize + #op.data
    finish(self)
  end)
end

function run.sync(self, op)
  local upto = self.fsize
  if upto == self.durable then
    -- nothing written since the last completed sync; done still comes
    -- from the loop, never from inside store:sync
    return later(function()
      op.done(true)
      finish(self)
    end)
  end
  uv.fs_fdatasync(self.res.fd, function(err)
    if err then return stop(self, op, err) end
    self.durable = upto
    op.done(true)
    finish(self)
  end)
end

function run.rewrite(self, op)
  local newpath, res = self.path .. ".new", self.res
  local function abort(fd, err)
    if fd then uv.fs_close(fd) end
    stop(self, op, err)
  end
  uv.fs_open(newpath, "w+", 384, function(oerr, fd)
    if oerr then return abort(nil, oerr) end
    write_async(fd, op.data, 0, function(werr)
      if werr then return abort(fd, werr) end
      uv.fs_fdatasync(fd, function(serr)
        if serr then return abort(fd, serr) end
        uv.fs_rename(newpath, self.path, function(rerr)
          if rerr then return abort(fd, rerr) end
          uv.fs_fsync(res.dirfd, function(derr)
            -- renamed: the new file is the log, synced or not
            local old = res.fd
            res.fd = fd
            uv.fs_close(old)
            if derr then return abort(nil, derr) end
            self.fsize, self.durable = #op.data, #op.data
            if op.done then op.done(true) end
            finish(self)
          end)
        end)
      end)
    end)
  end)
end

pump = function(self)
  if self.busy or self.failure or self.closed or self.head > self.tail then return end
  local op = self.queue[self.head]
  self.queue[self.head] = nil
  self.head = self.head + 1
  if self.head > self.tail then self.head, self.tail = 1, 0 end
  self.busy = true
  run[op.kind](self, op)
end

--- Adds a record (a string of at most MAX_RECORD bytes); durable after the
-- next completed sync. Ignored once the store has failed or closed.
function Store:append(bytes)
  check_self(self, "store:append")
  if type(bytes) ~= "string" then check.argerror("store:append", 1, "bytes", "string expected", bytes) end
  if #bytes > wal.MAX_RECORD then
    check.argerror("store:append", 1, "bytes", "string of at most 16 MiB expected", bytes)
  end
  if self.failure or self.closed then return end
  local f
  f, self.last = frame(bytes, self.last)
  self.appended = self.appended + 1
  self.buf[#self.buf + 1] = f
  self.buffered = self.buffered + #f
  self.logical = self.logical + #f
  if self.buffered >= FLUSH_AT then flush(self) end
end

--- Calls done(true) once every record appended before is on disk
-- (fdatasync completed), or done(nil, message, code): "io" once the store
-- has failed (it never retries), "closed" after close.
function Store:sync(done)
  check_self(self, "store:sync")
  if type(done) ~= "function" then check.argerror("store:sync", 1, "done", "function expected", done) end
  if self.failure then return later(done, nil, self.failure, "io") end
  if self.closed then return later(done, nil, "wal: store closed", "closed") end
  flush(self)
  push(self, { kind = "sync", done = done })
end

--- The durable records, oldest first: those read at open the first time
-- (then let go), the log's synced part read again afterwards.
function Store:records()
  check_self(self, "store:records")
  local list = self.list
  if list then
    self.list = nil
    return list
  end
  if self.closed then check.fail("store:records: the store is closed") end
  if self.failure then return {} end
  local data = read_upto(self.res.fd, self.durable)
  if not data then return {} end
  return (parse(data, self.seed, true))
end

--- Replaces every record, appended or durable, by those of list (strings),
-- atomically: DIR/wal.new is written and synced, renamed over DIR/wal and
-- the directory synced; then done(true), or done(nil, message, "io").
function Store:rewrite(list, done)
  check_self(self, "store:rewrite")
  if type(list) ~= "table" then check.argerror("store:rewrite", 1, "list", "table expected", list) end
  for i = 1, #list do
    local item = list[i]
    if type(item) ~= "string" or #item > wal.MAX_RECORD then
      check.fail("store:rewrite: bad argument #1 'list' (item %d must be a string of at most 16 MiB, got %s)",
        i, type(item))
    end
  end
  if done ~= nil and type(done) ~= "function" then
    check.argerror("store:rewrite", 2, "done", "function expected", done)
  end
  if self.failure then
    if done then later(done, nil, self.failure, "io") end
    return
  end
  if self.closed then
    if done then later(done, nil, "wal: store closed", "closed") end
    return
  end
  -- what was appended and not written is replaced too: it never goes out
  self.buf, self.buffered = {}, 0
  local parts, last = frames(list, self.seed, { self.header })
  local data = concat(parts)
  self.last, self.logical = last, #data
  self.list = nil
  push(self, { kind = "rewrite", data = data, done = done })
end

--- How many records were appended over this store object's life.
function Store:writes()
  check_self(self, "store:writes")
  return self.appended
end

--- The log file's size in bytes once every operation called completes
-- (appended records included).
function Store:size()
  check_self(self, "store:size")
  return self.logical
end

--- The message of the I/O error that stopped the store, or nil.
function Store:failed()
  check_self(self, "store:failed")
  return self.failure
end

--- Releases the lock and the descriptors (idempotent). Operations not
-- started are dropped (their done is never called); one under way
-- completes first.
function Store:close()
  check_self(self, "store:close")
  if self.closed then return end
  self.closed = true
  self.buf, self.buffered, self.list = {}, 0, nil
  for i = self.head, self.tail do self.queue[i] = nil end
  self.head, self.tail = 1, 0
  if not self.busy then release(self.res) end
end

Store.__close = Store.close

return wal
