-- The cost of a connection's handshake and of its frames, in process (no
-- sockets): both sides of N handshakes, then M frames of B bytes sealed and
-- opened. Wall time is noisy: compare runs, or count instructions with
--   valgrind --tool=callgrind lua5.4 tools/handshake_bench.lua --handshakes 20 --frames 0
-- Usage: . scripts/env.sh; lua5.4 tools/handshake_bench.lua [--handshakes N] [--frames M] [--bytes B]
-- (run after `. scripts/env.sh`, which sets the module paths)
local uv = require "luv"
local keys = require "csm.node.keys"
local secret = require "csm.node.secret"
local core = require "csm.core"

local o = { handshakes = 200, frames = 20000, bytes = 1024 }
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-(%w+)$")
  if not k or o[k] == nil or not tonumber(arg[i + 1]) then
    io.stderr:write("usage: handshake_bench.lua [--handshakes N] [--frames M] [--bytes B]\n")
    os.exit(2)
  end
  o[k] = tonumber(arg[i + 1])
  i = i + 2
end

local a, b = keys.generate(), keys.generate()
local fp = core.sodium.hash("bench", nil, 32)
local names = { [a.public] = "a", [b.public] = "b" }
local function known(pk) return names[pk] end

local function pair()
  local x = secret.handshake { public = a.public, secret = a.secret, fingerprint = fp, expect = b.public,
    known = known }
  local y = secret.handshake { public = b.public, secret = b.secret, fingerprint = fp, known = known }
  local to_y, to_x = x:start(), y:start()
  local sx, sy
  while sx ~= "done" or sy ~= "done" do
    local out
    if to_y ~= "" then
      out, sy = assert(y:feed(to_y))
      to_y = ""
      to_x = to_x .. out
    end
    if to_x ~= "" then
      out, sx = assert(x:feed(to_x))
      to_x = ""
      to_y = to_y .. out
    end
  end
  return x:session(), y:session()
end

local t0 = uv.hrtime()
local sa, sb
for _ = 1, o.handshakes do sa, sb = pair() end
local t1 = uv.hrtime()
local plain = string.rep("x", o.bytes)
for _ = 1, o.frames do
  local list = sb:feed(sa:seal(plain))
  assert(list[1] == plain)
end
local t2 = uv.hrtime()
print(string.format("handshake (both sides): %.0f us  (%d handshakes)", (t1 - t0) / 1e3 / o.handshakes,
  o.handshakes))
if o.frames > 0 then
  print(string.format("frame of %d bytes sealed and opened: %.2f us  (%d frames)", o.bytes,
    (t2 - t1) / 1e3 / o.frames, o.frames))
end
