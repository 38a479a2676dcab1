-- A busted helper that makes the Lua collector aggressive, so that a value
-- the C core still uses after Lua dropped its last reference is collected
-- at once and the misuse shows (a crash, a wrong value, "attempt to ... a
-- nil value") instead of hiding behind a lazy collector. The mode comes from
-- the environment:
--
--   CSM_GC=pause0        incremental with pause 0: a new cycle as soon as
--                        one ends (on Lua 5.4, a full cycle at nearly every
--                        allocation); CSM_GC_STEPMUL sets the step
--                        multiplier (default 200)
--   CSM_GC=generational  Lua 5.4 only: generational, a minor collection
--                        after every 1 % of growth (lua5.4 itself runs
--                        generational with 20 %)
--
--   CSM_GC=pause0 busted --helper=spec/gc_stress.lua spec
--   scripts/gcstress.sh runs the suite in every mode.
local mode = os.getenv("CSM_GC") or "pause0"
local stepmul = tonumber(os.getenv("CSM_GC_STEPMUL") or "200")
local lua54 = _VERSION == "Lua 5.4" and rawget(_G, "jit") == nil

if mode == "pause0" then
  -- collectgarbage("incremental", 0) would leave the pause as it is: on 5.4
  -- a 0 there means "unchanged", so the pause is set on its own
  if lua54 then collectgarbage("incremental") end
  collectgarbage("setpause", 0)
  collectgarbage("setstepmul", stepmul)
elseif mode == "generational" then
  if not lua54 then error("gc_stress: CSM_GC=generational needs Lua 5.4", 0) end
  collectgarbage("generational", 1, 100)
else
  error("gc_stress: unknown CSM_GC '" .. mode .. "' (pause0 or generational)", 0)
end
collectgarbage("restart")
