--- The lab's timeline: one lane per node with its states over virtual time,
-- as an SVG a person can look at (states coloured, finalizations marked,
-- byzantine nodes labelled).
-- @module csm.lab.timeline

local check = require "csm.check"
local report = require "csm.lab.report"

local timeline = {}

local COLORS = {
  stopped = "#bbbbbb", starting = "#d9d9d9", loading = "#8c6bb1", collecting = "#9ecae1",
  liveness_check = "#6baed6", proving = "#fdae6b", publishing = "#fd8d3c", voting = "#74c476",
  finalizing = "#31a354", verifying = "#006d2c", stopping = "#969696", crashed = "#de2d26",
}
local ORDER = { "loading", "collecting", "liveness_check", "proving", "publishing", "voting",
  "finalizing", "verifying", "stopped", "crashed" }

-- The faults that cut links, shaded in the picture.
local CUTS = { partition = true, one_way = true, isolate = true, pause = true }

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end

--- The SVG of a report (csm.lab.report): its names, lanes ({ {t, state},
-- ... } per node), finalized_at, nodes' parts, virtual time and config.
function timeline.svg(r)
  report.check("timeline.svg", r)
  local lane_h, left, top, width = 22, 150, 40, 1100
  local names = r.names
  local height = top + #names * lane_h + 70
  local t_end = r.virtual > 0 and r.virtual or 1
  local function x(t) return left + (t / t_end) * width end
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
    .. 'font-family="Helvetica, Arial, sans-serif" font-size="12">', left + width + 20, height))
  add(string.format('<rect width="100%%" height="100%%" fill="white"/>'))
  local c = r.config
  add(string.format('<text x="%d" y="20" font-size="14">csm: %d nodes, seed %d, %d ranks '
    .. 'finalized by every honest node in %.2f virtual s — agreement %s</text>', left, c.nodes,
    c.seed, r.rounds, r.virtual, r.agreement and "ok" or "VIOLATED"))
  local parts = {}
  for _, n in ipairs(r.nodes) do parts[n.name] = n.part end
  -- faults that cut links, shaded behind every lane: from their start to
  -- their end (a heal ends them all)
  local lanes_h = #names * lane_h
  local open = {}
  local function shade(t0, t1, kind)
    local x0, x1 = x(t0), x(t1)
    add(string.format('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#fcbba1" opacity="0.5">'
      .. '<title>%s %.4f–%.4f s</title></rect>', x0, top - 2, math.max(x1 - x0, 1), lanes_h + 2, esc(kind),
      t0, t1))
    add(string.format('<text x="%.1f" y="%d" font-size="10" fill="#a50f15">%s</text>', x0 + 2, top - 4,
      esc(kind)))
  end
  local function close(k, t)
    shade(open[k][1], t, open[k][2])
    table.remove(open, k)
  end
  for _, f in ipairs(r.faults or {}) do
    local t, kind, fields = f[1], f[2], f[3] or {}
    local ends = kind:match("^(.*)_end$") or (kind == "heal" and fields.groups and "partition")
    if CUTS[kind] then
      open[#open + 1] = { t, kind }
    elseif ends then
      for k = 1, #open do
        if open[k][2] == ends then close(k, t) break end
      end
    elseif kind == "heal" or kind == "gst" then
      while #open > 0 do close(1, t) end
    end
  end
  for _, o in ipairs(open) do shade(o[1], r.virtual, o[2]) end
  for i, name in ipairs(names) do
    local y = top + (i - 1) * lane_h
    local part = parts[name]
    local labeltext = part == "honest" and name or (name .. " (" .. part .. ")")
    add(string.format('<text x="%d" y="%d" text-anchor="end"%s>%s</text>', left - 8, y + 15,
      part == "honest" and "" or ' fill="#b30000" font-weight="bold"', esc(labeltext)))
    local lane = r.lanes[name] or {}
    -- merge runs narrower than half a pixel into the state that follows
    for k, seg in ipairs(lane) do
      local t0 = seg[1]
      local t1 = lane[k + 1] and lane[k + 1][1] or r.virtual
      local x0, x1 = x(t0), x(t1)
      if x1 - x0 >= 0.5 then
        add(string.format('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s %s '
          .. '%.4f–%.4f s</title></rect>', x0, y + 2, x1 - x0, lane_h - 6,
          COLORS[seg[2]] or "#cccccc", esc(name), esc(seg[2]), t0, t1))
      end
    end
    -- finalizations: a short tick above the lane, one per pixel at most,
    -- so that at high rates they do not hide the states
    local fin = r.finalized_at[name] or {}
    local last_x = -1
    for _, t in ipairs(fin) do
      local xt = x(t)
      if xt - last_x >= 1 then
        last_x = xt
        add(string.format('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black" stroke-width="1"/>',
          xt, xt, y - 1, y + 3))
      end
    end
    -- attempts past the first: a purple tick under the lane
    last_x = -1
    for _, a in ipairs((r.attempts or {})[name] or {}) do
      local xt = x(a[1])
      if a[2] > 0 and xt - last_x >= 1 then
        last_x = xt
        add(string.format('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#6a51a3" stroke-width="1">'
          .. '<title>attempt %d</title></line>', xt, xt, y + lane_h - 6, y + lane_h - 1, a[2]))
      end
    end
  end
  -- axis
  local axis_y = top + #names * lane_h + 8
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>', left, left + width,
    axis_y, axis_y))
  for k = 0, 10 do
    local t = t_end * k / 10
    add(string.format('<text x="%.1f" y="%d" text-anchor="middle" font-size="10">%.2fs</text>',
      x(t), axis_y + 14, t))
  end
  -- legend
  local lx, ly = left, axis_y + 34
  for _, state in ipairs(ORDER) do
    add(string.format('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>', lx, ly - 10,
      COLORS[state]))
    add(string.format('<text x="%d" y="%d">%s</text>', lx + 16, ly, state))
    lx = lx + 24 + #state * 7
  end
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>', lx, lx, ly - 11, ly - 7))
  add(string.format('<text x="%d" y="%d">finalization</text>', lx + 6, ly))
  lx = lx + 90
  add(string.format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#6a51a3"/>', lx, lx, ly - 4, ly + 1))
  add(string.format('<text x="%d" y="%d">new attempt</text>', lx + 6, ly))
  lx = lx + 90
  add(string.format('<rect x="%d" y="%d" width="12" height="12" fill="#fcbba1"/>', lx, ly - 10))
  add(string.format('<text x="%d" y="%d">cut links</text>', lx + 16, ly))
  add("</svg>")
  return table.concat(out, "\n") .. "\n"
end

--- Writes the SVG of report r to path. Returns true, or nil, message, "io".
function timeline.write(r, path)
  report.check("timeline.write", r)
  if type(path) ~= "string" then check.argerror("timeline.write", 2, "path", "string expected", path) end
  local text = timeline.svg(r)
  local fh, err = io.open(path, "w")
  if not fh then return nil, "cannot write the timeline: " .. tostring(err), "io" end
  local ok
  ok, err = fh:write(text)
  if ok then ok, err = fh:flush() end
  fh:close()
  if not ok then return nil, "cannot write the timeline: " .. tostring(err), "io" end
  return true
end

return timeline
