--- The lab's simulated signer: cheap, deterministic for a seed, and
-- unforgeable through the lab's interfaces. A keyring holds a secret per
-- node, out of reach of protocols and adversaries (a closure's upvalue);
-- `keyring:signer(name)` signs as name only, and verifies anyone's
-- signature. The harness hands each node its own signer and an adversary
-- the signers of the nodes it controls, so a byzantine node signs as
-- itself and as nobody else. (Reading the lab's internals through the
-- debug library is outside the model.) Real nodes back the same interface
-- with Ed25519 keys.
--
--     local keyring = signer.keyring(seed, names)
--     local s = keyring:signer("n01")
--     local sig = s:sign("vote 3 0 ...")
--     s:verify("n01", "vote 3 0 ...", sig)   --> true
-- @module csm.lab.signer

local check = require "csm.check"
local fnv = require "csm.fnv"

local format, hash32 = string.format, fnv.hash32

local signer = {}

-- A signature: two 32-bit FNV-1a lanes over the message, each started from
-- one half of the signer's secret.
local function mac(secret, bytes)
  return format("%08x%08x", hash32(bytes, secret[1]), hash32(bytes, secret[2]))
end

local Signer = {}
Signer.__index = Signer

--- A keyring for names: each name's secret is drawn from seed (a number),
-- so one seed gives the same signatures in every run and interpreter.
function signer.keyring(seed, names)
  local fname = "signer.keyring"
  check.number(fname, "seed", seed)
  check.type(fname, "names", names, "table")
  local secrets = {}
  for i, name in ipairs(names) do
    if type(name) ~= "string" then check.fail("%s: option 'names' item %d must be a string", fname, i) end
    local h = hash32(format("csm-sim-signer %.0f %s", seed, name))
    secrets[name] = { hash32("a", h), hash32("b", h) }
  end
  local keyring = {}
  --- The signer of name: sign(bytes) as name; verify(peer, bytes, sig) for
  -- any name of the keyring.
  function keyring.signer(_, name)
    local secret = secrets[name]
    if secret == nil then check.fail("keyring:signer: no key for '%s'", tostring(name)) end
    return setmetatable({
      name = name,
      sign = function(_, bytes) return mac(secret, bytes) end,
      verify = function(_, peer, bytes, sig)
        local s = secrets[peer]
        return s ~= nil and type(bytes) == "string" and type(sig) == "string" and mac(s, bytes) == sig
      end,
    }, Signer)
  end
  return keyring
end

--- Whether x has the signer interface (sign and verify).
function signer.is_signer(x)
  return type(x) == "table" and type(x.sign) == "function" and type(x.verify) == "function"
end

return signer
