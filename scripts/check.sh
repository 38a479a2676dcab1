#!/usr/bin/env bash
# Runs the spec suite against csm.core built with AddressSanitizer and
# UndefinedBehaviorSanitizer (build/asan-5.4 and build/asan-luajit, under
# Lua 5.4 and LuaJIT), then under valgrind's memcheck with the ordinary Lua
# 5.4 build (all but the #sweep, #cli and #heavy specs: many lab runs each,
# csm commands run as processes, or floods and long cluster runs, which
# reach nothing of the core's the rest does not, and under memcheck take
# most of its time; "valgrind-full" runs the #heavy ones too); fails on
# any finding. "rocks" installs csm with LuaRocks for Lua 5.4 and for
# LuaJIT into temporary trees and runs the installed csm command.
# Usage: scripts/check.sh [asan|valgrind|valgrind-full|rocks]   (all when no argument:
#   asan, valgrind and rocks)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
what=${1:-all}
case "$what" in
  all|asan|valgrind|valgrind-full|rocks) ;;
  *) echo "usage: scripts/check.sh [asan|valgrind|valgrind-full|rocks]" >&2; exit 2 ;;
esac
temporaries=()
trap 'rm -rf "${temporaries[@]}"' EXIT

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

if [ "$what" = all ] || [ "$what" = valgrind ] || [ "$what" = valgrind-full ]; then
  exclude=sweep,cli,heavy
  [ "$what" = valgrind-full ] && exclude=sweep,cli
  echo "== specs under valgrind --leak-check=full (all but #${exclude//,/, #})"
  log=$(mktemp)
  temporaries+=("$log")
  valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 --log-file="$log" \
    lua5.4 /usr/bin/busted --cpath="build/5.4/?.so" --exclude-tags="$exclude" -o TAP spec | tail -n 3 \
    || { grep -E "definitely|ERROR SUMMARY" "$log"; exit 1; }
  grep -E "ERROR SUMMARY|definitely lost|All heap blocks" "$log"
fi

if [ "$what" = all ] || [ "$what" = rocks ]; then
  trees=$(mktemp -d)
  temporaries+=("$trees")
  for lua in 5.4 luajit; do
    echo "== luarocks make for $lua, and the installed csm command"
    if [ "$lua" = 5.4 ]; then
      luarocks --lua-version=5.4 make --tree="$trees/$lua" csm-scm-1.rockspec >"$trees/log" 2>&1 \
        || { cat "$trees/log"; exit 1; }
    else
      LUAROCKS_CONFIG=scripts/luarocks-luajit.lua luarocks --lua-version=5.1 make --tree="$trees/$lua" \
        csm-scm-1.rockspec >"$trees/log" 2>&1 || { cat "$trees/log"; exit 1; }
    fi
    # from another directory, so nothing of the source tree is used
    (cd "$trees" && "$trees/$lua/bin/csm" --help | grep "experiment" >/dev/null \
      && "$trees/$lua/bin/csm" experiment --nodes 4 --ranks 5 | grep "progress: ok")
  done
fi
