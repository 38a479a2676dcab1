--- Run files: one lab run, self-contained, as JSON — what `csm sweep`
-- writes for each failing seed and `csm replay` and `csm shrink` take.
--
--     {
--       "format": "csm-run 1",
--       "config": { "nodes": 4, "ranks": 10, "loss": 0, ... },
--       "protocol": { "name": "broken_quorum", "file": "examples/protocols/broken_quorum.lua",
--                     "source": "fnv1a32:..." },
--       "adversary": null,
--       "seed": 17,
--       "schedule": [ { "kind": "partition", "at": 1.2, "duration": 3, "groups": [...] } ],
--       "expect": { "verdict": "invalid", "signature": "agreement", "rank": 3, ... },
--       "trace": { "lines": 812, "digest": "fnv1a32:...", "hashes": "..." }
--     }
--
-- The schedule is the run's whole list of faults but for the crash kind's
-- own crashes, which `config.crash_at` makes again: partitions given as
-- options are in it, and `config.partitions` is empty. A protocol or
-- adversary from a file is named by its path and the fingerprint of its
-- source; a shipped protocol by its name alone.
-- @module csm.lab.runfile

local check = require "csm.check"
local trace = require "csm.lab.trace"
local harness = require "csm.lab.harness"
local net = require "csm.lab.net"

local runfile = {}

--- The format this module writes and reads.
runfile.format = "csm-run 1"

-- Configuration keys a run file keeps (the rest are a run's outputs, or
-- modules, kept apart).
local KEPT = { "nodes", "ranks", "time", "latency", "jitter", "loss", "duplicate", "reorder", "byzantine",
               "crash_at", "restart_after", "timing", "view_timeout", "steps_per_instant", "twins",
               "twin_sides", "liveness_bound" }

-- The invariants, in the order a run's signature picks its first.
local ORDER = { "agreement", "validity", "equivocation", "durability", "always", "liveness", "progress" }

--- What failed in report r, as { verdict =, invariant =, signature =, rank
-- =, nodes =, text = } (invariant and signature nil for a valid run). The
-- signature names the invariant and the kind of its failure (for
-- agreement, whether the identities or only the digests differ; for
-- equivocation, the message kind; for always, the assertion), not the
-- seed's particulars: a shrunk run must keep it.
function runfile.outcome(r)
  local out = { verdict = r.verdict or harness.verdict(r) }
  local found = {}
  for _, v in ipairs(r.violations or {}) do
    local same = v.identities[1] == v.identities[2]
    found.agreement = found.agreement or { signature = same and "agreement:digest" or "agreement",
      rank = v.rank,
      nodes = { v.nodes[1], v.nodes[2] }, text = string.format("%s finalized %s, %s finalized %s at rank %d",
        v.nodes[1], v.identities[1], v.nodes[2], v.identities[2], v.rank) }
  end
  for _, f in ipairs(r.findings or {}) do
    if not found[f.invariant] then
      local detail = f.kind or f.name
      found[f.invariant] = { signature = f.invariant .. (detail and (":" .. detail) or ""), rank = f.rank,
                             nodes = f.node and { f.node } or nil, text = f.text }
    end
  end
  local live = r.liveness
  if live and live.verdict == "violated" then
    found.liveness = { signature = "liveness", nodes = live.late, text = "no finalization within the bound "
      .. "after the gst" }
  end
  for _, s in ipairs(r.stuck or {}) do
    if not s.advancing and not found.progress then
      found.progress = { signature = "progress:" .. tostring(s.state), nodes = { s.node },
                         text = string.format("%s stuck in %s since %.3f s", s.node, tostring(s.state),
                                              s.last) }
    end
  end
  for _, invariant in ipairs(ORDER) do
    local f = found[invariant]
    if f then
      out.invariant, out.signature, out.rank, out.nodes, out.text = invariant, f.signature, f.rank, f.nodes,
        f.text
      break
    end
  end
  return out
end

--- A run file (a table) for harness configuration c as the caller gave it
-- (before harness.config), its report r, and modules = { protocol = {
-- name, file, source }, adversary = { name, file, source } } (file and
-- source nil for a shipped protocol).
function runfile.make(c, r, modules)
  local config = {}
  for _, k in ipairs(KEPT) do config[k] = c[k] end
  if config.steps_per_instant == math.huge then config.steps_per_instant = nil end
  -- the crashes --restarts draws are written out too: the file replays them
  local full = harness.config(c)
  local schedule = harness.listed_faults(full, net.names(full.nodes), harness.parts(full))
  return { format = runfile.format, config = config, protocol = modules.protocol,
           adversary = modules.adversary, seed = c.seed, schedule = schedule,
           expect = r and runfile.outcome(r) or nil }
end

-- cjson's numbers are floats: integral ones back to integers, through
-- tables; cjson.null to nil.
local function tidy(x, null)
  if x == null then return nil end
  if type(x) == "number" and math.tointeger then return math.tointeger(x) or x end
  if type(x) ~= "table" then return x end
  local out = {}
  for k, v in pairs(x) do out[k] = tidy(v, null) end
  return out
end

--- Reads the run file at path: the table, or nil, a message and "io" (it
-- cannot be read) or "format" (it is not a run file).
function runfile.read(path)
  if type(path) ~= "string" then check.argerror("runfile.read", 1, "path", "string expected", path) end
  local fh, err = io.open(path, "rb")
  if not fh then return nil, "cannot read " .. tostring(err), "io" end
  local text = fh:read("*a")
  fh:close()
  local cjson = require "cjson"
  local ok, data = pcall(cjson.decode, text)
  if not ok or type(data) ~= "table" then return nil, path .. " is not JSON", "format" end
  data = tidy(data, cjson.null)
  if data.format ~= runfile.format then
    return nil, string.format("%s is not a run file (format %s, not '%s')", path, check.show(data.format),
      runfile.format), "format"
  end
  if type(data.config) ~= "table" or type(data.schedule) ~= "table" or not check.is_integer(data.seed) then
    return nil, path .. ": a run file needs config, seed and schedule", "format"
  end
  return data
end

--- Writes run file rf to path as canonical JSON; true, or nil, a message
-- and "io".
function runfile.write(rf, path)
  local fh, err = io.open(path, "wb")
  if not fh then return nil, "cannot write " .. tostring(err), "io" end
  local ok, werr = fh:write(trace.json(rf), "\n")
  fh:close()
  if not ok then return nil, "cannot write " .. tostring(werr), "io" end
  return true
end

-- The file a run file names, found as given or beside the run file.
local function locate(file, beside)
  local fh = io.open(file, "rb")
  if fh then fh:close() return file end
  local dir = beside and beside:match("^(.*)/[^/]*$")
  if dir and file:sub(1, 1) ~= "/" then
    local other = dir .. "/" .. file
    fh = io.open(other, "rb")
    if fh then fh:close() return other end
  end
  return file
end

-- Loads the module of entry (protocol or adversary): the table and any
-- warning; raises (a message) when it cannot.
local function load_module(entry, what, beside)
  local path = locate(entry.file, beside)
  local fh, err = io.open(path, "rb")
  if not fh then error(string.format("the %s %s: cannot read %s", what, entry.file, tostring(err)), 0) end
  local source = fh:read("*a")
  fh:close()
  local chunk, why = load(source, "@" .. path)
  if not chunk then error(string.format("the %s %s: %s", what, entry.file, why), 0) end
  local ok, mod = pcall(chunk)
  if not ok or type(mod) ~= "table" then
    error(string.format("the %s %s does not return a module (%s)", what, entry.file, tostring(mod)), 0)
  end
  local warning
  if entry.source and trace.fingerprint(source) ~= entry.source then
    warning = string.format("the %s %s changed since the run was recorded (source %s, now %s)", what,
      entry.file, entry.source, trace.fingerprint(source))
  end
  return mod, warning, trace.fingerprint(source)
end

--- The harness configuration of run file rf (path: where it was read,
-- for files it names beside it), and a list of warnings (a module whose
-- source changed). Raises a message when a module cannot be loaded.
function runfile.config(rf, path)
  local c, warnings = {}, {}
  for k, v in pairs(rf.config) do c[k] = v end
  c.seed, c.schedule, c.partitions = rf.seed, rf.schedule, {}
  local p = rf.protocol or { name = "reference" }
  if p.file then
    local warning
    c.protocol, warning = load_module(p, "protocol", path)
    warnings[#warnings + 1] = warning
  else
    c.protocol = p.name
  end
  if rf.adversary then
    local warning
    c.adversary, warning, c.adversary_source = load_module(rf.adversary, "adversary", path)
    warnings[#warnings + 1] = warning
  end
  return c, warnings
end

--- Whether outcome o (runfile.outcome) is what run file rf expects: the
-- same verdict and, for a failure, the same signature.
function runfile.matches(rf, o)
  local e = rf.expect
  if e == nil then return true end
  return e.verdict == o.verdict and e.signature == o.signature
end

return runfile
