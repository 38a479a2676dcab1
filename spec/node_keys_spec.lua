-- csm.node.keys (key files, hex, the Ed25519 signer) and `csm keygen`.
local keys = require "csm.node.keys"
local keygen = require "csm.cmd.keygen"
local support = require "spec.support"
local uv = require "luv"

local error_of = support.error_of

-- A fresh temporary directory per test, removed with what it holds.
local dir
local function path(name) return dir .. "/" .. name end

local function write_file(name, text, mode)
  local fh = assert(io.open(path(name), "wb"))
  fh:write(text)
  fh:close()
  assert(uv.fs_chmod(path(name), mode or 384))
  return path(name)
end

-- Runs `csm keygen` in this process with args (a list): its exit status,
-- what it printed and the usage error, if any.
local function run_keygen(args)
  local cmd = require "csm.cmd"
  local parser = require("argparse")("csm")
  parser:command_target("command")
  keygen.add(parser:command("keygen"))
  local list = { "keygen" }
  for _, a in ipairs(args) do list[#list + 1] = a end
  local parsed = parser:parse(list)
  local printed = {}
  local real = io.stdout
  local fake = { write = function(self, ...)
    for _, s in ipairs { ... } do printed[#printed + 1] = s end
    return self
  end }
  rawset(io, "stdout", fake)
  local ok, status = pcall(keygen.run, parsed)
  rawset(io, "stdout", real)
  if ok then return status, table.concat(printed) end
  return cmd.USAGE, table.concat(printed), type(status) == "table" and status.message or tostring(status)
end

describe("csm.node.keys", function()
  before_each(function()
    dir = assert(uv.fs_mkdtemp("/tmp/csm-keys-XXXXXX"))
  end)

  after_each(function()
    for _, name in ipairs { "k", "k2", "bad", "open", "sub" } do
      uv.fs_unlink(path(name))
      uv.fs_rmdir(path(name))
    end
    uv.fs_rmdir(dir)
  end)

  describe("generate", function()
    it("makes a fresh Ed25519 key", function()
      local k1, k2 = keys.generate(), keys.generate()
      assert.are.equal(32, #k1.public)
      assert.are.equal(64, #k1.secret)
      assert.are_not.equal(k1.public, k2.public)
    end)
  end)

  describe("write and read", function()
    it("round-trip, the file mode 0600 and one documented line", function()
      local key = keys.generate()
      assert.is_true(keys.write(path("k"), key))
      assert.are.equal(384, uv.fs_stat(path("k")).mode % 512)
      local text = support.slurp(path("k"))
      assert.is_truthy(text:match("^csm%-ed25519%-secret %x+\n$"))
      assert.are.equal(#"csm-ed25519-secret " + 64 + 1, #text)
      assert.are.same(key, keys.read(path("k")))
    end)

    it("never overwrites a file ('exists')", function()
      local key = keys.generate()
      assert.is_true(keys.write(path("k"), key))
      local before = support.slurp(path("k"))
      assert.are.same({ nil, path("k") .. ": exists already (never overwritten)", "exists" },
        { keys.write(path("k"), keys.generate()) })
      assert.are.equal(before, support.slurp(path("k")))
    end)

    it("refuses a missing file, a directory it cannot write in ('io')", function()
      assert.are.same({ nil, path("k") .. ": no such key file", "missing" }, { keys.read(path("k")) })
      assert.are.equal("io", select(3, keys.write(path("sub") .. "/k", keys.generate())))
    end)

    it("refuses a file others may read ('mode')", function()
      assert.is_true(keys.write(path("k"), keys.generate()))
      for _, mode in ipairs { 416, 388, 420 } do -- 0640, 0604, 0644
        assert(uv.fs_chmod(path("k"), mode))
        local key, err, code = keys.read(path("k"))
        assert.is_nil(key)
        assert.are.equal("mode", code)
        assert.are.equal(string.format("%s: readable by others (mode %03o; chmod 600 it)", path("k"), mode),
          err)
      end
      assert(uv.fs_chmod(path("k"), 256)) -- 0400 is fine
      assert.is_truthy(keys.read(path("k")))
    end)

    it("refuses what is not a key file ('format')", function()
      local seed = string.rep("ab", 32)
      for _, text in ipairs { "", "csm-ed25519-secret\n", "csm-ed25519-secret " .. seed:sub(3) .. "\n",
        "csm-ed25519-secret " .. seed .. "00\n", "csm-ed25519-secret " .. seed:sub(3) .. "zz\n",
        "csm-ed25519-public " .. seed .. "\n", "csm-ed25519-secret " .. seed .. "\n\n",
        " csm-ed25519-secret " .. seed .. "\n", string.rep("x", 10000) } do
        local p = write_file("bad", text)
        local key, err, code = keys.read(p)
        assert.is_nil(key, text)
        assert.are.equal("format", code, text)
        assert.is_truthy(err:find(p, 1, true))
        os.remove(p)
      end
      assert(uv.fs_mkdir(path("sub"), 448))
      assert.are.same({ nil, path("sub") .. ": not a regular file", "format" }, { keys.read(path("sub")) })
      -- no newline and upper case are read
      local key = keys.read(write_file("bad", "csm-ed25519-secret " .. seed:upper()))
      assert.are.equal(keys.hex(key.secret):sub(1, 64), seed)
    end)

    it("raises on bad arguments", function()
      assert.are.equal("keys.write: bad argument #1 'path' (file name expected, got nil)",
        error_of(keys.write))
      assert.are.equal("keys.write: bad argument #2 'key' (key { public = 32 bytes, secret = 64 bytes } "
        .. "expected, got table)", error_of(keys.write, path("k"), { public = "x" }))
      local a, b = keys.generate(), keys.generate()
      assert.are.equal("keys.write: bad argument #2 'key' (its public key is not its secret key's)",
        error_of(keys.write, path("k"), { public = a.public, secret = b.secret }))
      assert.are.equal("keys.read: bad argument #1 'path' (file name expected, got number)",
        error_of(keys.read, 1))
    end)
  end)

  describe("hex and unhex", function()
    it("round-trip and refuse what is not hex", function()
      local bytes = "\0\1\171\255"
      assert.are.equal("0001abff", keys.hex(bytes))
      assert.are.equal(bytes, keys.unhex("0001abff"))
      assert.are.equal(bytes, keys.unhex("0001ABFF"))
      assert.are.equal("", keys.unhex(""))
      for _, text in ipairs { "0", "zz", "00 1", "0x01" } do
        assert.are.same({ nil, "keys.unhex: not an even number of hex digits", "format" },
          { keys.unhex(text) })
      end
      assert.are.equal("keys.unhex: bad argument #1 'text' (string expected, got nil)", error_of(keys.unhex))
    end)
  end)

  describe("signer", function()
    local a, b = keys.generate(), keys.generate()
    local publics = { a = a.public, b = b.public }

    it("signs as its key and verifies each named key's signatures", function()
      local sa, sb = keys.signer(a, publics), keys.signer(b, publics)
      assert.are.equal("a", sa.name)
      local sig = sa:sign("vote 3")
      assert.are.equal(64, #sig)
      assert.is_true(sb:verify("a", "vote 3", sig))
      assert.is_true(sa:verify("a", "vote 3", sig))
      assert.is_false(sb:verify("b", "vote 3", sig))
      assert.is_false(sb:verify("a", "vote 4", sig))
    end)

    it("is false for an unknown name or a bad signature, never an error", function()
      local s = keys.signer(a, publics)
      local sig = s:sign("m")
      assert.is_false(s:verify("c", "m", sig))
      assert.is_false(s:verify(nil, "m", sig))
      assert.is_false(s:verify("a", "m", sig:sub(2)))
      assert.is_false(s:verify("a", "m", sig .. "x"))
      assert.is_false(s:verify("a", "m", 7))
      assert.is_false(s:verify("a", nil, sig))
      assert.is_false(s:verify("a", "m", string.rep("\0", 64)))
    end)

    it("raises on bad arguments and keeps no secret in sight", function()
      assert.are.equal("keys.signer: bad argument #2 'publics' (table expected, got nil)",
        error_of(keys.signer, a))
      assert.are.equal("keys.signer: bad argument #2 'publics' (node name -> 32-byte public key expected; "
        .. "entry string \"x\" is string \"short\")", error_of(keys.signer, a, { x = "short" }))
      local s = keys.signer(a, publics)
      assert.are.equal("signer:sign: bad argument #1 'bytes' (string expected, got number)",
        error_of(s.sign, s, 1))
      for _, v in pairs(s) do assert.are_not.equal(a.secret, v) end
    end)
  end)
end)

describe("csm.cmd.keygen", function()
  before_each(function()
    dir = assert(uv.fs_mkdtemp("/tmp/csm-keygen-XXXXXX"))
  end)

  after_each(function()
    uv.fs_unlink(path("k"))
    uv.fs_rmdir(dir)
  end)

  describe("run", function()
    it("writes a key file (0600) and prints its public key, one line; --show prints it again", function()
      local status, out = run_keygen { "--out", path("k") }
      assert.are.equal(0, status)
      assert.is_truthy(out:match("^%x+\n$"))
      assert.are.equal(65, #out)
      assert.are.equal(384, uv.fs_stat(path("k")).mode % 512)
      assert.are.equal(keys.hex(keys.read(path("k")).public) .. "\n", out)
      local status2, out2 = run_keygen { "--show", path("k") }
      assert.are.equal(0, status2)
      assert.are.equal(out, out2)
    end)

    it("exits 2 on an existing file, a bad key file, or neither or both options", function()
      assert.are.equal(0, (run_keygen { "--out", path("k") }))
      local status, out, err = run_keygen { "--out", path("k") }
      assert.are.equal(2, status)
      assert.are.equal("", out)
      assert.are.equal("cannot write the key file (exists): " .. path("k") .. ": exists already "
        .. "(never overwritten)", err)
      local _
      status, _, err = run_keygen { "--show", path("missing") }
      assert.are.equal(2, status)
      assert.are.equal("cannot read the key file (missing): " .. path("missing") .. ": no such key file", err)
      for _, args in ipairs { {}, { "--out", path("x"), "--show", path("k") } } do
        status, _, err = run_keygen(args)
        assert.are.equal(2, status)
        assert.are.equal("give one of --out FILE (a new key) or --show FILE (an existing key)", err)
      end
    end)
  end)
end)
