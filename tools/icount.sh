#!/usr/bin/env bash
# Instructions per operation, counted by valgrind --tool=callgrind (stable on
# a busy machine, unlike wall time): each workload of tools/icount.lua runs
# at two sizes and the difference is divided by the extra operations. The
# idle machine's bytes are read from /proc (RSS) and the Lua heap.
# Usage: tools/icount.sh [5.4|luajit] [WORKLOAD...]
#   workloads: receive_vote self_transition trivial_cluster sim_cluster idle_machine
set -euo pipefail
cd "$(dirname "$0")/.."
lua=${1:-5.4}
case "$lua" in 5.4|luajit) ;; *) echo "usage: tools/icount.sh [5.4|luajit] [WORKLOAD...]" >&2; exit 2 ;; esac
shift || true
interpreter=lua5.4
[ "$lua" = luajit ] && interpreter=luajit
unset LUA_PATH_5_4 LUA_CPATH_5_4
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;;" LUA_CPATH="$PWD/build/$lua/?.so;;"
workloads=("$@")
[ ${#workloads[@]} -eq 0 ] && workloads=(receive_vote self_transition trivial_cluster sim_cluster idle_machine)

count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$interpreter" tools/icount.lua "$@" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

for w in "${workloads[@]}"; do
  case "$w" in
    receive_vote)
      a=$(count receive_vote 200); b=$(count receive_vote 400)
      echo "receive_vote: $(( (b - a) / 10000 )) instructions per call (target 1500)" ;;
    self_transition)
      a=$(count self_transition 10000); b=$(count self_transition 20000)
      echo "self_transition: $(( (b - a) / 10000 )) instructions per transition (target 4000)" ;;
    trivial_cluster)
      a=$(count trivial_cluster 100); b=$(count trivial_cluster 200)
      echo "trivial_cluster 4 nodes: $(( (b - a) / 100 )) instructions per finalized round (target 300000)" ;;
    sim_cluster)
      a=$(count sim_cluster 4 100); b=$(count sim_cluster 4 200)
      echo "sim_cluster 4 reference nodes: $(( (b - a) / 100 )) instructions per finalized round" ;;
    idle_machine)
      echo "$("$interpreter" tools/icount.lua idle_machine 10000) (target 3072 of RSS)" ;;
    *) echo "tools/icount.sh: unknown workload '$w'" >&2; exit 2 ;;
  esac
done
