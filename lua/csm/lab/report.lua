--- The lab's report of a run: ranks finalized per node, round latency
-- (the virtual time between a node's consecutive finalizations: mean, p50,
-- p99), messages, wall time and rounds per wall second, and the
-- invariants; and its text form.
-- @module csm.lab.report

local check = require "csm.check"
local checker = require "csm.lab.checker"

local report = {}

--- The value at fraction p of a sorted list (0 when it is empty).
function report.percentile(sorted, p)
  if #sorted == 0 then return 0 end
  local i = math.max(1, math.min(#sorted, math.ceil(p * #sorted)))
  return sorted[i]
end

--- Latency figures of a list of durations: { mean, p50, p99, samples }.
function report.latency(durations)
  local sorted = {}
  for i, d in ipairs(durations) do sorted[i] = d end
  table.sort(sorted)
  local sum = 0
  for _, d in ipairs(sorted) do sum = sum + d end
  return {
    mean = #sorted > 0 and sum / #sorted or 0,
    p50 = report.percentile(sorted, 0.5), p99 = report.percentile(sorted, 0.99), samples = #sorted,
  }
end

--- Fills in r (config, nodes, agreement tracker already set) from the
-- nodes at the end of a run, one record each ({ name, part, honest,
-- height, finalized_at = { [rank] = virtual time }, sm, refused }):
-- per-node entries, round latency, the rounds every honest node finished,
-- what is stuck, and the invariants.
function report.finish(r, nodes, agreement)
  local c = r.config
  local durations = {}
  local least = math.huge
  local refusals = {}
  for _, node in ipairs(nodes) do
    r.nodes[#r.nodes + 1] = { name = node.name, part = node.part, finalized = node.height,
      state = node.sm:state(), refused = node.refused or 0 }
    if node.honest and type(node.refusals) == "table" then
      for reason, count in pairs(node.refusals) do refusals[reason] = (refusals[reason] or 0) + count end
    end
    if node.honest then
      least = math.min(least, node.height)
      local prev = 0
      for rank = 1, node.height do
        local at = node.finalized_at[rank]
        if at == nil then break end
        if rank > 1 then durations[#durations + 1] = at - prev end
        prev = at
      end
      if node.height < c.ranks then
        local last = 0
        for _, at in pairs(node.finalized_at) do last = math.max(last, at) end
        r.stuck[#r.stuck + 1] = { node = node.name, state = node.sm:state(), finalized = node.height,
                                  last = last }
      end
    end
  end
  r.latency = report.latency(durations)
  r.refusals = refusals
  -- a node short of the target that finalized lately is slow, not stuck:
  -- lately is within ten rounds (at the run's p99) or a tenth of the run
  local recent = math.max(10 * r.latency.p99, (r.virtual or 0) / 10)
  for _, s in ipairs(r.stuck) do
    s.advancing = s.finalized > 0 and (r.virtual or 0) - s.last <= recent
  end
  r.rounds = least == math.huge and 0 or least
  r.rounds_per_second = r.wall > 0 and r.rounds / r.wall or 0
  r.violations = agreement.violations
  -- (r.liveness, after a gst, is the harness's)
  r.agreement = agreement:ok()
  r.progress = #r.stuck == 0
  r.finalized_at = {}
  for _, node in ipairs(nodes) do r.finalized_at[node.name] = node.finalized_at end
  return r
end

--- Raises unless r is a report of a run (argument n of fname).
function report.check(fname, r, n)
  if type(r) ~= "table" or type(r.config) ~= "table" or type(r.nodes) ~= "table"
    or type(r.latency) ~= "table" or type(r.messages) ~= "table" or type(r.names) ~= "table"
    or type(r.lanes) ~= "table" or type(r.finalized_at) ~= "table" or type(r.virtual) ~= "number" then
    check.argerror(fname, n or 1, "report", "report of harness.run expected", r)
  end
end

--- The report as text.
function report.format(r)
  report.check("report.format", r)
  local c = r.config
  local out = {}
  local function line(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local byz = {}
  for _, kind in ipairs(r.byzantine_kinds) do
    if (c.byzantine[kind] or 0) > 0 then byz[#byz + 1] = c.byzantine[kind] .. " " .. kind end
  end
  local protocol = c.protocol == nil and "reference" or c.protocol.name or "(unnamed protocol)"
  line("csm experiment: %d %s nodes%s, seed %d, target %d ranks or %g virtual s", c.nodes, protocol,
    #byz > 0 and (" (" .. table.concat(byz, ", ") .. ")") or "", c.seed, c.ranks, c.time)
  if r.byzantine and r.f and r.byzantine > r.f then
    line("warning: %d byzantine nodes, more than f = %d of %d nodes tolerate: the protocol promises nothing",
      r.byzantine, r.f, c.nodes)
  end
  line("network: latency %gs jitter %gs loss %g duplicate %g reorder %g%s", c.latency, c.jitter,
    c.loss, c.duplicate, c.reorder, #c.partitions > 0 and (", " .. #c.partitions .. " partition(s)") or "")
  line("")
  line("%-6s %-12s %10s  %-15s %8s", "node", "part", "finalized", "state", "refused")
  for _, n in ipairs(r.nodes) do
    line("%-6s %-12s %10d  %-15s %8d", n.name, n.part, n.finalized, n.state, n.refused)
  end
  line("")
  line("round latency (virtual): mean %.4fs  p50 %.4fs  p99 %.4fs  (%d rounds)", r.latency.mean,
    r.latency.p50, r.latency.p99, r.latency.samples)
  line("messages: %d sent, %d delivered, %d dropped, %d duplicated", r.messages.sent,
    r.messages.delivered, r.messages.dropped, r.messages.duplicated)
  local reasons = {}
  for reason, count in pairs(r.refusals or {}) do reasons[#reasons + 1] = { reason, count } end
  table.sort(reasons, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
  if #reasons > 0 then
    local parts = {}
    for i = 1, math.min(#reasons, 6) do parts[i] = string.format("%s %d", reasons[i][1], reasons[i][2]) end
    line("refused by honest nodes: %s%s", table.concat(parts, ", "), #reasons > 6 and ", ..." or "")
  end
  line("time: %.3f virtual s, %.3f wall s, %.1f rounds per wall second", r.virtual, r.wall,
    r.rounds_per_second)
  if r.agreement then
    line("agreement: ok (no two honest nodes finalized different identities at one rank)")
  else
    for _, v in ipairs(r.violations) do
      line("agreement VIOLATED at %s", checker.describe(v))
      local a = v.accountability
      if a then
        local function voters(list)
          return #list > 0 and table.concat(list, ", ") or "nobody (it adopted the state, by sync)"
        end
        line("  quorums: %s knew of votes from %s; %s from %s; in both: %s", v.nodes[1], voters(a.quorums[1]),
          v.nodes[2], voters(a.quorums[2]), #a.both > 0 and table.concat(a.both, ", ") or "none")
      end
    end
  end
  local findings = r.findings or {}
  local by = {}
  for _, f in ipairs(findings) do by[f.invariant] = (by[f.invariant] or 0) + 1 end
  for _, invariant in ipairs { "validity", "equivocation", "durability", "always" } do
    if by[invariant] then
      local shown = 0
      for _, f in ipairs(findings) do
        if f.invariant == invariant and shown < 5 then
          shown = shown + 1
          line("%s VIOLATED: %s", invariant, f.text)
        end
      end
      if by[invariant] > shown then line("%s: %d more", invariant, by[invariant] - shown) end
    elseif r.findings then
      line("%s: ok", invariant)
    end
  end
  local evidence = r.evidence
  if evidence and evidence.count then
    local shown = {}
    for i = 1, math.min(3, #evidence) do
      local e = evidence[i]
      local ids = type(e.ids) == "table" and table.concat(e.ids, " and ") or "?"
      shown[i] = string.format("%s signed two %ss at rank %s attempt %s (%s; %s found it)", tostring(e.voter),
        tostring(e.kind), tostring(e.rank), tostring(e.attempt), ids, tostring(e.by))
    end
    line("evidence: %s%s", table.concat(shown, "; "),
      evidence.count > #shown and string.format("; %d in all", evidence.count) or "")
  end
  local live = r.liveness
  if live then
    if live.verdict == "ok" then
      line("liveness after the gst: ok (every honest node finalized within %g s of the gst at %g s)",
        live.bound, live.gst)
    elseif live.verdict == "violated" then
      line("liveness after the gst VIOLATED: %s finalized nothing within %g s of the gst at %g s",
        table.concat(live.late, ", "), live.bound, live.gst)
    else
      line("liveness after the gst: unknown (the run ended %g s after the gst, before the bound of %g s)",
        r.virtual - live.gst, live.bound)
    end
  end
  if r.never_seen and #r.never_seen > 0 then
    line("sometimes, never seen: %s", table.concat(r.never_seen, ", "))
  end
  if r.progress then
    line("progress: ok (every honest node finalized %d ranks)", c.ranks)
  else
    for _, s in ipairs(r.stuck) do
      if s.advancing then
        line("progress: %s finalized %d of %d ranks, slow but advancing (last at %.3f s), in %s", s.node,
          s.finalized, c.ranks, s.last, s.state)
      else
        line("progress: %s finalized %d of %d ranks, stuck in %s since %.3f s", s.node, s.finalized, c.ranks,
          s.state, s.last)
      end
    end
  end
  if r.verdict then line("verdict: %s", r.verdict) end
  return table.concat(out, "\n") .. "\n"
end

return report
