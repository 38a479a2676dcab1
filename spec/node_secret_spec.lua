-- csm.core.sodium (the libsodium binding) and csm.node.secret: the
-- authenticated handshake and the encrypted frames of real nodes, fed to
-- each other as bytes, split anywhere, flipped, replayed and reflected.
local keys = require "csm.node.keys"
local secret = require "csm.node.secret"
local sodium = require("csm.core").sodium
local support = require "spec.support"

local error_of = support.error_of
local byte, char, rep = string.byte, string.char, string.rep

local function unhex(text)
  return (text:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- s with its byte i (1-based) changed (never to itself).
local function flip(s, i)
  return s:sub(1, i - 1) .. char((byte(s, i) + 2 ^ ((i - 1) % 8)) % 256) .. s:sub(i + 1)
end

local FP = rep("\1", 32)

-- Three nodes' keys, and the configuration's names of them.
local ka, kb, kc = keys.generate(), keys.generate(), keys.generate()
local names = { [ka.public] = "a", [kb.public] = "b", [kc.public] = "c" }
local function known(pk) return names[pk] end

-- The handshakes of a (the initiator, dialling b) and b (the responder);
-- o overrides either side's options.
local function pair(o)
  o = o or {}
  local a = secret.handshake { public = ka.public, secret = ka.secret, fingerprint = o.fp_a or FP,
    expect = o.expect or kb.public, known = o.known_a or known }
  local b = secret.handshake { public = kb.public, secret = kb.secret, fingerprint = o.fp_b or FP,
    known = o.known_b or known }
  return a, b
end

-- Moves the bytes each side writes to the other, in chunks of o.size bytes
-- (default: all at once), through o.tamper(from, offset, chunk) if given,
-- until nothing moves. Returns a's and b's records: status ("done",
-- "failed" or nil), err, code, and out (what is still to deliver).
local function exchange(a, b, o)
  o = o or {}
  local size = o.size or math.huge
  local sa = { h = a, name = "a", out = a:start(), sent = 0 }
  local sb = { h = b, name = "b", out = b:start(), sent = 0 }
  sa.peer, sb.peer = sb, sa
  local moved = true
  while moved do
    moved = false
    for _, s in ipairs { sa, sb } do
      local r = s.peer
      if #s.out > 0 and r.status == nil then
        local n = math.min(size, #s.out)
        local chunk = s.out:sub(1, n)
        s.out = s.out:sub(n + 1)
        if o.tamper then chunk = o.tamper(s.name, s.sent, chunk) end
        s.sent = s.sent + #chunk
        local out, status, code = r.h:feed(chunk)
        if out == nil then
          r.status, r.err, r.code = "failed", status, code
        else
          r.out = r.out .. out
          if status == "done" then r.status = "done" end
        end
        moved = true
      end
    end
  end
  return sa, sb
end

-- Two sessions that completed a handshake.
local function sessions()
  local a, b = pair()
  local ra, rb = exchange(a, b)
  assert(ra.status == "done" and rb.status == "done")
  return a:session(), b:session()
end

-- Feeds bytes to s in chunks of size; returns every plaintext, or nil, err,
-- code at the first refusal.
local function feed_all(s, bytes, size)
  local got = {}
  for i = 1, math.max(#bytes, 1), size do
    local list, err, code = s:feed(bytes:sub(i, i + size - 1))
    if list == nil then return nil, err, code end
    for _, p in ipairs(list) do got[#got + 1] = p end
  end
  return got
end

describe("csm.core.sodium", function()
  describe("sign_keypair, sign and verify", function()
    it("are Ed25519 (RFC 8032's first test vector)", function()
      local seed = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
      local pk, sk = sodium.sign_keypair(seed)
      assert.are.equal("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", keys.hex(pk))
      assert.are.equal(seed, sodium.sign_seed(sk))
      assert.are.equal(pk, sodium.sign_public(sk))
      local sig = sodium.sign("", sk)
      assert.are.equal("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        .. "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b", keys.hex(sig))
      assert.is_true(sodium.verify(sig, "", pk))
      assert.is_false(sodium.verify(sig, "x", pk))
      assert.is_false(sodium.verify(flip(sig, 1), "", pk))
    end)

    it("makes a fresh pair without a seed", function()
      local pk1, sk1 = sodium.sign_keypair()
      local pk2 = sodium.sign_keypair()
      assert.are.equal(32, #pk1)
      assert.are.equal(64, #sk1)
      assert.are_not.equal(pk1, pk2)
    end)

    it("takes a signature of the wrong size as false, not an error", function()
      local pk, sk = sodium.sign_keypair()
      local sig = sodium.sign("m", sk)
      assert.is_false(sodium.verify(sig:sub(1, 63), "m", pk))
      assert.is_false(sodium.verify(sig .. "x", "m", pk))
      assert.is_false(sodium.verify("", "m", pk))
    end)

    it("raises naming the function and the argument", function()
      local pk, sk = sodium.sign_keypair()
      assert.are.equal("sodium.sign: bad argument #2 'secret' (64-byte string expected, got 32 bytes)",
        error_of(sodium.sign, "m", pk))
      assert.are.equal("sodium.sign: bad argument #1 'message' (string expected, got nil)",
        error_of(sodium.sign, nil, sk))
      assert.are.equal("sodium.sign_keypair: bad argument #1 'seed' (32-byte string expected, got number)",
        error_of(sodium.sign_keypair, 1))
      assert.are.equal("sodium.verify: bad argument #3 'public' (32-byte string expected, got 64 bytes)",
        error_of(sodium.verify, "", "m", sk))
      assert.are.equal("sodium.verify: bad argument #1 'sig' (string expected, got boolean)",
        error_of(sodium.verify, true, "m", pk))
    end)
  end)

  describe("kx_client and kx_server", function()
    it("agree on the keys: the client's tx is the server's rx", function()
      local cpk, csk = sodium.kx_keypair()
      local spk, ssk = sodium.kx_keypair()
      local crx, ctx = sodium.kx_client(cpk, csk, spk)
      local srx, stx = sodium.kx_server(spk, ssk, cpk)
      assert.are.equal(ctx, srx)
      assert.are.equal(crx, stx)
      assert.are_not.equal(crx, ctx)
    end)

    it("refuses a peer key that is not a usable point", function()
      local cpk, csk = sodium.kx_keypair()
      local rx, err, code = sodium.kx_client(cpk, csk, rep("\0", 32))
      assert.is_nil(rx)
      assert.are.equal("the peer's key exchange key is not a usable point", err)
      assert.are.equal("weak", code)
    end)

    it("raises naming the argument", function()
      local cpk = sodium.kx_keypair()
      assert.are.equal("sodium.kx_server: bad argument #2 'secret' (32-byte string expected, got nil)",
        error_of(sodium.kx_server, cpk, nil, cpk))
    end)
  end)

  describe("aead_encrypt and aead_decrypt", function()
    it("round-trip, and refuse any byte flipped, another ad, nonce or key", function()
      local key, nonce = sodium.random(32), sodium.random(24)
      local c = sodium.aead_encrypt("plain text", "ad", nonce, key)
      assert.are.equal(#"plain text" + 16, #c)
      assert.are.equal("plain text", sodium.aead_decrypt(c, "ad", nonce, key))
      for i = 1, #c do
        local p, err, code = sodium.aead_decrypt(flip(c, i), "ad", nonce, key)
        assert.is_nil(p)
        assert.are.equal("the ciphertext does not authenticate", err)
        assert.are.equal("tampered", code)
      end
      assert.is_nil(sodium.aead_decrypt(c, "other", nonce, key))
      assert.is_nil(sodium.aead_decrypt(c, "ad", flip(nonce, 1), key))
      assert.is_nil(sodium.aead_decrypt(c, "ad", nonce, flip(key, 1)))
      assert.are.same({ nil, "the ciphertext has the wrong length", "tampered" },
        { sodium.aead_decrypt("short", "ad", nonce, key) })
      assert.are.equal("", sodium.aead_decrypt(sodium.aead_encrypt("", nil, nonce, key), nil, nonce, key))
    end)

    it("raises naming the argument", function()
      assert.are.equal("sodium.aead_encrypt: bad argument #3 'nonce' (24-byte string expected, got 12 bytes)",
        error_of(sodium.aead_encrypt, "p", nil, rep("n", 12), rep("k", 32)))
      assert.are.equal("sodium.aead_decrypt: bad argument #2 'ad' (string or nil expected, got number)",
        error_of(sodium.aead_decrypt, "p", 1, rep("n", 24), rep("k", 32)))
    end)
  end)

  describe("hash", function()
    it("is BLAKE2b, of 32 bytes by default, keyed or not", function()
      assert.are.equal("0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8",
        keys.hex(sodium.hash("")))
      assert.are.equal(64, #sodium.hash("x", nil, 64))
      assert.are_not.equal(sodium.hash("x"), sodium.hash("x", rep("k", 32)))
      assert.are.equal(sodium.hash("x", rep("k", 16)), sodium.hash("x", rep("k", 16)))
    end)

    it("raises on a bad key or length", function()
      assert.are.equal("sodium.hash: bad argument #2 'key' (string of 16 to 64 bytes or nil expected, "
        .. "got 8 bytes)", error_of(sodium.hash, "x", rep("k", 8)))
      for _, n in ipairs { 15, 65, 16.5, "32" } do
        assert.are.equal("sodium.hash: bad argument #3 'length' (integer in [16, 64] or nil expected, got "
          .. type(n) .. ")", error_of(sodium.hash, "x", nil, n))
      end
    end)
  end)

  describe("random", function()
    it("gives n bytes, different each time", function()
      assert.are.equal("", sodium.random(0))
      assert.are.equal(100, #sodium.random(100))
      assert.are_not.equal(sodium.random(32), sodium.random(32))
      assert.are.equal("sodium.random: bad argument #1 'n' (integer in [0, 2^24] expected, got number)",
        error_of(sodium.random, -1))
    end)
  end)

  describe("push_init, pull_init, push and pull", function()
    it("decrypt in order and refuse replayed, reordered and tampered messages", function()
      local key = sodium.random(32)
      local push, header = sodium.push_init(key)
      assert.are.equal(24, #header)
      local c1, c2 = push:push("one"), push:push("two", sodium.TAG_FINAL, "ad")
      local pull = sodium.pull_init(header, key)
      assert.are.same({ nil, "the frame does not authenticate (tampered, replayed or reordered)",
        "tampered" }, { pull:pull(c2, "ad") })
      assert.are.same({ "one", sodium.TAG_MESSAGE }, { pull:pull(c1) })
      assert.is_nil(pull:pull(c1))
      assert.is_nil(pull:pull(c2))
      assert.is_nil(pull:pull(flip(c2, 5), "ad"))
      assert.are.same({ "two", sodium.TAG_FINAL }, { pull:pull(c2, "ad") })
    end)

    it("close zeroes the state once, and a closed stream raises", function()
      local push = sodium.push_init(sodium.random(32))
      assert.is_false(push:closed())
      assert.is_true(push:close())
      assert.is_true(push:close())
      assert.is_true(push:closed())
      assert.are.equal("stream:push: the stream is closed", error_of(push.push, push, "x"))
      assert.are.equal("stream:pull: bad self (a pull stream expected, got a push stream)",
        error_of(push.pull, push, "x"))
      assert.are.equal("stream:push: bad self (csm secretstream expected, got table)",
        error_of(push.push, {}, "x"))
      push = nil -- luacheck: ignore
      collectgarbage()
    end)
  end)
end)

describe("csm.node.secret", function()
  describe("handshake", function()
    it("has the documented sizes", function()
      assert.are.equal(1048576, secret.FRAME_MAX)
      assert.are.equal(32, secret.HELLO_BYTES)
      assert.are.equal(136, secret.AUTH_BYTES)
    end)

    it("completes with bytes in chunks of every size, and names each peer", function()
      for size = 1, secret.HELLO_BYTES + secret.AUTH_BYTES + 1 do
        local a, b = pair()
        local ra, rb = exchange(a, b, { size = size })
        assert.are.equal("done", ra.status, ra.err)
        assert.are.equal("done", rb.status, rb.err)
        assert.are.same({ name = "b", public = kb.public }, a.peer)
        assert.are.same({ name = "a", public = ka.public }, b.peer)
      end
      local a, b = pair()
      local hello_a, hello_b = a:start(), b:start()
      assert.are.equal(secret.HELLO_BYTES, #hello_a)
      local auth_a, status = a:feed(hello_b)
      assert.are.equal("more", status)
      assert.are.equal(secret.AUTH_BYTES, #auth_a)
      local auth_b = b:feed(hello_a .. auth_a)
      assert.are.same({ "", "done" }, { a:feed(auth_b) })
    end)

    it("refuses another key than the one expected (initiator)", function()
      local a, b = pair { expect = kc.public }
      local ra = exchange(a, b)
      assert.are.equal("failed", ra.status)
      assert.are.equal("key", ra.code)
      assert.are.equal("handshake: the peer's key " .. keys.hex(kb.public) .. " is not the one expected ("
        .. keys.hex(kc.public) .. ")", ra.err)
      assert.is_nil(a.peer)
    end)

    it("refuses a key the configuration does not list (responder)", function()
      local a, b = pair { known_b = function(pk) return pk ~= ka.public and names[pk] or nil end }
      local _, rb = exchange(a, b)
      assert.are.equal("failed", rb.status)
      assert.are.equal("unknown", rb.code)
      assert.are.equal("handshake: the peer's key " .. keys.hex(ka.public) .. " is not in the configuration",
        rb.err)
    end)

    it("refuses a peer of another cluster configuration (fingerprint)", function()
      local a, b = pair { fp_b = rep("\2", 32) }
      local ra, rb = exchange(a, b, { size = 1 })
      assert.are.equal("auth", ra.code)
      assert.are.equal("auth", rb.code)
      assert.are.equal("handshake: the peer's auth does not decrypt (tampered, replayed, or another "
        .. "cluster configuration)", rb.err)
      a, b = pair { fp_b = rep("\2", 32) }
      ra, rb = exchange(a, b)
      assert.are.equal("auth", ra.code)
      assert.are_not.equal("done", rb.status)
    end)

    it("refuses every byte of either side's messages flipped, none accepted", function()
      local total = secret.HELLO_BYTES + secret.AUTH_BYTES
      for _, from in ipairs { "a", "b" } do
        for i = 1, total do
          local a, b = pair()
          local ra, rb = exchange(a, b, { tamper = function(name, offset, chunk)
            if name == from and i > offset and i <= offset + #chunk then return flip(chunk, i - offset) end
            return chunk
          end })
          local receiver, sender = rb, ra
          if from == "b" then receiver, sender = ra, rb end
          local where = from .. " byte " .. i
          assert.are_not.equal("done", receiver.status, where)
          if i > secret.HELLO_BYTES then
            assert.are.equal("failed", receiver.status, where)
            assert.are.equal("auth", receiver.code, where)
          else
            -- a changed hello changes both sides' keys: whichever side reads the
            -- other's auth first refuses it, and neither is done
            assert.are_not.equal("done", sender.status, where)
            assert.is_truthy(sender.code == "auth" or receiver.code == "auth", where)
          end
        end
      end
    end)

    it("refuses an auth recorded from another connection (replay)", function()
      local a1, b1 = pair()
      local hello_a1, hello_b1 = a1:start(), b1:start()
      local auth_a1 = a1:feed(hello_b1)
      assert.are.equal("done", select(2, b1:feed(hello_a1 .. auth_a1)))
      -- a fresh connection to b: the recorded hello and auth, or a fresh hello and the old auth
      for _, fresh_hello in ipairs { false, true } do
        local a2, b2 = pair()
        b2:start()
        local hello = fresh_hello and a2:start() or hello_a1
        local out, err, code = b2:feed(hello .. auth_a1)
        assert.is_nil(out)
        assert.are.equal("auth", code, err)
      end
    end)

    it("refuses its own hello echoed back (reflection)", function()
      local a = pair()
      local hello = a:start()
      assert.are.same({ nil, "handshake: the peer's hello is our own (a reflected connection)", "reflected" },
        { a:feed(hello) })
      assert.are.same({ nil, "handshake: fed after it failed", "state" }, { a:feed("x") })
    end)

    it("refuses bytes fed after it is done ('state')", function()
      local a, b = pair()
      exchange(a, b)
      assert.are.same({ nil, "handshake: fed after it was done", "state" }, { a:feed("") })
    end)

    it("raises on bad options and misuse, naming them", function()
      local base = { public = ka.public, secret = ka.secret, fingerprint = FP, known = known }
      local function with(k, v)
        local o = {}
        for key, value in pairs(base) do o[key] = value end
        o[k] = v
        return o
      end
      local h = secret.handshake
      assert.are.equal("secret.handshake: unknown option 'bogus'", error_of(h, with("bogus", 1)))
      assert.are.equal("secret.handshake: bad argument #1 'options' (table expected, got nil)", error_of(h))
      assert.are.equal("secret.handshake: option 'public' must be a 32-byte string (got nil)",
        error_of(h, with("public", nil)))
      assert.are.equal("secret.handshake: option 'fingerprint' must be a 32-byte string (got 3 bytes)",
        error_of(h, with("fingerprint", "abc")))
      assert.are.equal("secret.handshake: option 'expect' must be a 32-byte string (got number)",
        error_of(h, with("expect", 1)))
      assert.are.equal("secret.handshake: option 'known' must be a function (got nil)",
        error_of(h, with("known", nil)))
      assert.are.equal("secret.handshake: option 'public' is not the public key of option 'secret'",
        error_of(h, with("public", kb.public)))
      local x = h(base)
      assert.are.equal("handshake:feed: called before handshake:start", error_of(x.feed, x, ""))
      assert.are.equal("handshake:session: the handshake is not done", error_of(x.session, x))
      x:start()
      assert.are.equal("handshake:start: already started", error_of(x.start, x))
      assert.are.equal("handshake:feed: bad argument #1 'chunk' (string expected, got number)",
        error_of(x.feed, x, 1))
      assert.are.equal("handshake:feed: bad self (handshake expected, got table)", error_of(x.feed, {}, ""))
      local a, b = pair { known_b = function() return 7 end }
      a:start()
      local auth = a:feed(b:start())
      assert.are.equal("secret.handshake: option 'known' must return a string or nil (got 7)",
        error_of(b.feed, b, a.eph_public .. auth))
    end)
  end)

  describe("session", function()
    it("carries frames both ways, fed in chunks of every size and all at once", function()
      local sa, sb = sessions()
      local texts = { "one", "", rep("x", 300), "four" }
      local stream = {}
      for i, t in ipairs(texts) do stream[i] = sa:seal(t) end
      stream = table.concat(stream)
      for size = 1, #stream do
        local a2, b2 = sessions()
        local bytes = {}
        for i, t in ipairs(texts) do bytes[i] = a2:seal(t) end
        assert.are.same(texts, feed_all(b2, table.concat(bytes), size))
        assert.are.equal(0, b2:buffered())
      end
      assert.are.same(texts, feed_all(sb, stream, #stream))
      assert.are.same({ "back" }, sa:feed(sb:seal("back")))
    end)

    it("delivers frames that came with the handshake's last chunk on the first feed", function()
      local a, b = pair()
      local hello_a, hello_b = a:start(), b:start()
      local auth_a = a:feed(hello_b)
      local auth_b = b:feed(hello_a)
      assert.are.equal("done", select(2, a:feed(auth_b)))
      local sa = a:session()
      assert.are.equal(sa, a:session())
      local frames = sa:seal("early") .. sa:seal("bird")
      assert.are.same({ "", "done" }, { b:feed(auth_a .. frames .. "\0\0") })
      local sb = b:session()
      assert.are.same({ "early", "bird" }, sb:feed(""))
      assert.are.equal(2, sb:buffered())
    end)

    it("splits anywhere: two frames cut at every offset", function()
      local sa, sb = sessions()
      local probe = sa:seal("first") .. sa:seal("second")
      assert.are.same({ "first", "second" }, sb:feed(probe))
      for cut = 0, #probe do
        local a2, b2 = sessions()
        local bytes = a2:seal("first") .. a2:seal("second")
        local got = {}
        for _, part in ipairs { bytes:sub(1, cut), bytes:sub(cut + 1) } do
          for _, p in ipairs(assert(b2:feed(part))) do got[#got + 1] = p end
        end
        assert.are.same({ "first", "second" }, got)
      end
    end)

    it("seals an empty frame (the heartbeat) and the largest, and raises past it", function()
      local sa, sb = sessions()
      local empty = sa:seal("")
      assert.are.equal(4 + 17, #empty)
      assert.are.equal("\0\0\0\17", empty:sub(1, 4))
      assert.are.same({ "" }, sb:feed(empty))
      local big = rep("b", secret.FRAME_MAX)
      assert.are.same({ big }, sb:feed(sa:seal(big)))
      assert.are.equal("session:seal: bad argument #1 'plaintext' (string of at most 1048576 bytes expected, "
        .. "got 1048577 bytes)", error_of(sa.seal, sa, big .. "b"))
      assert.are.equal("session:seal: bad argument #1 'plaintext' (string expected, got nil)",
        error_of(sa.seal, sa))
    end)

    it("refuses a declared length past the largest frame from the length alone ('oversize')", function()
      local n = secret.FRAME_MAX + 17 + 1
      for _, length in ipairs { n, 0, 16, 2 ^ 32 - 1 } do
        local _, sb = sessions()
        local bytes = char(math.floor(length / 16777216) % 256, math.floor(length / 65536) % 256,
          math.floor(length / 256) % 256, length % 256)
        local list, err, code = sb:feed(bytes)
        assert.is_nil(list)
        assert.are.equal("oversize", code)
        assert.are.equal(string.format("session: a frame declares %d bytes (17 to 1048593 allowed)", length),
          err)
        assert.are.same({ nil, "session: closed", "closed" }, { sb:feed("") })
      end
    end)

    it("refuses every byte of a frame flipped ('tampered' or 'oversize'), none accepted", function()
      local probe = sessions():seal("some text")
      for i = 1, #probe do
        local sa, sb = sessions()
        local bytes = flip(sa:seal("some text"), i)
        -- a longer length waits for more: what follows is taken as the frame's rest
        if i <= 4 then bytes = bytes .. sa:seal(rep("z", secret.FRAME_MAX)) .. rep("\0", 20) end
        local list, _, code = sb:feed(bytes)
        assert.is_nil(list, "byte " .. i)
        assert.is_truthy(code == "tampered" or code == "oversize", "byte " .. i)
        assert.are.equal("closed", select(3, sb:feed(sa:seal("next"))))
      end
    end)

    it("refuses a frame replayed, reordered, cut and glued, or from another connection", function()
      local sa, sb = sessions()
      local f1 = sa:seal("one")
      assert.are.same({ "one" }, sb:feed(f1))
      assert.are.same({ nil, "session: a frame does not authenticate (tampered, replayed, reordered or cut)",
        "tampered" }, { sb:feed(f1) })
      sa, sb = sessions()
      local f2
      f1, f2 = sa:seal("one"), sa:seal("two")
      assert.are.equal("tampered", select(3, sb:feed(f2 .. f1)))
      sa, sb = sessions()
      f1, f2 = sa:seal("one"), sa:seal("two")
      assert.are.same({}, sb:feed(f1:sub(1, -2)))
      assert.are.equal(#f1 - 5, sb:buffered())
      assert.are.equal("tampered", select(3, sb:feed(f2)))
      local _, other = sessions()
      assert.are.equal("tampered", select(3, other:feed(sessions():seal("elsewhere"))))
    end)

    it("holds at most one partial frame", function()
      local sa, sb = sessions()
      local bytes = sa:seal(rep("p", 1000)) .. sa:seal(rep("q", 1000))
      local most = 0
      for i = 1, #bytes, 7 do
        assert(sb:feed(bytes:sub(i, i + 6)))
        most = math.max(most, sb:buffered())
      end
      assert.is_true(most < 1000 + 17 + 7)
      assert.are.equal(0, sb:buffered())
    end)

    it("after close, feed refuses and seal raises", function()
      local sa, sb = sessions()
      assert.is_true(sb:close())
      assert.is_true(sb:close())
      assert.are.same({ nil, "session: closed", "closed" }, { sb:feed(sa:seal("x")) })
      assert.are.equal("session:seal: the session is closed", error_of(sb.seal, sb, "x"))
      assert.are.equal("session:feed: bad argument #1 'chunk' (string expected, got nil)",
        error_of(sa.feed, sa))
    end)
  end)
end)
