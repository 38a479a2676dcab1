--- The secure channel of real nodes, as pure functions over bytes (the
-- transport moves them): an authenticated key exchange in the manner of
-- station-to-station (SIGMA), then encrypted, length-prefixed frames.
--
--     local h = secret.handshake { public = key.public, secret = key.secret,
--       fingerprint = fp, expect = peer_public_or_nil, known = name_of }
--     write(h:start())
--     local out, status = h:feed(bytes_read)  -- write(out); until "done"
--     local s = h:session()
--     write(s:seal("hello"))
--     local list = s:feed(bytes_read)          -- the plaintexts, in order
--
-- The handshake (docs/node.md, Connections):
--
-- 1. each side sends a hello: a fresh X25519 ephemeral public key
--    (HELLO_BYTES);
-- 2. equal ephemerals are a reflection and refused; the lower one plays
--    crypto_kx's client. The transcript is BLAKE2b over the label, both
--    ephemerals (sorted) and the cluster fingerprint;
-- 3. each side sends its auth (AUTH_BYTES), AEAD-encrypted under its
--    handshake key with the transcript as associated data: its Ed25519
--    public key, its signature over (label, transcript, its own ephemeral)
--    and the header of the secretstream its frames are sealed with;
-- 4. each side decrypts the peer's auth, verifies the signature and the
--    key (`expect`, then `known`), and opens the peer's stream. Handshake
--    and data keys are derived apart, from the crypto_kx keys.
--
-- A frame is the 4-byte big-endian length of its ciphertext, then the
-- secretstream ciphertext of at most FRAME_MAX plaintext bytes, with the
-- length as associated data.
-- @module csm.node.secret

local check = require "csm.check"
local sodium = require("csm.core").sodium

local byte, char, sub, concat = string.byte, string.char, string.sub, table.concat
local floor = math.floor
local fail = check.fail

local secret = {}

--- The largest plaintext of one frame.
secret.FRAME_MAX = 1048576
--- The size of a hello: an X25519 public key.
secret.HELLO_BYTES = 32
--- The size of an auth: Ed25519 key, signature and stream header, sealed.
secret.AUTH_BYTES = 32 + 64 + sodium.STREAM_HEADERBYTES + sodium.AEAD_ABYTES

-- The protocol label: a new version of the handshake changes it, so two
-- versions never agree on a transcript.
local LABEL = "csm-secret-v1"
local HELLO, AUTH = secret.HELLO_BYTES, secret.AUTH_BYTES
local OVERHEAD = sodium.STREAM_ABYTES
local LENGTH_MAX = secret.FRAME_MAX + OVERHEAD
-- Each handshake key seals one message only, so a fixed nonce is safe.
local NONCE = string.rep("\0", 24)

-- Whether a sorts before b, byte by byte (string < follows the locale on
-- Lua 5.4, and both sides must agree whatever theirs).
local function before(a, b)
  for i = 1, #a do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end

local function hex(bytes)
  return (bytes:gsub(".", function(c) return string.format("%02x", byte(c)) end))
end

-- Raises unless option name of fname is a string of size bytes.
local function sized(fname, name, v, size, optional)
  if v == nil and optional then return nil end
  if type(v) ~= "string" or #v ~= size then
    fail("%s: option '%s' must be a %d-byte string (got %s)", fname, name, size,
      type(v) == "string" and (#v .. " bytes") or type(v))
  end
  return v
end

---------------------------------------------------------------------------
-- Sessions: the frames after the handshake.

local Session = {}
Session.__index = Session

-- Appends s to the rope list, merging while the last piece is at least as
-- long as the one before: few pieces, and each byte copied O(log n) times.
local function rope_push(list, s)
  local n = #list + 1
  list[n] = s
  while n > 1 and #list[n - 1] <= #list[n] do
    list[n - 1] = list[n - 1] .. list[n]
    list[n] = nil
    n = n - 1
  end
end

-- Makes the head hold at least n unread bytes (the caller knows they are
-- buffered).
local function gather(self, n)
  if #self.head - self.pos + 1 < n then
    self.head = sub(self.head, self.pos) .. concat(self.tail)
    self.pos = 1
    self.tail = {}
  end
end

-- Closes the reading side for good and returns the refusal.
local function refuse(self, message, code)
  self.closed = true
  self.pull:close()
  self.head, self.pos, self.tail, self.have, self.len = "", 1, {}, 0, nil
  return nil, message, code
end

local function new_session(push, pull, leftover)
  return setmetatable({ push = push, pull = pull, head = leftover, pos = 1, tail = {},
    have = #leftover, len = nil, ad = nil, closed = false, sealing = true }, Session)
end

local function check_session(fname, self)
  if getmetatable(self) ~= Session then check.selferror(fname, "session expected", self) end
end

--- A frame of plaintext (at most FRAME_MAX bytes; "" is a frame too): the
-- bytes to write.
function Session:seal(plaintext)
  local fname = "session:seal"
  check_session(fname, self)
  if type(plaintext) ~= "string" then
    check.argerror(fname, 1, "plaintext", "string expected", plaintext)
  end
  if #plaintext > secret.FRAME_MAX then
    fail("%s: bad argument #1 'plaintext' (string of at most %d bytes expected, got %d bytes)",
      fname, secret.FRAME_MAX, #plaintext)
  end
  if not self.sealing then fail("%s: the session is closed", fname) end
  local n = #plaintext + OVERHEAD
  local length = char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
  return length .. self.push:push(plaintext, nil, length)
end

--- Reads chunk (any bytes from the peer, split anywhere): returns the list
-- of plaintexts it completed, in order (maybe empty), or nil, message, code
-- ("oversize", "tampered", "closed"). After a refusal, every call refuses.
function Session:feed(chunk)
  local fname = "session:feed"
  check_session(fname, self)
  if type(chunk) ~= "string" then check.argerror(fname, 1, "chunk", "string expected", chunk) end
  if self.closed then return nil, "session: closed", "closed" end
  if #chunk > 0 then
    if self.have == 0 then
      self.head, self.pos = chunk, 1
    else
      rope_push(self.tail, chunk)
    end
    self.have = self.have + #chunk
  end
  local out = {}
  while true do
    if self.len == nil then
      if self.have < 4 then break end
      gather(self, 4)
      local pos = self.pos
      local b1, b2, b3, b4 = byte(self.head, pos, pos + 3)
      local n = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
      if n < OVERHEAD or n > LENGTH_MAX then
        return refuse(self, string.format("session: a frame declares %d bytes (%d to %d allowed)",
          n, OVERHEAD, LENGTH_MAX), "oversize")
      end
      self.len, self.ad = n, sub(self.head, pos, pos + 3)
      self.pos, self.have = pos + 4, self.have - 4
    end
    local n = self.len
    if self.have < n then break end
    gather(self, n)
    local pos = self.pos
    local cipher = sub(self.head, pos, pos + n - 1)
    self.pos, self.have, self.len = pos + n, self.have - n, nil
    local plain, tag = self.pull:pull(cipher, self.ad)
    if plain == nil then
      return refuse(self, "session: a frame does not authenticate (tampered, replayed, reordered "
        .. "or cut)", "tampered")
    end
    if tag ~= sodium.TAG_MESSAGE then
      return refuse(self, "session: a frame has an unexpected tag", "tampered")
    end
    out[#out + 1] = plain
  end
  -- keep no more than the unread rest of the head
  if self.have == 0 then
    self.head, self.pos = "", 1
  elseif self.pos > 1 then
    self.head, self.pos = sub(self.head, self.pos), 1
  end
  return out
end

--- How many bytes are held waiting for the rest of a frame (at most one
-- frame's).
function Session:buffered()
  check_session("session:buffered", self)
  return self.have
end

--- Zeroes both streams' states; feed refuses ("closed") and seal raises
-- afterwards. Idempotent.
function Session:close()
  check_session("session:close", self)
  self.push:close()
  self.sealing = false
  if not self.closed then refuse(self) end
  return true
end

---------------------------------------------------------------------------
-- The handshake.

local Handshake = {}
Handshake.__index = Handshake

local OPTIONS = { public = true, secret = true, fingerprint = true, expect = true, known = true }

--- A new handshake over options: public and secret (this node's Ed25519
-- key: csm.node.keys), fingerprint (32 bytes: the cluster configuration's
-- hash), expect (the initiator's: the public key of the peer dialled) and
-- known (function(public) -> the name of a configured key, or nil).
-- Raises on a bad option.
function secret.handshake(options)
  local fname = "secret.handshake"
  check.options(fname, options, OPTIONS)
  sized(fname, "public", options.public, 32)
  sized(fname, "secret", options.secret, 64)
  if sodium.sign_public(options.secret) ~= options.public then
    fail("%s: option 'public' is not the public key of option 'secret'", fname)
  end
  sized(fname, "fingerprint", options.fingerprint, 32)
  sized(fname, "expect", options.expect, 32, true)
  check.type(fname, "known", options.known, "function")
  return setmetatable({ phase = "new", public = options.public, secret = options.secret,
    fingerprint = options.fingerprint, expect = options.expect, known = options.known,
    buf = "", peer = nil }, Handshake)
end

local function check_handshake(fname, self)
  if getmetatable(self) ~= Handshake then check.selferror(fname, "handshake expected", self) end
end

--- The hello: the bytes to write first. Once only.
function Handshake:start()
  check_handshake("handshake:start", self)
  if self.phase ~= "new" then fail("handshake:start: already started") end
  self.eph_public, self.eph_secret = sodium.kx_keypair()
  self.phase = "hello"
  return self.eph_public
end

-- Forgets every secret of the handshake's own (the streams stay).
local function forget(self)
  self.secret, self.eph_secret, self.auth_rx, self.data_rx, self.transcript = nil, nil, nil, nil, nil
end

local function failed(self, message, code)
  self.phase = "failed"
  forget(self)
  if self.push then self.push:close() end
  self.push, self.buf = nil, ""
  return nil, "handshake: " .. message, code
end

-- The peer's hello: the keys, and our auth to send.
local function on_hello(self, peer_eph)
  local own = self.eph_public
  if peer_eph == own then return nil, "the peer's hello is our own (a reflected connection)", "reflected" end
  local rx, tx, low, high
  if before(own, peer_eph) then
    rx, tx = sodium.kx_client(own, self.eph_secret, peer_eph)
    low, high = own, peer_eph
  else
    rx, tx = sodium.kx_server(own, self.eph_secret, peer_eph)
    low, high = peer_eph, own
  end
  if rx == nil then return nil, "the peer's hello is not a usable key", "auth" end
  local t = sodium.hash(LABEL .. " transcript" .. low .. high .. self.fingerprint)
  self.transcript, self.peer_eph = t, peer_eph
  self.auth_rx = sodium.hash(LABEL .. " auth" .. t, rx)
  self.data_rx = sodium.hash(LABEL .. " data" .. t, rx)
  local auth_tx = sodium.hash(LABEL .. " auth" .. t, tx)
  local push, header = sodium.push_init(sodium.hash(LABEL .. " data" .. t, tx))
  self.push = push
  local sig = sodium.sign(LABEL .. " sig" .. t .. own, self.secret)
  return sodium.aead_encrypt(self.public .. sig .. header, t, NONCE, auth_tx)
end

-- The peer's auth: who the peer is, and its stream.
local function on_auth(self, cipher)
  local t = self.transcript
  local plain = sodium.aead_decrypt(cipher, t, NONCE, self.auth_rx)
  if plain == nil then
    return nil, "the peer's auth does not decrypt (tampered, replayed, or another cluster "
      .. "configuration)", "auth"
  end
  local public, sig, header = sub(plain, 1, 32), sub(plain, 33, 96), sub(plain, 97)
  if not sodium.verify(sig, LABEL .. " sig" .. t .. self.peer_eph, public) then
    return nil, "the peer's signature does not verify", "auth"
  end
  if self.expect ~= nil and public ~= self.expect then
    return nil, string.format("the peer's key %s is not the one expected (%s)", hex(public),
      hex(self.expect)), "key"
  end
  local name = self.known(public)
  if name == nil then
    return nil, string.format("the peer's key %s is not in the configuration", hex(public)), "unknown"
  end
  if type(name) ~= "string" then
    fail("secret.handshake: option 'known' must return a string or nil (got %s)", check.show(name))
  end
  local pull, why, code = sodium.pull_init(header, self.data_rx)
  if pull == nil then return nil, why, code == "tampered" and "auth" or code end
  self.pull = pull
  return { name = name, public = public }
end

--- Reads chunk (any bytes from the peer): returns the bytes to write now
-- (maybe "") and "more" or "done"; or nil, message, code ("reflected",
-- "key", "unknown", "auth", "state"). Bytes past the handshake are kept for
-- the session.
function Handshake:feed(chunk)
  local fname = "handshake:feed"
  check_handshake(fname, self)
  if type(chunk) ~= "string" then check.argerror(fname, 1, "chunk", "string expected", chunk) end
  local phase = self.phase
  if phase == "new" then fail("%s: called before handshake:start", fname) end
  if phase == "done" or phase == "failed" then
    return nil, "handshake: fed after it " .. (phase == "done" and "was done" or "failed"), "state"
  end
  local buf = self.buf .. chunk
  local out = ""
  if phase == "hello" then
    if #buf < HELLO then
      self.buf = buf
      return out, "more"
    end
    local auth, why, code = on_hello(self, sub(buf, 1, HELLO))
    if auth == nil then return failed(self, why, code) end
    out, buf, self.phase = auth, sub(buf, HELLO + 1), "auth"
  end
  if #buf < AUTH then
    self.buf = buf
    return out, "more"
  end
  local peer, why, code = on_auth(self, sub(buf, 1, AUTH))
  if peer == nil then return failed(self, why, code) end
  self.peer, self.phase, self.buf, self.leftover = peer, "done", "", sub(buf, AUTH + 1)
  forget(self)
  return out, "done"
end

--- The session of a handshake that is done (the same one each call); the
-- bytes fed past the handshake are its first.
function Handshake:session()
  check_handshake("handshake:session", self)
  if self.phase ~= "done" then fail("handshake:session: the handshake is not done") end
  if self.sess == nil then
    self.sess = new_session(self.push, self.pull, self.leftover)
    self.push, self.pull, self.leftover = nil, nil, nil
  end
  return self.sess
end

return secret
