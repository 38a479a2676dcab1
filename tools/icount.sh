#!/usr/bin/env bash
# Instructions per operation, counted by valgrind --tool=callgrind (stable on
# a busy machine, unlike wall time): each workload of tools/icount.lua runs
# at two sizes and the difference is divided by the extra operations.
# Usage: tools/icount.sh [5.4|luajit]
set -euo pipefail
cd "$(dirname "$0")/.."
lua=${1:-5.4}
case "$lua" in 5.4|luajit) ;; *) echo "usage: tools/icount.sh [5.4|luajit]" >&2; exit 2 ;; esac
interpreter=lua5.4
[ "$lua" = luajit ] && interpreter=luajit
unset LUA_PATH_5_4 LUA_CPATH_5_4
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/build/$lua/?.so;;"

count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$interpreter" tools/icount.lua "$@" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

a=$(count self_transition 10000); b=$(count self_transition 20000)
echo "self_transition: $(( (b - a) / 10000 )) instructions per transition"
a=$(count sim_cluster 4 100); b=$(count sim_cluster 4 200)
echo "sim_cluster 4 nodes: $(( (b - a) / 100 )) instructions per finalized round"
