#!/usr/bin/env bash
# Runs the specs (all but the #sweep ones, many lab runs each, the #cli
# ones, csm commands run as processes and the documentation's examples, and
# the #heavy ones, floods and long cluster runs: minutes each under these
# collectors, and nothing of the core's the rest does not reach; --full
# runs the #heavy ones too) with an aggressive Lua collector
# (spec/gc_stress.lua), so that a value
# the C core still uses after Lua dropped it is collected at once and the
# misuse shows: Lua 5.4 incremental with pause 0 (a full cycle
# at nearly every allocation), Lua 5.4 generational with a minor collection
# after every 1 % of growth, and LuaJIT with pause 0. Fails if any run has a
# failure, an error or no summary (a crash).
# Usage: scripts/gcstress.sh [--full] [pause0-5.4|generational-5.4|pause0-luajit ...] [-- busted options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

exclude=sweep,cli,heavy
if [ "${1:-}" = --full ]; then exclude=sweep,cli; shift; fi
modes=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do modes+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#modes[@]} -gt 0 ] || modes=(pause0-5.4 generational-5.4 pause0-luajit)

status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for mode in "${modes[@]}"; do
  gc=${mode%-*} lua=${mode##*-}
  case "$mode" in
    pause0-5.4|generational-5.4|pause0-luajit) ;;
    *) echo "gcstress: unknown mode '$mode'" >&2; exit 2 ;;
  esac
  interpreter=lua5.4
  [ "$lua" = luajit ] && interpreter=luajit
  echo "== busted under $interpreter, CSM_GC=$gc"
  start=$(date +%s)
  rc=0
  # specs tagged #sweep run many lab experiments (under pause 0 on Lua 5.4,
  # a full cycle at nearly every allocation, half an hour), #cli ones run
  # csm commands as processes the collector settings do not reach, and
  # #heavy ones take minutes here (a run's speed under pause 0 also moves
  # with the heap's size: a small heap means more cycles)
  CSM_GC=$gc $interpreter /usr/bin/busted --cpath="build/$lua/?.so" --helper=spec/gc_stress.lua \
    --exclude-tags="$exclude" -o TAP "$@" spec >"$log" 2>&1 || rc=$?
  grep -E '^not ok' -A 4 "$log" || true
  total=$(grep -cE '^(not )?ok ' "$log" || true)
  bad=$(grep -cE '^not ok ' "$log" || true)
  # TAP ends a complete run with "1..N"; a crash leaves it (and often the rest) out
  took=$(( $(date +%s) - start ))
  if ! grep -qE '^1\.\.[0-9]+' "$log"; then
    echo "   CRASHED (exit $rc) after $took s; the last specs reported:"
    tail -n 3 "$log" | sed 's/^/   /'
    status=1
  else
    [ "$rc" -eq 0 ] && [ "$bad" -eq 0 ] || status=1
    echo "   $((total - bad)) of $total passed in $took s (exit $rc)"
  fi
done
exit $status
