#!/usr/bin/env bash
# Runs the spec suite against csm.core built with AddressSanitizer and
# UndefinedBehaviorSanitizer (build/asan-5.4 and build/asan-luajit, under
# Lua 5.4 and LuaJIT), then under valgrind's memcheck with the ordinary Lua
# 5.4 build; fails on any finding.
# Usage: scripts/check.sh [asan|valgrind]   (both when no argument)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
what=${1:-all}

if [ "$what" = all ] || [ "$what" = asan ]; then
  for lua in 5.4 luajit; do
    interpreter=lua5.4
    [ "$lua" = luajit ] && interpreter=luajit
    echo "== specs with ASan + UBSan under $interpreter"
    cmake -S . -B "build/asan-$lua" -DCSM_LUA=$lua -DCSM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build "build/asan-$lua" -j2 >/dev/null
    # the interpreter is not instrumented: preload the runtimes; Lua's own
    # allocations at exit are not leaks of csm's, so leak checks are valgrind's job
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      $interpreter /usr/bin/busted --cpath="build/asan-$lua/?.so" -o TAP spec | tail -n 3
  done
fi

if [ "$what" = all ] || [ "$what" = valgrind ]; then
  echo "== specs under valgrind --leak-check=full"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 --log-file="$log" \
    lua5.4 /usr/bin/busted --cpath="build/5.4/?.so" -o TAP spec | tail -n 3 \
    || { grep -E "definitely|ERROR SUMMARY" "$log"; exit 1; }
  grep -E "ERROR SUMMARY|definitely lost|All heap blocks" "$log"
fi
