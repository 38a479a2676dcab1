--- A parameter sweep's table and plots (`csm sweep --param`): one CSV row
-- per point and seed, in point and seed order (the same bytes whatever the
-- number of workers), and one SVG per metric with a panel per parameter:
-- the metric's median over the runs at each of the parameter's values,
-- and its spread (the 10th to the 90th percentile). Seeds are paired: every
-- point runs the same seeds.
-- @module csm.lab.plots

local plots = {}

--- The metrics of a run, as the CSV names them.
plots.metrics = { "p50", "p99", "ranks_per_s", "messages_per_rank" }

--- The metrics of report r, by the names of plots.metrics.
function plots.metrics_of(r)
  return { p50 = r.latency.p50, p99 = r.latency.p99,
           ranks_per_s = r.virtual > 0 and r.rounds / r.virtual or 0,
           messages_per_rank = r.messages.sent / math.max(r.rounds, 1) }
end

local LABELS = { p50 = "round latency p50 (virtual s)", p99 = "round latency p99 (virtual s)",
                 ranks_per_s = "ranks per virtual second", messages_per_rank = "messages per rank" }

local function num(x)
  if x == nil then return "" end
  if x % 1 == 0 and math.abs(x) < 2 ^ 53 then return string.format("%d", x) end
  return string.format("%.6g", x)
end

local function sorted_rows(rows)
  local out = {}
  for i, r in ipairs(rows) do out[i] = r end
  table.sort(out, function(a, b)
    if a.point ~= b.point then return a.point < b.point end
    return a.seed < b.seed
  end)
  return out
end

--- Writes the CSV of rows (the workers' results, each with point and seed)
-- over points (each a table of names' values) to path: true, or nil and a
-- message.
function plots.csv(path, names, points, rows)
  local lines = {}
  local header = {}
  for i, n in ipairs(names) do header[i] = n end
  for _, k in ipairs { "seed", "verdict", "signature" } do header[#header + 1] = k end
  for _, m in ipairs(plots.metrics) do header[#header + 1] = m end
  lines[1] = table.concat(header, ",")
  for _, r in ipairs(sorted_rows(rows)) do
    local p, cells = points[r.point], {}
    for i, n in ipairs(names) do cells[i] = num(p[n]) end
    cells[#cells + 1] = num(r.seed)
    cells[#cells + 1] = r.verdict or ""
    cells[#cells + 1] = (r.signature or ""):gsub("[,\n]", ";")
    for _, m in ipairs(plots.metrics) do cells[#cells + 1] = num(r[m]) end
    lines[#lines + 1] = table.concat(cells, ",")
  end
  local fh, err = io.open(path, "wb")
  if not fh then return nil, "cannot write " .. tostring(err) end
  fh:write(table.concat(lines, "\n"), "\n")
  fh:close()
  return true
end

local function quantile(sorted, q)
  if #sorted == 0 then return nil end
  local i = 1 + (#sorted - 1) * q
  local lo = math.floor(i)
  local hi = math.min(lo + 1, #sorted)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (i - lo)
end

local function esc(s) return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")) end

--- Writes the SVG of metric over each parameter to path: true, or nil
-- and a message.
function plots.svg(path, metric, names, points, rows)
  local W, H, PAD = 360, 240, 48
  local out = { string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
    .. 'font-family="sans-serif" font-size="11">', W * #names, H + 20) }
  for panel, name in ipairs(names) do
    -- the parameter's values, in order, and the metric's runs at each
    local values, at = {}, {}
    for _, p in ipairs(points) do
      local v = p[name]
      if at[v] == nil then at[v] = {}; values[#values + 1] = v end
    end
    table.sort(values)
    for _, r in ipairs(rows) do
      local v, m = points[r.point][name], r[metric]
      if type(m) == "number" and m == m and m ~= math.huge then at[v][#at[v] + 1] = m end
    end
    local stats, top = {}, 0
    for i, v in ipairs(values) do
      table.sort(at[v])
      stats[i] = { quantile(at[v], 0.1), quantile(at[v], 0.5), quantile(at[v], 0.9) }
      if stats[i][3] and stats[i][3] > top then top = stats[i][3] end
    end
    if top == 0 then top = 1 end
    local x0 = (panel - 1) * W
    local function px(i) return x0 + PAD + (i - 0.5) * (W - PAD - 12) / #values end
    local function py(y) return 10 + (H - PAD) * (1 - y / top) end
    out[#out + 1] = string.format('<text x="%d" y="%d" text-anchor="middle">%s against %s</text>', x0 + W / 2,
      H + 14, esc(LABELS[metric] or metric), esc(name))
    out[#out + 1] = string.format('<line x1="%d" y1="%g" x2="%d" y2="%g" stroke="#888"/>', x0 + PAD, py(0),
      x0 + W - 12, py(0))
    out[#out + 1] = string.format('<line x1="%d" y1="%g" x2="%d" y2="%g" stroke="#888"/>', x0 + PAD, py(0),
      x0 + PAD, py(top))
    out[#out + 1] = string.format('<text x="%d" y="%g" text-anchor="end">%s</text>', x0 + PAD - 4,
      py(top) + 4, num(top))
    out[#out + 1] = string.format('<text x="%d" y="%g" text-anchor="end">0</text>', x0 + PAD - 4, py(0))
    local line = {}
    for i, v in ipairs(values) do
      local s = stats[i]
      out[#out + 1] = string.format('<text x="%g" y="%g" text-anchor="middle">%s</text>', px(i), py(0) + 14,
        num(v))
      if s[2] then
        out[#out + 1] = string.format('<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#9ecae1" '
          .. 'stroke-width="6"><title>%s = %s: 10th %s, 90th %s</title></line>', px(i), py(s[1]), px(i),
          py(s[3]), esc(name), num(v), num(s[1]), num(s[3]))
        out[#out + 1] = string.format('<circle cx="%g" cy="%g" r="3.5" fill="#08519c">'
          .. '<title>median %s</title></circle>', px(i), py(s[2]), num(s[2]))
        line[#line + 1] = string.format("%g,%g", px(i), py(s[2]))
      end
    end
    if #line > 1 then
      out[#out + 1] = string.format('<polyline points="%s" fill="none" stroke="#08519c"/>',
        table.concat(line, " "))
    end
  end
  out[#out + 1] = "</svg>"
  local fh, err = io.open(path, "wb")
  if not fh then return nil, "cannot write " .. tostring(err) end
  fh:write(table.concat(out, "\n"), "\n")
  fh:close()
  return true
end

return plots
