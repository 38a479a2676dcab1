#!/usr/bin/env bash
# Sets up, builds, and runs every spec under Lua 5.4 and under LuaJIT.
# Usage: scripts/test.sh [busted options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
status=0 passed=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for lua in 5.4 luajit; do
  interpreter=lua5.4
  [ "$lua" = luajit ] && interpreter=luajit
  echo "== busted under $interpreter"
  $interpreter /usr/bin/busted --cpath="build/$lua/?.so" "$@" spec | tee "$log" || status=1
  # "N successes / N failures / N errors / N pending : T seconds"
  summary=$(grep -E '^[0-9]+ success' "$log" | tail -1)
  if [ -z "$summary" ]; then status=1; continue; fi
  read -r ok _ _ bad _ _ errs _ <<<"$summary"
  passed=$((passed + ok)) failed=$((failed + bad + errs))
done
echo "== luacheck"
luacheck --no-color -q lua spec tools examples bin/csm || status=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] || status=1
exit $status
