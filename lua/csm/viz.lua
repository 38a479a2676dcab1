--- Pictures and summaries of a machine: Mermaid and Graphviz diagrams of
-- its transition table (with how often each edge was taken), a text table,
-- counters, and the current state.
-- @module csm.viz

local check = require "csm.check"
local is_machine = require("csm.machine").is_machine

local viz = {}

-- Raises unless sm is a machine (argument #1 of fname).
local function check_machine(fname, sm)
  if not is_machine(sm) then check.argerror(fname, 1, "sm", "csm machine expected", sm) end
end

local function rows(sm)
  return sm:transitions()
end

local function label(row)
  local text = row.event
  if row.guarded then text = text .. " [guard]" end
  if row.taken and row.taken > 0 then text = text .. " (" .. row.taken .. ")" end
  return text
end

--- A Mermaid state diagram; the current state is marked. A state whose
-- name is not a plain identifier is declared with its name quoted.
function viz.mermaid(sm)
  check_machine("csm.viz.mermaid", sm)
  local out = { "stateDiagram-v2" }
  local ids = {}
  for i, name in ipairs(sm:states()) do
    if name:match("^[%a_][%w_]*$") then
      ids[name] = name
    else
      ids[name] = "state" .. i
      out[#out + 1] = string.format('  state "%s" as %s', (name:gsub('"', "#quot;")), ids[name])
    end
  end
  out[#out + 1] = "  [*] --> " .. ids.stopped
  for _, row in ipairs(rows(sm)) do
    out[#out + 1] = string.format("  %s --> %s : %s", ids[row.from], ids[row.to], label(row))
  end
  out[#out + 1] = string.format("  classDef current fill:#f9d77e,stroke:#b8860b")
  out[#out + 1] = string.format("  class %s current", ids[sm:state()])
  return table.concat(out, "\n") .. "\n"
end

local function quote(s)
  return '"' .. tostring(s):gsub('[\\"]', "\\%0") .. '"'
end

--- A Graphviz digraph; edges taken are drawn heavier, the current state filled.
function viz.dot(sm)
  check_machine("csm.viz.dot", sm)
  local out = {
    "digraph csm {",
    "  rankdir=LR;",
    '  node [shape=box, style="rounded", fontname="Helvetica"];',
    '  edge [fontname="Helvetica", fontsize=10];',
  }
  local current = sm:state()
  for _, name in ipairs(sm:states()) do
    local attrs = name == current and ', style="rounded,filled", fillcolor="#f9d77e"' or ""
    out[#out + 1] = string.format("  %s [label=%s%s];", quote(name), quote(name), attrs)
  end
  for _, row in ipairs(rows(sm)) do
    local width = (row.taken or 0) > 0 and ", penwidth=2" or ', color="#888888"'
    out[#out + 1] = string.format("  %s -> %s [label=%s%s];", quote(row.from), quote(row.to),
      quote(label(row)), width)
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

--- A text table: from, event, to, guard, times taken.
function viz.transition_table(sm)
  check_machine("csm.viz.transition_table", sm)
  local list = rows(sm)
  local w1, w2, w3 = #"from", #"event", #"to"
  for _, row in ipairs(list) do
    w1, w2, w3 = math.max(w1, #row.from), math.max(w2, #row.event), math.max(w3, #row.to)
  end
  local fmt = "%-" .. w1 .. "s  %-" .. w2 .. "s  %-" .. w3 .. "s  %-5s  %s"
  local out = { string.format(fmt, "from", "event", "to", "guard", "taken") }
  for _, row in ipairs(list) do
    out[#out + 1] = string.format(fmt, row.from, row.event, row.to, row.guarded and "yes" or "",
      tostring(row.taken or 0))
  end
  return table.concat(out, "\n") .. "\n"
end

--- Counters: transitions, dropped events, refused and received messages,
-- what the ledger holds.
function viz.stats(sm)
  check_machine("csm.viz.stats", sm)
  local s = sm:inspect()
  local lines = {
    string.format("state            %s (%.3f s)", s.state, s.state_time),
    string.format("transitions      %d", s.transitions_made),
    string.format("events dropped   %d", s.events_dropped),
    string.format("events queued    %d", s.events_queued),
    string.format("messages         %d received, %d refused", s.messages_received, s.receives_refused),
    string.format("ledger           %d ranks, %d entries (liveness %d, proposals %d, votes %d, "
      .. "confirmations %d)",
      s.ranks_held, s.entries_held, s.sizes.liveness, s.sizes.proposals, s.sizes.votes,
      s.sizes.confirmations),
  }
  local taken = {}
  for _, row in ipairs(rows(sm)) do
    if (row.taken or 0) > 0 then
      taken[#taken + 1] = string.format("  %-14s --%s--> %s: %d", row.from, row.event, row.to, row.taken)
    end
  end
  if #taken > 0 then
    lines[#lines + 1] = "edges taken"
    for _, t in ipairs(taken) do lines[#lines + 1] = t end
  end
  return table.concat(lines, "\n") .. "\n"
end

local function show(v)
  if v == nil then return "-" end
  return tostring(v)
end

--- The current state and the round's data, one fact a line.
function viz.current_state_info(sm)
  check_machine("csm.viz.current_state_info", sm)
  local s = sm:inspect()
  local provers = {}
  for i, p in ipairs(s.next_provers or {}) do provers[i] = type(p) == "string" and p or p:identity() end
  local lines = {
    string.format("id               %s", s.id:identity()),
    string.format("state            %s for %.3f s%s", s.state, s.state_time, s.closed and " (closed)" or ""),
    string.format("active state     %s", show(s.active_state)),
    string.format("next state       %s", show(s.next_state)),
    string.format("collected        %s", show(s.collected)),
    string.format("next provers     %s", #provers > 0 and table.concat(provers, ", ") or "-"),
    string.format("chosen proposer  %s", show(s.chosen_proposer)),
    string.format("minimum provers  %d", s.minimum_provers),
  }
  if s.error then lines[#lines + 1] = "error            " .. tostring(s.error):match("[^\n]*") end
  return table.concat(lines, "\n") .. "\n"
end

return viz
