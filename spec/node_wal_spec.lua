-- csm.node.wal: the write-ahead log of a real node, and the core's
-- crc32c and os.lock it stands on.
local uv = require "luv"
local core = require "csm.core"
local wal = require "csm.node.wal"

local FP, PK = string.rep("f", 32), string.rep("k", 32)
local HEADER, FRAME = 76, 9
local OPTS = { fingerprint = FP, public = PK }

local interpreter = jit and "luajit" or "lua5.4"

local dirs = {}

-- A fresh path for a directory (not made), removed after the test.
local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  dirs[#dirs + 1] = path
  return path
end

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function file_size(path)
  return assert(uv.fs_stat(path)).size
end

-- Runs the loop until fn() is true (a bounded number of turns).
local function wait(fn)
  for _ = 1, 100000 do
    if fn() then return end
    uv.run("once")
  end
  error("wait: the loop never got there")
end

-- Calls store:sync and waits for done; returns what done got.
local function sync(store)
  local got
  store:sync(function(...) got = { n = select("#", ...), ... } end)
  wait(function() return got end)
  return got[1], got[2], got[3]
end

local function open(dir, extra)
  local o = { fingerprint = FP, public = PK }
  for k, v in pairs(extra or {}) do o[k] = v end
  return wal.open(dir, o)
end

-- A closed log in a new directory holding list (synced); returns the dir.
local function log_of(list)
  local dir = tmpdir()
  local s = assert(open(dir))
  for _, r in ipairs(list) do s:append(r) end
  assert.is_true((sync(s)))
  s:close()
  return dir
end

-- The byte offset (0-based) of record i of list in its log.
local function offset_of(list, i)
  local at = HEADER
  for k = 1, i - 1 do at = at + FRAME + #list[k] end
  return at
end

-- Flips bit 0 of the byte at (0-based) offset of path.
local function flip(path, offset)
  local data = read(path)
  local b = data:byte(offset + 1)
  local flipped = b % 2 == 0 and b + 1 or b - 1
  write(path, data:sub(1, offset) .. string.char(flipped) .. data:sub(offset + 2))
end

after_each(function()
  for i = #dirs, 1, -1 do
    os.execute("rm -rf " .. sh_quote(dirs[i]))
    dirs[i] = nil
  end
  collectgarbage()
end)

-- The LD_PRELOAD shim that fails fdatasync and fsync, if built: the one
-- beside the csm.core being tested, else any build's.
local function failsync_path()
  for dir in package.cpath:gmatch("([^;]*)/%?%.so") do
    local path = dir .. "/libcsm_failsync.so"
    if uv.fs_stat(path) then return path end
  end
  local p = io.popen("ls build/*/libcsm_failsync.so 2>/dev/null")
  local path = p:read("*l")
  p:close()
  return path
end

-- Runs a Lua program in a child of the current interpreter with env (a
-- string of assignments); returns its output and whether it succeeded.
local function run_child(program, env)
  local script = os.tmpname()
  dirs[#dirs + 1] = script
  write(script, string.format("package.path = %q\npackage.cpath = %q\n", package.path, package.cpath)
    .. program)
  local p = io.popen((env or "") .. " " .. interpreter .. " " .. sh_quote(script) .. " 2>&1")
  local out = p:read("*a")
  local ok = p:close()
  return out, ok
end

describe("csm.core", function()
  describe("crc32c", function()
    it("gives the check value of \"123456789\"", function()
      assert.are.equal(0xE3069283, core.crc32c("123456789"))
      assert.are.equal(0, core.crc32c(""))
    end)

    it("continues from a previous crc", function()
      local text = string.rep("the quick brown fox ", 50)
      for cut = 0, #text, 37 do
        assert.are.equal(core.crc32c(text), core.crc32c(text:sub(cut + 1), core.crc32c(text:sub(1, cut))))
      end
    end)

    it("refuses what is not bytes or a 32-bit start", function()
      assert.has_error(function() core.crc32c(nil) end,
        "csm.core.crc32c: bad argument #1 'bytes' (string expected, got nil)")
      assert.has_error(function() core.crc32c("x", 2 ^ 32) end,
        "csm.core.crc32c: bad argument #2 'crc' (integer in [0, 2^32) expected, got number)")
      assert.has_error(function() core.crc32c("x", 1.5) end,
        "csm.core.crc32c: bad argument #2 'crc' (integer in [0, 2^32) expected, got number)")
    end)
  end)

  describe("os.lock", function()
    it("holds a file until unlock, once per handle", function()
      local dir = tmpdir()
      assert(uv.fs_mkdir(dir, 448))
      local a = assert(core.os.lock(dir .. "/LOCK"))
      local b, err, code = core.os.lock(dir .. "/LOCK")
      assert.is_nil(b)
      assert.are.equal(dir .. "/LOCK: locked by another process or handle", err)
      assert.are.equal("locked", code)
      assert.is_true(a:locked())
      assert.is_true(a:unlock())
      assert.is_true(a:unlock())
      assert.is_false(a:locked())
      local c = assert(core.os.lock(dir .. "/LOCK"))
      c:unlock()
    end)

    it("refuses a path it cannot open with io", function()
      local _, err, code = core.os.lock("/nonexistent-csm-dir/LOCK")
      assert.are.equal("/nonexistent-csm-dir/LOCK: No such file or directory", err)
      assert.are.equal("io", code)
    end)

    it("is released when the handle is collected", function()
      local dir = tmpdir()
      assert(uv.fs_mkdir(dir, 448))
      local _ = assert(core.os.lock(dir .. "/LOCK"))
      _ = nil -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      local again = assert(core.os.lock(dir .. "/LOCK"))
      again:unlock()
    end)

    it("refuses a path that is not a string", function()
      assert.has_error(function() core.os.lock(1) end,
        "os.lock: bad argument #1 'path' (string expected, got number)")
    end)
  end)
end)

describe("csm.node.wal", function()
  describe("wal.open", function()
    it("makes a missing directory (0700) and a log holding its header", function()
      local dir = tmpdir() .. "/a/b"
      dirs[#dirs + 1] = dir:sub(1, -5)
      local s = assert(open(dir))
      local st = assert(uv.fs_stat(dir))
      assert.are.equal(448, st.mode % 512)
      assert.are.equal(HEADER, file_size(dir .. "/wal"))
      assert.are.equal(HEADER, s:size())
      assert.are.same({}, s:records())
      assert.are.equal("CSMWAL", read(dir .. "/wal"):sub(1, 6))
      s:close()
    end)

    it("gives back the synced records after a reopen", function()
      local list = { "one", "", string.rep("x", 70000), "\0\1\2" }
      local dir = log_of(list)
      local s = assert(open(dir))
      assert.are.same(list, s:records())
      assert.are.equal(0, s.cut)
      assert.are.equal(file_size(dir .. "/wal"), s:size())
      s:close()
    end)

    it("refuses wrong arguments naming them", function()
      assert.has_error(function() wal.open(nil, OPTS) end,
        "wal.open: bad argument #1 'dir' (string expected, got nil)")
      assert.has_error(function() wal.open("x") end,
        "wal.open: bad argument #2 'options' (table expected, got nil)")
      assert.has_error(function() wal.open("x", { fingerprint = FP, public = PK, fsync = true }) end,
        "wal.open: unknown option 'fsync'")
      assert.has_error(function() wal.open("x", { fingerprint = "short", public = PK }) end,
        "wal.open: option 'fingerprint' must be a 32-byte string (got string \"short\")")
      assert.has_error(function() wal.open("x", { fingerprint = FP }) end,
        "wal.open: option 'public' must be a 32-byte string (got nil)")
      assert.has_error(function() wal.open("x", { fingerprint = FP, public = PK, repair = 1 }) end,
        "wal.open: option 'repair' must be a boolean (got 1)")
    end)

    it("refuses a directory another store holds with locked", function()
      local dir = tmpdir()
      local a = assert(open(dir))
      local b, err, code = open(dir)
      assert.is_nil(b)
      assert.are.equal("locked", code)
      assert.are.equal(dir .. "/LOCK: locked by another process or handle", err)
      a:close()
      a:close()
      local c = assert(open(dir))
      c:close()
    end)

    it("refuses a directory another process holds with locked", function()
      local dir = tmpdir()
      assert(uv.fs_mkdir(dir, 448))
      local flag = dir .. "/go"
      local p = io.popen(interpreter .. " -e " .. sh_quote(string.format([[
        package.cpath = %q
        local uv = require "luv"
        local held = assert(require("csm.core").os.lock(%q))
        print("held")
        io.stdout:flush()
        for _ = 1, 500 do
          if uv.fs_stat(%q) then break end
          uv.sleep(10)
        end
        held:unlock()
      ]], package.cpath, dir .. "/LOCK", flag)))
      assert.are.equal("held", p:read("*l"))
      local s, _, code = open(dir)
      write(flag, "")
      p:close()
      assert.is_nil(s)
      assert.are.equal("locked", code)
      local again = assert(open(dir))
      again:close()
    end)

    it("refuses a log of another cluster or another key with foreign", function()
      local dir = log_of({ "r" })
      local s, err, code = wal.open(dir, { fingerprint = string.rep("g", 32), public = PK })
      assert.is_nil(s)
      assert.are.equal("foreign", code)
      assert.are.equal(dir .. "/wal: foreign log: it belongs to the cluster configuration "
        .. "6666666666666666..., not 6767676767676767...", err)
      s, err, code = wal.open(dir, { fingerprint = FP, public = string.rep("l", 32) })
      assert.is_nil(s)
      assert.are.equal("foreign", code)
      assert.matches("foreign log: it belongs to the node key 6b6b", err, 1, true)
      -- the refusal let go of the lock
      s = assert(open(dir))
      s:close()
    end)

    it("refuses a file that is not a csm log with format", function()
      local dir = tmpdir()
      assert(uv.fs_mkdir(dir, 448))
      write(dir .. "/wal", string.rep("garbage ", 40))
      local s, err, code = open(dir)
      assert.is_nil(s)
      assert.are.equal(dir .. "/wal: not a csm write-ahead log", err)
      assert.are.equal("format", code)
      write(dir .. "/wal", "CSMWAL")
      assert.are.equal("format", select(3, open(dir)))
    end)

    it("refuses an unknown version with format", function()
      local dir = log_of({ "r" })
      local data = read(dir .. "/wal")
      write(dir .. "/wal", data:sub(1, 6) .. "\0\9" .. data:sub(9))
      local s, err, code = open(dir)
      assert.is_nil(s)
      assert.are.equal(dir .. "/wal: unknown log format version 9 (this csm reads 1)", err)
      assert.are.equal("format", code)
    end)

    it("refuses a damaged header with corrupt, even with repair", function()
      local dir = log_of({ "r" })
      flip(dir .. "/wal", 20)
      local s, err, code = open(dir, { repair = true })
      assert.is_nil(s)
      assert.are.equal("corrupt", code)
      assert.are.equal(dir .. "/wal: damaged header (checksum mismatch at byte 0); it cannot be repaired",
        err)
    end)

    it("ignores and removes a wal.new a stopped rewrite left", function()
      local dir = log_of({ "old1", "old2" })
      local before = read(dir .. "/wal")
      -- what a rewrite leaves when the process stops before its rename
      write(dir .. "/wal.new", before:sub(1, HEADER) .. "half a reco")
      local s = assert(open(dir))
      assert.are.same({ "old1", "old2" }, s:records())
      assert.is_nil(uv.fs_stat(dir .. "/wal.new"))
      assert.are.equal(before, read(dir .. "/wal"))
      s:close()
    end)

    it("cuts a torn last record at every byte of it", function()
      local list = { "first", "second record", "the last record, torn" }
      local dir = log_of(list)
      local whole = read(dir .. "/wal")
      local last = offset_of(list, 3)
      for cut = last + 1, #whole - 1 do
        write(dir .. "/wal", whole:sub(1, cut))
        local s = assert(open(dir))
        assert.are.equal(cut - last, s.cut)
        assert.are.same({ "first", "second record" }, s:records())
        assert.are.equal(last, file_size(dir .. "/wal"))
        s:close()
      end
    end)

    it("cuts a last record whose checksum fails with nothing after it", function()
      local list = { "first", "second" }
      local dir = log_of(list)
      flip(dir .. "/wal", offset_of(list, 2) + FRAME + 2)
      local s = assert(open(dir))
      assert.are.same({ "first" }, s:records())
      assert.are.equal(FRAME + 6, s.cut)
      s:close()
    end)

    it("refuses a flipped bit in an earlier record with corrupt and its offset", function()
      local list = { "first", "second", "third", "fourth" }
      local dir = log_of(list)
      local at = offset_of(list, 2)
      flip(dir .. "/wal", at + FRAME + 3)
      local size = file_size(dir .. "/wal")
      local s, err, code = open(dir)
      assert.is_nil(s)
      assert.are.equal("corrupt", code)
      assert.are.equal(string.format("%s/wal: damaged record at byte %d (checksum mismatch) with %d more "
        .. "bytes after it; --repair would keep a backup of the log and cut it there", dir, at, size - at),
        err)
      assert.are.equal(size, file_size(dir .. "/wal"))
    end)

    it("refuses a flipped bit in an earlier record's length with corrupt", function()
      local list = { "first", "second", "third", "fourth" }
      local dir = log_of(list)
      local at = offset_of(list, 2)
      flip(dir .. "/wal", at + 3) -- the length's low byte: 6 -> 7
      local s, err, code = open(dir)
      assert.is_nil(s)
      assert.are.equal("corrupt", code)
      assert.matches("damaged record at byte " .. at, err, 1, true)
      write(dir .. "/wal", read(dir .. "/wal"):sub(1, at) .. "\255" .. read(dir .. "/wal"):sub(at + 2))
      s, err, code = open(dir)
      assert.is_nil(s)
      assert.are.equal("corrupt", code)
      assert.matches("(length out of range)", err, 1, true)
    end)

    it("with repair backs the log up and keeps the records before the damage", function()
      local list = { "first", "second", "third", "fourth" }
      local dir = log_of(list)
      local at = offset_of(list, 3)
      flip(dir .. "/wal", at + FRAME)
      local damaged = read(dir .. "/wal")
      local s = assert(open(dir, { repair = true }))
      assert.are.equal(at, s.repaired.at)
      assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/wal%.corrupt%-%d+$", s.repaired.backup)
      assert.are.equal(damaged, read(s.repaired.backup))
      assert.are.same({ "first", "second" }, s:records())
      assert.are.equal(at, file_size(dir .. "/wal"))
      -- the repaired log goes on
      s:append("fifth")
      assert.is_true((sync(s)))
      s:close()
      s = assert(open(dir))
      assert.are.same({ "first", "second", "fifth" }, s:records())
      s:close()
    end)

    it("refuses two records swapped (the chain)", function()
      local list = { "aaaa", "bbbb", "cccc" }
      local dir = log_of(list)
      local data = read(dir .. "/wal")
      local a, b, c = offset_of(list, 1), offset_of(list, 2), offset_of(list, 3)
      write(dir .. "/wal", data:sub(1, a) .. data:sub(b + 1, c) .. data:sub(a + 1, b) .. data:sub(c + 1))
      local s, err, code = open(dir)
      assert.is_nil(s)
      assert.are.equal("corrupt", code)
      assert.matches("damaged record at byte " .. a .. " (checksum mismatch)", err, 1, true)
    end)

    it("refuses a record replayed from another log of the same node (the chain)", function()
      local mine = log_of({ "one", "two", "three" })
      local other = log_of({ "uno", "two", "three" })
      local data, theirs = read(mine .. "/wal"), read(other .. "/wal")
      local at = offset_of({ "one" }, 2)
      -- the same payload at the same place, chained to another history
      write(mine .. "/wal", data:sub(1, at) .. theirs:sub(at + 1, at + FRAME + 3) .. data:sub(at + FRAME + 4))
      local s, _, code = open(mine)
      assert.is_nil(s)
      assert.are.equal("corrupt", code)
    end)
  end)

  describe("store:append", function()
    it("counts the records appended over the store's life", function()
      local s = assert(open(tmpdir()))
      assert.are.equal(0, s:writes())
      s:append("a")
      s:append("bc")
      assert.are.equal(2, s:writes())
      assert.are.equal(HEADER + 2 * FRAME + 3, s:size())
      s:close()
    end)

    it("is not durable before a sync", function()
      local dir = tmpdir()
      local s = assert(open(dir))
      s:append("kept")
      assert.is_true((sync(s)))
      s:append("lost")
      s:close()
      s = assert(open(dir))
      assert.are.same({ "kept" }, s:records())
      s:close()
    end)

    it("refuses what is not a string naming it", function()
      local s = assert(open(tmpdir()))
      assert.has_error(function() s:append(nil) end,
        "store:append: bad argument #1 'bytes' (string expected, got nil)")
      assert.has_error(function() s:append(string.rep("x", 16 * 1024 * 1024 + 1)) end,
        "store:append: bad argument #1 'bytes' (string of at most 16 MiB expected, got string)")
      assert.has_error(function() s.append({}, "x") end,
        "store:append: bad self (wal store expected, got table)")
      s:close()
    end)

    it("hands a large backlog to the disk before any sync", function()
      local dir = tmpdir()
      local s = assert(open(dir))
      local chunk = string.rep("z", 100000)
      for _ = 1, 12 do s:append(chunk) end
      wait(function() return file_size(dir .. "/wal") > HEADER end)
      assert.is_true((sync(s)))
      assert.are.equal(HEADER + 12 * (FRAME + #chunk), file_size(dir .. "/wal"))
      s:close()
    end)
  end)

  describe("store:sync", function()
    it("completes in call order and only after the earlier writes", function()
      local dir = tmpdir()
      local s = assert(open(dir))
      local trace = {}
      s:append("a")
      s:sync(function(ok) trace[#trace + 1] = "sync1 " .. tostring(ok) .. " " .. file_size(dir .. "/wal") end)
      s:append("b")
      s:sync(function(ok) trace[#trace + 1] = "sync2 " .. tostring(ok) .. " " .. file_size(dir .. "/wal") end)
      s:sync(function(ok) trace[#trace + 1] = "sync3 " .. tostring(ok) end)
      assert.are.same({}, trace)
      wait(function() return #trace == 3 end)
      assert.are.same({ "sync1 true 86", "sync2 true 96", "sync3 true" }, trace)
      s:close()
    end)

    it("calls done from the loop even with nothing to write", function()
      local s = assert(open(tmpdir()))
      local got
      s:sync(function(ok) got = ok end)
      assert.is_nil(got)
      wait(function() return got ~= nil end)
      assert.is_true(got)
      s:close()
    end)

    it("refuses a done that is not a function", function()
      local s = assert(open(tmpdir()))
      assert.has_error(function() s:sync() end,
        "store:sync: bad argument #1 'done' (function expected, got nil)")
      s:close()
    end)
  end)

  describe("store:records", function()
    it("gives the synced records again once the ones read at open are let go", function()
      local s = assert(open(log_of({ "a", "b" })))
      assert.are.same({ "a", "b" }, s:records())
      assert.is_nil(s.list)
      s:append("c")
      assert.are.same({ "a", "b" }, s:records())
      assert.is_true((sync(s)))
      assert.are.same({ "a", "b", "c" }, s:records())
      s:close()
    end)
  end)

  describe("store:rewrite", function()
    it("replaces every record, appended or durable, in call order", function()
      local dir = log_of({ "old1", "old2" })
      local s = assert(open(dir))
      local trace = {}
      s:append("appended, then replaced")
      s:sync(function(ok) trace[#trace + 1] = "sync " .. tostring(ok) end)
      s:append("lost to the rewrite")
      s:rewrite({ "new1", "new2" }, function(ok) trace[#trace + 1] = "rewrite " .. tostring(ok) end)
      s:append("after")
      s:sync(function(ok) trace[#trace + 1] = "sync " .. tostring(ok) end)
      wait(function() return #trace == 3 end)
      assert.are.same({ "sync true", "rewrite true", "sync true" }, trace)
      assert.are.equal(file_size(dir .. "/wal"), s:size())
      assert.are.equal(3, s:writes())
      s:close()
      s = assert(open(dir))
      assert.are.same({ "new1", "new2", "after" }, s:records())
      assert.is_nil(uv.fs_stat(dir .. "/wal.new"))
      s:close()
    end)

    it("runs without done (compaction)", function()
      local dir = log_of({ "a", "b", "c" })
      local s = assert(open(dir))
      s:rewrite({ "c" })
      assert.are.equal(HEADER + FRAME + 1, s:size())
      wait(function() return file_size(dir .. "/wal") == HEADER + FRAME + 1 end)
      assert.is_true((sync(s)))
      s:close()
      s = assert(open(dir))
      assert.are.same({ "c" }, s:records())
      s:close()
    end)

    it("refuses a list that is not of strings naming it", function()
      local s = assert(open(tmpdir()))
      assert.has_error(function() s:rewrite("x") end,
        "store:rewrite: bad argument #1 'list' (table expected, got string)")
      assert.has_error(function() s:rewrite({ "a", 2 }) end,
        "store:rewrite: bad argument #1 'list' (item 2 must be a string of at most 16 MiB, got number)")
      assert.has_error(function() s:rewrite({}, 1) end,
        "store:rewrite: bad argument #2 'done' (function expected, got number)")
      s:close()
    end)
  end)

  describe("store:close", function()
    it("releases the lock, is idempotent and refuses later syncs with closed", function()
      local dir = tmpdir()
      local s = assert(open(dir))
      s:close()
      s:close()
      s:append("ignored")
      assert.are.equal(0, s:writes())
      local ok, err, code = sync(s)
      assert.is_nil(ok)
      assert.are.equal("wal: store closed", err)
      assert.are.equal("closed", code)
      local again = assert(open(dir))
      again:close()
    end)

    it("drops what has not started and keeps the lock until the write under way ends", function()
      local dir = tmpdir()
      local s = assert(open(dir))
      s:append("r")
      local called = false
      s:sync(function() called = true end)
      s:close()
      assert.are.equal("locked", select(3, open(dir)))
      local again
      wait(function()
        again = open(dir)
        return again
      end)
      for _ = 1, 10 do uv.run("nowait") end
      assert.is_false(called)
      again:close()
    end)

    it("happens when the store is collected", function()
      local dir = tmpdir()
      local _ = assert(open(dir))
      _ = nil -- luacheck: ignore 311
      collectgarbage()
      collectgarbage()
      local again = assert(open(dir))
      again:close()
    end)
  end)

  describe("a full disk", function()
    it("stops the store at the failed write (root: mounts a 64k tmpfs)", function()
      local dir = tmpdir()
      assert(uv.fs_mkdir(dir, 448))
      local ok = os.execute("mount -t tmpfs -o size=64k tmpfs " .. sh_quote(dir) .. " 2>/dev/null")
      if ok ~= true and ok ~= 0 then
        pending("needs root and tmpfs (mount failed)")
        return
      end
      local s
      local done, err = pcall(function()
        s = assert(open(dir))
        local chunk = string.rep("d", 4000)
        local r, message, code
        for _ = 1, 40 do
          s:append(chunk)
          r, message, code = sync(s)
          if not r then break end
        end
        assert.is_nil(r)
        assert.are.equal("io", code)
        assert.matches("ENOSPC", message, 1, true)
        assert.are.equal(message, s:failed())
        local writes = s:writes()
        s:append("ignored")
        assert.are.equal(writes, s:writes())
        local r2, m2, c2 = sync(s)
        assert.is_nil(r2)
        assert.are.equal(message, m2)
        assert.are.equal("io", c2)
        local got
        s:rewrite({ "x" }, function(...) got = { ... } end)
        wait(function() return got end)
        assert.are.same({ nil, message, "io" }, { got[1], got[2], got[3] })
      end)
      if s then s:close() end
      collectgarbage()
      os.execute("umount " .. sh_quote(dir))
      assert(done, err)
    end)
  end)

  describe("a failing fdatasync", function()
    local shim = failsync_path()

    local function child(dir, fail_at)
      return run_child(string.format([[
        local uv = require "luv"
        local calls, real = 0, uv.fs_fdatasync
        uv.fs_fdatasync = function(...) calls = calls + 1 return real(...) end
        local wal = require "csm.node.wal"
        local s, err, code = wal.open(%q, { fingerprint = %q, public = %q })
        if not s then print("open", code, err) return end
        local function sync()
          local got
          s:sync(function(...) got = { n = select("#", ...), ... } end)
          while not got do uv.run("once") end
          return tostring(got[1]) .. " " .. tostring(got[3]) .. " " .. tostring(got[2])
        end
        s:append("one")
        print("1 " .. sync())
        s:append("two")
        print("2 " .. sync())
        s:append("three")
        print("3 " .. sync())
        print("calls " .. calls)
        print("failed " .. tostring(s:failed()))
        print("writes " .. s:writes())
      ]], dir, FP, PK), "LD_PRELOAD=" .. sh_quote(((os.getenv("LD_PRELOAD") or "") .. " " .. shim))
        .. " CSM_FAIL_SYNC=" .. fail_at)
    end

    it("stops the store and is never retried (needs libcsm_failsync.so)", function()
      if not shim then
        pending("libcsm_failsync.so not built (build/*/libcsm_failsync.so)")
        return
      end
      local dir = log_of({})
      local out = child(dir, 2)
      local msg = dir .. "/wal: EIO: i/o error"
      assert.are.equal(table.concat({
        "1 true nil nil",
        "2 nil io " .. msg,
        "3 nil io " .. msg,
        "calls 2",
        "failed " .. msg,
        "writes 2",
        "",
      }, "\n"), out)
      -- "two" was written, though never known durable; "three" never was
      local s = assert(open(dir))
      local got = s:records()
      assert.are.equal("one", got[1])
      assert.is_true(#got == 1 or (#got == 2 and got[2] == "two"))
      s:close()
    end)

    it("refuses to make a fresh log with io (needs libcsm_failsync.so)", function()
      if not shim then
        pending("libcsm_failsync.so not built (build/*/libcsm_failsync.so)")
        return
      end
      local dir = tmpdir()
      local out = child(dir, 1)
      assert.matches("^open\tio\t", out)
      assert.matches("EIO", out, 1, true)
    end)
  end)
end)
