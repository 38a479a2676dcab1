--- Argument checks shared by every csm module (engine, lab, protocols and
-- commands), so that all of them follow one rule: a programmer error raises
-- at once with a message that names the function and the argument, and
-- carries no file:line.
--
--     check.argerror("network:crash", 1, "name", "node name expected", x)
--     --> network:crash: bad argument #1 'name' (node name expected, got nil)
--
-- Positional arguments count as Lua counts them: a method's first argument
-- after self is #1.
-- @module csm.check

local check = {}

--- Raises the formatted message as it is (level 0: no position).
function check.fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

local fail = check.fail

--- How a bad value is shown: a number or boolean by value, a string quoted,
-- anything else by its type.
function check.show(v)
  local t = type(v)
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "string" then
    if #v > 40 then v = v:sub(1, 40) .. "..." end
    return string.format("string %q", v)
  end
  return t
end

local show = check.show

--- Raises "fname: bad argument #n 'name' (expected, got <type>)".
function check.argerror(fname, n, name, expected, got)
  fail("%s: bad argument #%d '%s' (%s, got %s)", fname, n, name, expected, type(got))
end

--- Raises "fname: bad self (expected, got <type>)".
function check.selferror(fname, expected, got)
  fail("%s: bad self (%s, got %s)", fname, expected, type(got))
end

--- Checks that opts is a table whose keys are all in known (a set); raises
-- "fname: unknown option 'k'" naming the first unknown key in sorted order.
-- With optional, nil is accepted and {} returned.
function check.options(fname, opts, known, optional)
  if opts == nil and optional then return {} end
  if type(opts) ~= "table" then check.argerror(fname, 1, "options", "table expected", opts) end
  local unknown
  for k in pairs(opts) do
    if not known[k] and (unknown == nil or tostring(k) < tostring(unknown)) then unknown = k end
  end
  if unknown ~= nil then fail("%s: unknown option '%s'", fname, tostring(unknown)) end
  return opts
end

local function is_integer(v)
  return type(v) == "number" and v % 1 == 0 and v > -math.huge and v < math.huge
end

check.is_integer = is_integer

-- A bound as a message shows it: 2^53 for the largest exact integer.
local function bound(x)
  if x == 2 ^ 53 then return "2^53" end
  if x == -2 ^ 53 then return "-2^53" end
  return string.format("%.14g", x)
end

local function range(min, max)
  if min and max then return string.format(" in [%s, %s]", bound(min), bound(max)) end
  if min then return " >= " .. bound(min) end
  if max then return " <= " .. bound(max) end
  return ""
end

--- Whether x is a csm loop (a sim world, or with real = true the real
-- loop too).
function check.is_world(x, real)
  if type(x) ~= "userdata" then return false end
  local ok, sim = pcall(function() return x:is_sim() end)
  return ok and (sim == true or (real == true and sim == false))
end

--- Checks an integer option within [min, max] (either may be nil); nil is
-- accepted when optional is true. Returns v.
function check.integer(fname, name, v, min, max, optional)
  if v == nil and optional then return nil end
  if not is_integer(v) or (min and v < min) or (max and v > max) then
    fail("%s: option '%s' must be an integer%s (got %s)", fname, name, range(min, max), show(v))
  end
  return v
end

--- Checks a number option within [min, max] (either may be nil; NaN is
-- refused); nil is accepted when optional is true. Returns v.
function check.number(fname, name, v, min, max, optional)
  if v == nil and optional then return nil end
  if type(v) ~= "number" or v ~= v or (min and v < min) or (max and v > max) then
    fail("%s: option '%s' must be a number%s (got %s)", fname, name, range(min, max), show(v))
  end
  return v
end

--- Checks an option of a Lua type ("table", "function", "string",
-- "boolean"); nil is accepted when optional is true. Returns v.
function check.type(fname, name, v, want, optional)
  if v == nil and optional then return nil end
  if type(v) ~= want then
    fail("%s: option '%s' must be a %s (got %s)", fname, name, want, show(v))
  end
  return v
end

--- Checks the options every protocol node takes (name, names, world,
-- network: see docs/lab.md, Protocols); returns the index of name in names.
function check.node_options(fname, o)
  check.type(fname, "name", o.name, "string")
  check.type(fname, "names", o.names, "table")
  local index, seen = nil, {}
  for i, name in ipairs(o.names) do
    if type(name) ~= "string" or name == "" then
      fail("%s: option 'names' must list non-empty strings (item %d is %s)", fname, i, show(name))
    end
    if seen[name] then fail("%s: option 'names' lists '%s' twice", fname, name) end
    seen[name] = true
    if name == o.name then index = i end
  end
  if index == nil then fail("%s: option 'name' ('%s') is not in 'names'", fname, o.name) end
  if not check.is_world(o.world, true) then
    fail("%s: option 'world' must be a csm loop (got %s)", fname, show(o.world))
  end
  check.network(fname, o.network)
  return index
end

--- Checks a network option: a table with join (the lab's network, or a
-- transport with its interface); returns it.
function check.network(fname, network)
  if type(network) ~= "table" or type(network.join) ~= "function" then
    fail("%s: option 'network' must be a network (with join; got %s)", fname, show(network))
  end
  return network
end

--- Checks that v is one of the strings of list (an array); returns v.
function check.one_of(fname, name, v, list, optional)
  if v == nil and optional then return nil end
  for _, item in ipairs(list) do
    if v == item then return v end
  end
  fail("%s: option '%s' must be one of %s (got %s)", fname, name, table.concat(list, ", "), show(v))
end

return check
