#!/usr/bin/env bash
# The reference protocol under every attack the lab ships, as sweeps: each
# adversary with loss, partitions, isolations and pauses drawn per seed
# (--swarm) and an honest node crashed and restarted with its store
# (--restarts 1), at 4 nodes (1 adversary node) and 7 (2); twins; a crash
# at each of a node's first 50 store writes; and the delay to finalize
# after a gst. Prints each sweep's summary line; exits 1 if any failed.
# Usage: scripts/sweeps.sh [short|full]
#   short (CI):  40 seeds at 4 nodes, 10 at 7, 2 gst seeds   (a few minutes)
#   full:       500 seeds at 4 nodes, 200 at 7, 20 gst seeds (about an hour on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
tier=${1:-full}
case "$tier" in
  short) n4=40; n7=10; gst=2 ;;
  full) n4=500; n7=200; gst=20 ;;
  *) echo "usage: scripts/sweeps.sh [short|full]" >&2; exit 2 ;;
esac
[ -f build/5.4/csm/core.so ] || scripts/setup.sh
. scripts/env.sh
status=0

# Runs a csm sweep; prints the command and its summary line.
sweep() {
  echo "+ csm sweep $*"
  local out
  out=$(bin/csm sweep "$@" --quiet 2>&1)
  local rc=$?
  printf '%s\n' "$out" | grep -v '^coverage\|^  never taken\|^  marks'
  [ "$rc" -eq 0 ] || status=1
}

for adversary in sync_liar replayer mutator equivocate double_vote silent; do
  file=examples/adversaries/$adversary.lua
  sweep --adversary "$file" --byzantine 1:adversary --swarm --restarts 1 --ranks 20 --seeds "1-$n4"
  sweep --adversary "$file" --byzantine 2:adversary --nodes 7 --swarm --restarts 1 --ranks 15 --seeds "1-$n7"
done
sweep --twins n01 --twin-sides 'n01=n02,n04|n03,n04' --swarm --restarts 1 --ranks 15 --seeds "1-$n4"
sweep --twins n01 --twin-sides 'n01=n02,n03|n02,n04' --swarm --restarts 1 --ranks 15 --seeds "1-$n4"
sweep --nodes 7 --twins n01 --twin-sides 'n01=n02,n03,n04,n05|n02,n03,n06,n07' --swarm --restarts 1 --ranks 15 \
  --seeds "1-$n7"
sweep --nodes 4 --byzantine 1:silent --loss 0.2 --restarts 2 --ranks 20 --seeds "1-$n4"

# A crash at each of a node's first 50 store writes (torn or not), the
# restarted node needed by the others (a silent fourth): no honest
# equivocation, nothing sent forgotten, agreement; and the variant that
# sends before it syncs is caught.
echo "+ crash at every store write"
lua5.4 - <<'LUA' || status=1
local harness = require "csm.lab.harness"
local function runs(protocol)
  local bad = 0
  for write = 2, 51 do
    for _, tear in ipairs { false, true } do
      local r = harness.run { protocol = protocol, nodes = 4, ranks = 25, seed = write, loss = 0.05,
        byzantine = { silent = 1 }, schedule = { { kind = "crash", node = "n02", restart_after = 0.05,
        tear = tear, when = { node = "n02", write = write } } } }
      if harness.verdict(r) ~= "valid" then bad = bad + 1 end
    end
  end
  return bad
end
local ref, unsynced = runs(nil), runs(dofile("examples/protocols/unsynced.lua"))
print(string.format("crash at each of writes 2-51, torn and not: reference %d of 100 invalid; "
  .. "unsynced (sends before it syncs) %d of 100 caught", ref, unsynced))
os.exit((ref == 0 and unsynced > 0) and 0 or 1)
LUA

echo "+ finalizing after a gst at 300 s"
lua5.4 tools/gst_bound.lua --seeds "1-$gst" --after 90 --adversary examples/adversaries/double_vote.lua || status=1
lua5.4 tools/gst_bound.lua --seeds "1-$gst" --after 90 --nodes 7 --adversary examples/adversaries/sync_liar.lua || status=1

exit $status
