-- `csm node` as a process: its exit status for each kind of failure, and
-- its JSON-lines log.
local uv = require "luv"
local cjson = require "cjson.safe"
local keys = require "csm.node.keys"
local config = require "csm.node.config"
local support = require "support"
local wait_for = support.wait_for

local interpreter = rawget(_G, "jit") and "luajit" or "lua5.4"

local function shim()
  for dir in package.cpath:gmatch("([^;]*)/%?%.so") do
    local path = dir .. "/libcsm_failsync.so"
    if uv.fs_stat(path) then return uv.fs_realpath(path) end
  end
end

-- A directory with keys for n nodes and a configuration on free ports.
local function setup(n)
  local dir = uv.fs_mkdtemp("/tmp/csm-node-spec-XXXXXX")
  local list = {}
  local base = support.free_ports(n + 1)
  for i = 1, n do
    local key = keys.generate()
    local name = string.format("n%02d", i)
    assert(keys.write(dir .. "/" .. name .. ".key", key))
    list[i] = { name = name, public = key.public, address = "127.0.0.1:" .. (base + i) }
  end
  local fh = assert(io.open(dir .. "/cluster.json", "w"))
  fh:write(config.json("spec", list, {}))
  fh:close()
  return dir
end

-- Starts `csm node` with args; returns a process table whose .status and
-- .lines fill in as it runs.
local function start(args, env)
  local p = { lines = {}, out = "" }
  local out = uv.new_pipe(false)
  local argv = { "bin/csm", "node" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local handle
  handle = uv.spawn(interpreter, { args = argv, stdio = { nil, out, nil }, env = env }, function(code)
    p.status = code
    handle:close()
  end)
  assert(handle, "cannot start " .. interpreter)
  p.handle = handle
  out:read_start(function(err, chunk)
    if err or not chunk then out:close() return end
    p.out = p.out .. chunk
    for line in p.out:gmatch("([^\n]*)\n") do p.lines[#p.lines + 1] = cjson.decode(line) end
    p.out = p.out:match("[^\n]*$")
  end)
  return p
end

local function event(p, name)
  for _, e in ipairs(p.lines) do
    if type(e) == "table" and e.event == name then return e end
  end
end

local function args_for(dir, name, data, key)
  return { "--config", dir .. "/cluster.json", "--name", name, "--key", dir .. "/" .. (key or name) .. ".key",
           "--data", dir .. "/" .. (data or name) }
end

local function run(args, env)
  local p = start(args, env)
  assert.is_true(wait_for(function() return p.status ~= nil end))
  return p
end

describe("csm node", function()
  local dir
  before_each(function() dir = setup(4) end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("exits 2 for a configuration it cannot read", function()
    local p = run { "--config", dir .. "/none.json", "--name", "n01", "--key", dir .. "/n01.key", "--data",
                    dir .. "/n01" }
    assert.equal(2, p.status)
    assert.matches("cannot read", event(p, "stop").error)
  end)

  it("exits 2 for a name the configuration lacks, and for another node's key", function()
    assert.equal(2, run(args_for(dir, "n09")).status)
    local p = run(args_for(dir, "n01", "n01", "n02"))
    assert.equal(2, p.status)
    assert.matches("is not n01's", event(p, "stop").error)
  end)

  it("exits 0 on SIGTERM, after logging its start", function()
    local p = start(args_for(dir, "n01"))
    assert.is_true(wait_for(function() return event(p, "start") ~= nil end))
    assert.equal("127.0.0.1", event(p, "start").address:match("^[%d.]+"))
    uv.process_kill(p.handle, "sigterm")
    assert.is_true(wait_for(function() return p.status ~= nil end))
    assert.equal(0, p.status)
    assert.equal(0, event(p, "stop").status)
  end)

  it("exits 3 for a data directory another node process holds, or another key's", function()
    local a = start(args_for(dir, "n01"))
    assert.is_true(wait_for(function() return event(a, "start") ~= nil end))
    local b = run(args_for(dir, "n01"))
    assert.equal(3, b.status)
    assert.matches("locked", event(b, "stop").error)
    uv.process_kill(a.handle, "sigterm")
    assert.is_true(wait_for(function() return a.status ~= nil end))
    local c = run(args_for(dir, "n02", "n01"))
    assert.equal(3, c.status)
  end)

  it("exits 4 when its disk cannot sync (an LD_PRELOAD shim fails fdatasync)", function()
    local path = shim()
    if not path then return pending("libcsm_failsync.so is not built") end
    local env = { "LD_PRELOAD=" .. path, "CSM_FAIL_SYNC=1" }
    for k, v in pairs(uv.os_environ()) do
      if k ~= "LD_PRELOAD" and k ~= "CSM_FAIL_SYNC" then env[#env + 1] = k .. "=" .. v end
    end
    local p = run(args_for(dir, "n01"), env)
    assert.equal(4, p.status)
    assert.matches("EIO", event(p, "stop").error)
  end)
end)
