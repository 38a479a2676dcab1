--- The `csm` command: one parser with a subcommand per module of
-- csm.cmd (experiment, soak, diagram, example), each with --help. A
-- subcommand module has `summary`, `add(command)` (its options) and
-- `run(args)`, which returns the exit status: 0 all invariants held, 1 an
-- invariant was violated, 2 a usage error.
--
-- The converters here refuse what a subcommand cannot use, naming the
-- option: `--seed 1.5` is "--seed: an integer expected (got '1.5')".
-- @module csm.cmd

local has_argparse, argparse = pcall(require, "argparse")

local cmd = {}

--- The subcommands, in the order --help lists them.
cmd.names = { "experiment", "sweep", "shrink", "replay", "diff", "soak", "diagram", "example", "keygen",
  "node", "local" }

--- Exit status: every invariant held.
cmd.OK = 0
--- Exit status: an invariant was violated.
cmd.VIOLATED = 1
--- Exit status: a usage error.
cmd.USAGE = 2
--- Exit status: the run ended before a verdict (liveness not yet due, or a
-- node still advancing short of the target). Not 2, which every command
-- keeps for usage errors, so a script can tell the two apart.
cmd.UNKNOWN = 3

-- A bound as a message shows it.
local function bound(x)
  if x == 2 ^ 53 then return "2^53" end
  return string.format("%.14g", x)
end

-- The number text reads as (finite), checked against [min, max]; or nil and
-- why, naming the option. what is "an integer" or "a number".
local function convert(option, text, what, min, max)
  local n = tonumber(text)
  if n == nil or n ~= n or n == math.huge or n == -math.huge or (what == "an integer" and n % 1 ~= 0) then
    return nil, string.format("%s: %s expected (got '%s')", option, what, text)
  end
  -- integers are exact up to 2^53, on every interpreter
  if what == "an integer" and (n > 2 ^ 53 or n < -2 ^ 53) then
    return nil, string.format("%s: %s out of range (integers up to 2^53)", option, text)
  end
  if (min and n < min) or (max and n > max) then
    return nil, string.format("%s: %s out of range (%s)", option, text,
      min and max and string.format("%s to %s", bound(min), bound(max)) or min and (">= " .. bound(min))
      or ("<= " .. bound(max)))
  end
  return n
end

--- A converter for an integer option within [min, max] (either may be nil).
function cmd.integer(option, min, max)
  return function(text)
    local n, why = convert(option, text, "an integer", min, max)
    if n == nil then return nil, why end
    return math.tointeger and math.tointeger(n) or n
  end
end

--- A converter for a number option within [min, max] (either may be nil).
function cmd.number(option, min, max)
  return function(text)
    return convert(option, text, "a number", min, max)
  end
end

--- Adds --seed (of the sim world: an integer, default 1) to command c.
function cmd.seed_option(c)
  c:option("--seed", "Seed of the sim world (0 to 2^53).", "1"):convert(cmd.integer("--seed", 0, 2 ^ 53))
end

--- A converter for a probability option: a number in [0, 1].
function cmd.probability(option)
  return cmd.number(option, 0, 1)
end

--- A usage error raised by a subcommand's run: main prints it and exits 2.
local USAGE = {}

function cmd.usage_error(fmt, ...)
  error(setmetatable({ message = string.format(fmt, ...) }, USAGE), 0)
end

local function modules()
  local list = {}
  for i, name in ipairs(cmd.names) do list[i] = { name = name, module = require("csm.cmd." .. name) } end
  return list
end

--- The parser of the csm command.
function cmd.parser()
  local parser = argparse("csm", "csm: a consensus engine for Lua, and a lab to attack protocols in.")
    :epilog("Run 'csm <command> --help' for a command's options. Exit status: 0 when every "
      .. "invariant held, 1 when one was violated, 2 on a usage error, 3 when a run ended before a verdict.")
  parser:command_target("command")
  parser:help_max_width(100)
  for _, m in ipairs(modules()) do
    local command = parser:command(m.name):summary(m.module.summary)
    m.module.add(command)
  end
  return parser
end

local function fail_usage(prefix, message)
  io.stderr:write(prefix, ": ", message, "\n")
  io.stderr:write("Try '", prefix, " --help'.\n")
  return cmd.USAGE
end

-- argv with each negative number that follows an option joined to it
-- ("--seed", "-1" -> "--seed=-1"): the parser would read it as an option.
local function join_negatives(argv)
  local list = {}
  for i = 1, #argv do
    local a, prev = argv[i], list[#list]
    if a:match("^%-%.?%d") and prev and prev:match("^%-%-[%w-]+$") then
      list[#list] = prev .. "=" .. a
    else
      list[#list + 1] = a
    end
  end
  return list
end

--- Runs program with args (a list; no shell) with luv's spawn and waits for
-- it. Returns its exit status, or nil and why it could not run.
function cmd.spawn(program, args)
  local ok, uv = pcall(require, "luv")
  if not ok then return nil, "luv is not installed (apt-get install lua-luv)" end
  local status
  local handle, err = uv.spawn(program, { args = args }, function(code) status = code end)
  if not handle then return nil, err end
  while status == nil do uv.run("once") end
  handle:close()
  uv.run("nowait")
  return status
end

--- The command line that runs this csm again: the interpreter with its
-- options (arg's negative indices), then the script.
function cmd.self_command()
  local argv = cmd.argv or {}
  local low = 0
  while argv[low - 1] ~= nil do low = low - 1 end
  local out = {}
  for i = low, 0 do out[#out + 1] = argv[i] end
  return out
end

--- Runs the command with argv (a list of strings); returns the exit status.
function cmd.main(argv)
  cmd.argv = argv
  if not has_argparse then
    io.stderr:write("csm: the argparse module is missing (apt-get install lua-argparse, or ",
      "luarocks install argparse)\n")
    return cmd.USAGE
  end
  local list = join_negatives(argv)
  local parser = cmd.parser()
  local known = {}
  for _, name in ipairs(cmd.names) do known[name] = true end
  local prefix = known[list[1]] and ("csm " .. list[1]) or "csm"
  local ok, args = parser:pparse(list)
  if not ok then return fail_usage(prefix, args) end
  local module = require("csm.cmd." .. args.command)
  local done, status = xpcall(module.run, function(err)
    if getmetatable(err) == USAGE then return err end
    return debug.traceback(tostring(err), 2)
  end, args)
  if done then return status end
  if getmetatable(status) == USAGE then return fail_usage(prefix, status.message) end
  -- a bug of csm's, not the user's: its traceback, to report
  io.stderr:write(prefix, ": internal error: ", tostring(status), "\n")
  return cmd.USAGE
end

return cmd
