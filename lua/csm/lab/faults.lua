--- The lab's faults: a schedule of crashes (with optional restarts) and
-- partitions (with their heals) at virtual times, checked against the
-- nodes of a run and armed on its network. Faults act from outside the
-- nodes: a crash closes a node's machine and takes it off the network.
--
--     { kind = "crash", node = "n01", at = 5, restart_after = 10 }
--     { kind = "partition", at = 10, duration = 60, groups = { {"n01", "n02"}, {"n03", "n04"} } }
-- @module csm.lab.faults

local check = require "csm.check"

local fail = check.fail

local faults = {}

local KINDS = { crash = true, partition = true }

-- A node name as a message shows it.
local function node_text(name)
  if type(name) == "string" then return "'" .. name .. "'" end
  return check.show(name)
end

-- Checks the groups of a partition (what: "partitions[2]") over the known
-- node names.
local function check_groups(fname, what, groups, known)
  if type(groups) ~= "table" or #groups == 0 then
    fail("%s: %s: 'groups' must be a non-empty list of lists of node names", fname, what)
  end
  local seen = {}
  for g, group in ipairs(groups) do
    if type(group) ~= "table" or #group == 0 then
      fail("%s: %s: group %d must be a non-empty list of node names", fname, what, g)
    end
    for _, name in ipairs(group) do
      if not known[name] then fail("%s: %s: unknown node %s in group %d", fname, what, node_text(name), g) end
      if seen[name] then fail("%s: %s: node '%s' is in two groups", fname, what, name) end
      seen[name] = true
    end
  end
end

--- Checks a schedule (a list of faults) against names, the run's node
-- names; raises naming fname and the fault ("faults[2]", or with label
-- "partition", "partitions[2]").
-- Returns the list.
function faults.check(fname, list, names, label)
  label = label or "fault"
  if type(list) ~= "table" then
    fail("%s: the fault schedule must be a list (got %s)", fname, check.show(list))
  end
  local known = {}
  for _, name in ipairs(names) do known[name] = true end
  for i, fault in ipairs(list) do
    local what = string.format("%ss[%d]", label, i)
    if type(fault) ~= "table" or not KINDS[fault.kind] then
      fail("%s: %s must be a crash or a partition (got %s)", fname, what,
        type(fault) == "table" and check.show(fault.kind) or check.show(fault))
    end
    check.number(fname, what .. ".at", fault.at, 0)
    if fault.kind == "crash" then
      if not known[fault.node] then fail("%s: %s: unknown node %s", fname, what, node_text(fault.node)) end
      check.number(fname, what .. ".restart_after", fault.restart_after, 0, nil, true)
    else
      if fault.duration == nil then
        fail("%s: %s: no duration (the seconds the partition lasts)", fname, what)
      end
      check.number(fname, what .. ".duration", fault.duration, 0)
      check_groups(fname, what, fault.groups, known)
    end
  end
  return list
end

--- Arms a checked schedule on network (a csm.lab.net network): crashes
-- call hooks.crash(name) then take the node down; restarts bring it back
-- up then call hooks.restart(name); partitions split the network and heal
-- it; hooks.event(kind, fields), when given, is told of each ("crash" and
-- "restart" { node }, "partition" { groups }, "heal" {}). Timers at equal
-- times fire in the order they were armed: the crashes (each before its
-- restart) in list order, then the partitions (each before its heal).
function faults.arm(network, list, hooks)
  if type(network) ~= "table" or type(network.at) ~= "function" or type(network.nodes) ~= "function" then
    check.argerror("faults.arm", 1, "network", "csm.lab.net network expected", network)
  end
  faults.check("faults.arm", list, network:nodes())
  if type(hooks) ~= "table" then check.argerror("faults.arm", 3, "hooks", "table expected", hooks) end
  if hooks.event ~= nil and type(hooks.event) ~= "function" then
    fail("faults.arm: hooks.event must be a function")
  end
  local event = hooks.event or function() end
  for _, fault in ipairs(list) do
    if fault.kind == "crash" then
      if type(hooks.crash) ~= "function" then fail("faults.arm: hooks.crash must be a function") end
      if fault.restart_after and type(hooks.restart) ~= "function" then
        fail("faults.arm: hooks.restart must be a function (a crash restarts)")
      end
    end
  end
  for _, fault in ipairs(list) do
    if fault.kind == "crash" then
      local name = fault.node
      network:at(fault.at, function()
        event("crash", { node = name })
        hooks.crash(name)
        network:crash(name)
      end)
      if fault.restart_after then
        network:at(fault.at + fault.restart_after, function()
          event("restart", { node = name })
          network:restart(name)
          hooks.restart(name)
        end)
      end
    end
  end
  for _, fault in ipairs(list) do
    if fault.kind == "partition" then
      network:at(fault.at, function()
        event("partition", { groups = fault.groups })
        network:partition(fault.groups)
      end)
      network:at(fault.at + fault.duration, function()
        event("heal", {})
        network:heal()
      end)
    end
  end
end

return faults
