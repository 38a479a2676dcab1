-- The HTML viewer (csm.lab.viewer): a self-contained page, checked in a
-- real headless Chromium by tools/viewer/check.js (playwright-core, from
-- scripts/setup.sh).
local harness = require "csm.lab.harness"
local support = require "support"

local quote = support.quote

-- (node and the browser are not csm's: they run without the sanitizer
-- runtimes scripts/check.sh preloads for csm's core, under which Chromium
-- does not start)
local function check_page(page, trace_path, ...)
  return support.run("tools/viewer/check.js", quote(page) .. " " .. quote(trace_path) .. " "
    .. table.concat({ ... }, " "), "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS node")
end

describe("the viewer #sweep", function()
  -- (a browser takes a file for HTML by its name)
  local base = os.tmpname()
  local page, trace_path = base .. ".html", os.tmpname()
  teardown(function() os.remove(base); os.remove(page); os.remove(trace_path) end)

  it("is one page with nothing to fetch, and leaves the trace as it is without it", function()
    local plain = os.tmpname()
    harness.run { nodes = 4, ranks = 5, seed = 2, loss = 0.1, trace = plain }
    harness.run { nodes = 4, ranks = 5, seed = 2, loss = 0.1, trace = trace_path, html = page }
    assert.are.equal(support.slurp(plain), support.slurp(trace_path))
    os.remove(plain)
    local html = support.slurp(page)
    assert.is_truthy(html:find("^<!DOCTYPE html>"))
    assert.is_falsy(html:find("https?://"))
    assert.is_falsy(html:find("<script src", 1, true))
    assert.is_falsy(html:find("<link", 1, true))
  end)

  it("loads in Chromium without console errors, draws an arrow per delivery and shows a body on a click",
    function()
    local out, status = support.run("bin/csm", "experiment --ranks 5 --loss 0.1 --seed 2 --html "
      .. quote(page) .. " --trace " .. quote(trace_path))
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("page: " .. page, 1, true), out)
    out, status = check_page(page, trace_path)
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find("loaded without console errors", 1, true), out)
    local drawn, deliveries = out:match("drew (%d+) arrows for (%d+) deliveries")
    assert.is_truthy(drawn, out)
    assert.are.equal(deliveries, drawn)
    assert.is_truthy(out:find("selected message %d+, body {"), out)
  end)

  it("jumps to a violation, from csm replay --html too", function()
    -- a seed on which twins break broken_lock under this interpreter and build
    local broken = dofile("examples/protocols/broken_lock.lua")
    local sides = { n01 = { { "n02", "n03" }, { "n02", "n04" } } }
    local seed, rank
    for s = 1, 100 do
      local r = harness.run { protocol = broken, twins = { "n01" }, twin_sides = sides, loss = 0.3, seed = s,
                              ranks = 12, time = 120 }
      if not r.agreement then seed, rank = s, r.violations[1].rank; break end
    end
    assert.is_not_nil(seed)
    local out, status = support.run("bin/csm", "experiment --protocol examples/protocols/broken_lock.lua "
      .. "--twins n01 --twin-sides 'n01=n02,n03|n02,n04' --loss 0.3 --ranks 12 --time 120 --seed " .. seed
      .. " --html "
      .. quote(page) .. " --trace " .. quote(trace_path))
    assert.are.equal(1, status, out)
    local jumped = "jumped to the violation: agreement violated at rank " .. rank
    out, status = check_page(page, trace_path, "--violation")
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find(jumped, 1, true), out)
    -- the same run from a run file
    local runfile = require "csm.lab.runfile"
    local rf = runfile.make({ nodes = 4, ranks = 12, time = 120, seed = seed, loss = 0.3, byzantine = {},
      twins = { "n01" }, twin_sides = sides }, nil,
      { protocol = { name = "broken_lock", file = "examples/protocols/broken_lock.lua" } })
    local path = os.tmpname()
    assert(runfile.write(rf, path))
    out, status = support.run("bin/csm", "replay " .. quote(path) .. " --html " .. quote(page) .. " --trace "
      .. quote(trace_path))
    os.remove(path)
    assert.are.equal(1, status, out)
    out, status = check_page(page, trace_path, "--violation")
    assert.are.equal(0, status, out)
    assert.is_truthy(out:find(jumped, 1, true), out)
  end)

  it("refuses a page it cannot write, before the run", function()
    local out, status = support.run("bin/csm", "experiment --ranks 2 --html /nonexistent/dir/page.html")
    assert.are.equal(2, status, out)
    assert.is_truthy(out:find("--html: cannot write", 1, true), out)
  end)
end)
