--- A node's Ed25519 key: made, written to and read from its key file, and
-- the signer the reference protocol signs and verifies with.
--
-- A key file is one line of text, readable by its owner only (mode 0600):
--
--     csm-ed25519-secret <64 hex digits: the 32-byte seed>
--
-- The seed determines the whole key pair. The cluster configuration names
-- each node's public key as 64 hex digits (keys.hex).
--
--     local key = keys.generate()          -- { public = 32 bytes, secret = 64 }
--     assert(keys.write("node.key", key))  -- never overwrites
--     local key = assert(keys.read("node.key"))
--     local signer = keys.signer(key, { n1 = pk1, n2 = pk2 })
-- @module csm.node.keys

local check = require "csm.check"
local sodium = require("csm.core").sodium
local uv = require "luv"

local byte, char, format = string.byte, string.char, string.format
local fail = check.fail

local keys = {}

-- The first word of a key file: names the kind of key it holds.
local MAGIC = "csm-ed25519-secret"
local LINE = "^csm%-ed25519%-secret (%x+)\n?$"
-- A key file is one short line; anything much longer is not one.
local FILE_MAX = 256
local MODE_0600 = 384

--- The bytes as lowercase hex.
function keys.hex(bytes)
  if type(bytes) ~= "string" then check.argerror("keys.hex", 1, "bytes", "string expected", bytes) end
  return (bytes:gsub(".", function(c) return format("%02x", byte(c)) end))
end

--- The bytes of hex text (either case), or nil, message, "format" when it is
-- not an even number of hex digits.
function keys.unhex(text)
  if type(text) ~= "string" then check.argerror("keys.unhex", 1, "text", "string expected", text) end
  if #text % 2 ~= 0 or text:find("[^%x]") then
    return nil, "keys.unhex: not an even number of hex digits", "format"
  end
  return (text:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- Raises unless key is { public = 32 bytes, secret = 64 bytes } that agree.
local function check_key(fname, n, key)
  if type(key) ~= "table" or type(key.public) ~= "string" or #key.public ~= 32
      or type(key.secret) ~= "string" or #key.secret ~= 64 then
    check.argerror(fname, n, "key", "key { public = 32 bytes, secret = 64 bytes } expected", key)
  end
  if sodium.sign_public(key.secret) ~= key.public then
    fail("%s: bad argument #%d 'key' (its public key is not its secret key's)", fname, n)
  end
end

local function check_path(fname, path)
  if type(path) ~= "string" or path == "" or path:find("\0", 1, true) then
    check.argerror(fname, 1, "path", "file name expected", path)
  end
end

--- A new random key: { public = 32 bytes, secret = 64 bytes }.
function keys.generate()
  local public, secret = sodium.sign_keypair()
  return { public = public, secret = secret }
end

--- The key of a 32-byte seed (what a key file holds).
function keys.from_seed(seed)
  if type(seed) ~= "string" or #seed ~= 32 then
    check.argerror("keys.from_seed", 1, "seed", "32-byte string expected", seed)
  end
  local public, secret = sodium.sign_keypair(seed)
  return { public = public, secret = secret }
end

--- Writes key to a new file at path, mode 0600: true, or nil, message, code
-- ("exists": path is there already, never overwritten; "io").
function keys.write(path, key)
  local fname = "keys.write"
  check_path(fname, path)
  check_key(fname, 2, key)
  local fd, err, code = uv.fs_open(path, "wx", MODE_0600)
  if fd == nil then
    if code == "EEXIST" then return nil, format("%s: exists already (never overwritten)", path), "exists" end
    return nil, format("%s: %s", path, tostring(err)), "io"
  end
  local line = MAGIC .. " " .. keys.hex(sodium.sign_seed(key.secret)) .. "\n"
  -- the mode is set again, whatever the umask left
  local ok, why = uv.fs_fchmod(fd, MODE_0600)
  if ok then ok, why = uv.fs_write(fd, line, 0) end
  if ok and ok ~= #line then ok, why = nil, "short write" end
  if ok then ok, why = uv.fs_fsync(fd) end
  uv.fs_close(fd)
  if not ok then
    uv.fs_unlink(path)
    return nil, format("%s: %s", path, tostring(why)), "io"
  end
  return true
end

--- Reads the key file at path: the key, or nil, message, code ("missing",
-- "mode": group or others may read it, "format", "io").
function keys.read(path)
  local fname = "keys.read"
  check_path(fname, path)
  local fd, err, code = uv.fs_open(path, "r", 0)
  if fd == nil then
    if code == "ENOENT" then return nil, format("%s: no such key file", path), "missing" end
    return nil, format("%s: %s", path, tostring(err)), "io"
  end
  local stat, why = uv.fs_fstat(fd)
  local text, problem, problem_code
  if stat == nil then
    problem, problem_code = tostring(why), "io"
  elseif stat.type ~= "file" then
    problem, problem_code = "not a regular file", "format"
  elseif stat.mode % 64 ~= 0 then
    problem = format("readable by others (mode %03o; chmod 600 it)", stat.mode % 512)
    problem_code = "mode"
  elseif stat.size > FILE_MAX then
    problem, problem_code = "too long for a key file", "format"
  else
    text, why = uv.fs_read(fd, FILE_MAX + 1, 0)
    if text == nil then problem, problem_code = tostring(why), "io" end
  end
  uv.fs_close(fd)
  if problem then return nil, format("%s: %s", path, problem), problem_code end
  local digits = #text <= FILE_MAX and text:match(LINE)
  if not digits or #digits ~= 64 then
    return nil, format("%s: not a csm key file (one line: %s <64 hex digits>)", path, MAGIC), "format"
  end
  return keys.from_seed(keys.unhex(digits))
end

--- A signer for key over publics (node name -> 32-byte public key):
-- `signer:sign(bytes)` -> the 64-byte signature as key;
-- `signer:verify(name, bytes, sig)` -> whether sig is name's signature of
-- bytes (false for an unknown name or a malformed signature: they come from
-- peers; never an error). signer.name is the name of key's public key among
-- publics, if it is there. The secret key is kept out of reach (an upvalue).
function keys.signer(key, publics)
  local fname = "keys.signer"
  check_key(fname, 1, key)
  if type(publics) ~= "table" then check.argerror(fname, 2, "publics", "table expected", publics) end
  local copy, name, secret = {}, nil, key.secret
  for k, v in pairs(publics) do
    if type(k) ~= "string" or type(v) ~= "string" or #v ~= 32 then
      fail("%s: bad argument #2 'publics' (node name -> 32-byte public key expected; entry %s is %s)",
        fname, check.show(k), check.show(v))
    end
    copy[k] = v
    if v == key.public then name = k end
  end
  return {
    name = name,
    sign = function(_, bytes)
      if type(bytes) ~= "string" then check.argerror("signer:sign", 1, "bytes", "string expected", bytes) end
      return sodium.sign(bytes, secret)
    end,
    verify = function(_, peer, bytes, sig)
      local public = copy[peer]
      if public == nil or type(bytes) ~= "string" or type(sig) ~= "string" or #sig ~= 64 then return false end
      return sodium.verify(sig, bytes, public)
    end,
  }
end

return keys
