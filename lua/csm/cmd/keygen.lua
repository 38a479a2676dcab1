--- `csm keygen`: makes a node's Ed25519 key file (mode 0600, never
-- overwriting one) and prints its public key in hex, the form the cluster
-- configuration names it in; `--show` prints an existing file's.
-- @module csm.cmd.keygen

local cmd = require "csm.cmd"

local keygen = {}

keygen.summary = "Make a node's key file and print its public key."

function keygen.add(c)
  c:description([[
Writes a new Ed25519 key to FILE (--out), readable by its owner only (mode
0600); an existing file is never overwritten. Prints the public key as 64
hex digits on one line, the form the cluster configuration lists it in.
With --show FILE, prints the public key of an existing key file instead.
The file is one line: csm-ed25519-secret <64 hex digits of the seed>.]])
  c:option("--out", "The key file to write (must not exist)."):argname("FILE")
  c:option("--show", "An existing key file whose public key to print."):argname("FILE")
end

function keygen.run(args)
  local keys = require "csm.node.keys"
  if (args.out == nil) == (args.show == nil) then
    cmd.usage_error("give one of --out FILE (a new key) or --show FILE (an existing key)")
  end
  local key
  if args.show then
    local err, code
    key, err, code = keys.read(args.show)
    if key == nil then cmd.usage_error("cannot read the key file (%s): %s", code, err) end
  else
    key = keys.generate()
    local ok, err, code = keys.write(args.out, key)
    if not ok then cmd.usage_error("cannot write the key file (%s): %s", code, err) end
  end
  io.stdout:write(keys.hex(key.public), "\n")
  return cmd.OK
end

return keygen
