local csm = require "csm"
local support = require "support"

-- A machine that went start -> starting -> loading and sat there.
local function machine()
  local sm, world = support.machine { states = { loading = { behavior = false } } }
  sm:start()
  world:run_for(2.5)
  return sm
end

describe("csm.viz", function()
  describe("mermaid", function()
    it("draws every transition with its count and marks the current state", function()
      local text = csm.viz.mermaid(machine())
      assert.truthy(text:find("^stateDiagram%-v2\n"))
      assert.truthy(text:find("  stopped --> starting : start (1)", 1, true))
      assert.truthy(text:find("  loading --> collecting : sync_complete\n", 1, true))
      assert.truthy(text:find("  class loading current", 1, true))
      local _, edges = text:gsub(" %-%-> ", "")
      assert.are.equal(38, edges) -- 37 transitions and the initial arrow
    end)
  end)

  describe("dot", function()
    it("is a digraph with every state, every edge and the current state filled", function()
      local text = csm.viz.dot(machine())
      assert.truthy(text:find("^digraph csm {"))
      assert.truthy(text:find('"stopped" -> "starting" [label="start (1)", penwidth=2];', 1, true))
      assert.truthy(text:find('"loading" [label="loading", style="rounded,filled"', 1, true))
      local _, edges = text:gsub(" %-> ", "")
      assert.are.equal(37, edges)
      assert.truthy(text:find("}\n$"))
    end)
  end)

  describe("transition_table", function()
    it("has a header and one line per transition with guard and taken columns", function()
      local text = csm.viz.transition_table(machine())
      local lines = {}
      for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.are.equal(38, #lines)
      assert.truthy(lines[1]:find("^from%s+event%s+to%s+guard%s+taken$"))
      assert.truthy(lines[2]:find("^stopped%s+start%s+starting%s+1$"))
    end)
  end)

  describe("stats", function()
    it("reports the counters and the edges taken", function()
      local text = csm.viz.stats(machine())
      assert.truthy(text:find("state            loading", 1, true))
      assert.truthy(text:find("transitions      2", 1, true))
      assert.truthy(text:find("--init_complete--> loading: 1", 1, true))
    end)
  end)

  describe("current_state_info", function()
    it("shows the id, state and round data", function()
      local text = csm.viz.current_state_info(machine())
      assert.truthy(text:find("id               n1", 1, true))
      assert.truthy(text:find("state            loading for", 1, true))
      assert.truthy(text:find('active state     csm.value("genesis", 0)', 1, true))
      assert.truthy(text:find("minimum provers  1", 1, true))
    end)
  end)
end)
