#!/usr/bin/env bash
# Real nodes under real faults: csm node processes on loopback, with fsync
# and encryption, killed, stopped, starved of disk and of fsync.
#   short (CI, a few minutes):
#     - 4 nodes to 1000 ranks with a SIGKILL every 3 s (both interpreters)
#     - a minute of SIGKILLs every 3-5 s: agreement, no double vote, progress
#     - a node stopped (SIGSTOP) for 10 s catches up; memory stays bounded
#     - a node whose fdatasync fails (an LD_PRELOAD shim) exits 4 before it
#       sends what the write guarded; the others go on
#     - a node whose data directory was wiped rejoins (--rejoin) and catches
#       up with peers hundreds of ranks ahead
#     - (root) a node whose data directory is a 64 KiB tmpfs exits 4 when it
#       fills; the others go on
#   full: the same, longer, and 7 nodes
# Usage: scripts/realnet.sh [short|full]
set -euo pipefail
cd "$(dirname "$0")/.."
tier=${1:-short}
case "$tier" in short|full) ;; *) echo "usage: scripts/realnet.sh [short|full]" >&2; exit 2 ;; esac
scale=1
minute=60
[ "$tier" = full ] && minute=300

work=$(mktemp -d /tmp/csm-realnet-XXXXXX)
cleanup() {
  if mountpoint -q "$work/tiny" 2>/dev/null; then umount "$work/tiny" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { echo "== realnet: $*"; }

step "4 nodes, 1000 ranks, SIGKILL every 3 s (lua5.4)"
lua5.4 bin/csm local --nodes 4 --ranks 1000 --kill-every 3 --dir "$work/kill54" --seed 1 --quiet
step "4 nodes, 1000 ranks, SIGKILL every 3 s (luajit)"
luajit bin/csm local --nodes 4 --ranks 1000 --kill-every 3 --dir "$work/killjit" --seed 2 --quiet

step "${minute} s of SIGKILLs every 3-5 s"
lua5.4 bin/csm local --nodes 4 --duration "$minute" --kill-every 4 --dir "$work/soak" --seed 3 --quiet

step "a node stopped for 10 s catches up"
lua5.4 bin/csm local --nodes 4 --ranks 300 --stop-for 10 --dir "$work/stop" --seed 4 --quiet

shim=$(ls build/5.4/libcsm_failsync.so)
# a cluster of 4 with n04's fdatasync failing from its 20th call
step "a node whose fdatasync fails exits 4 before the guarded send"
lua5.4 bin/csm local --nodes 4 --ranks 1 --dir "$work/failsync" --quiet >/dev/null
cfg="$work/failsync/cluster.json"
# starts n01-n03 of the failsync cluster in the background, data and logs
# named by $1 (x1, x1.log, ...); their pids in pids
start_three() {
  pids=()
  for i in 1 2 3; do
    lua5.4 bin/csm node --config "$cfg" --name "n0$i" --key "$work/failsync/n0$i.key" \
      --data "$work/failsync/$1$i" > "$work/failsync/$1$i.log" &
    pids+=($!)
  done
}
start_three x
set +e
LD_PRELOAD="$PWD/$shim" CSM_FAIL_SYNC=20 lua5.4 bin/csm node --config "$cfg" --name n04 \
  --key "$work/failsync/n04.key" --data "$work/failsync/x4" > "$work/failsync/x4.log"
status=$?
set -e
sleep 15
lua5.4 tools/realnet_check.lua failsync "$status" "$work/failsync/x4.log" "$work/failsync/x1.log" \
  "$work/failsync/x2.log" "$work/failsync/x3.log"
kill "${pids[@]}"; wait "${pids[@]}" || true

step "a node that lost its data rejoins (--rejoin) and catches up"
d="$work/failsync"
pids=()
for i in 1 2 3 4; do
  lua5.4 bin/csm node --config "$d/cluster.json" --name "n0$i" --key "$d/n0$i.key" --data "$d/r$i" \
    > "$d/r$i.log" &
  pids+=($!)
done
sleep 4
kill -9 "${pids[3]}"; wait "${pids[3]}" || true
rm -rf "$d/r4"
read -r -a h <<<"$(lua5.4 tools/realnet_check.lua heights "$d/r1.log" "$d/r2.log" "$d/r3.log")"
target=$((h[0] + 300))
timeout 120 lua5.4 bin/csm node --config "$d/cluster.json" --name n04 --key "$d/n04.key" --data "$d/r4" \
  --rejoin --ranks "$target" > "$d/r4b.log"
kill "${pids[0]}" "${pids[1]}" "${pids[2]}"; wait "${pids[0]}" "${pids[1]}" "${pids[2]}" || true
grep -q '"event":"abstain"' "$d/r4b.log"
echo "   n04 rejoined empty at rank ${h[0]} and reached $target; heights:" \
  "$(lua5.4 tools/realnet_check.lua heights "$d/r1.log" "$d/r2.log" "$d/r3.log" "$d/r4.log" "$d/r4b.log")"

if [ "$(id -u)" -eq 0 ] && mkdir -p "$work/tiny" && mount -t tmpfs -o size=64k tmpfs "$work/tiny" 2>/dev/null; then
  step "a node whose disk fills exits 4; the others go on"
  start_three y
  set +e
  lua5.4 bin/csm node --config "$cfg" --name n04 --key "$work/failsync/n04.key" --data "$work/tiny/n04" \
    > "$work/failsync/y4.log"
  status=$?
  set -e
  sleep 15
  lua5.4 tools/realnet_check.lua full "$status" "$work/failsync/y4.log" "$work/failsync/y1.log" \
    "$work/failsync/y2.log" "$work/failsync/y3.log"
  kill "${pids[@]}"; wait "${pids[@]}" || true
else
  step "SKIPPED: a full disk needs root and a tmpfs mount"
fi

if [ "$tier" = full ]; then
  step "7 nodes, 300 ranks, SIGKILL every 2 s"
  lua5.4 bin/csm local --nodes 7 --ranks 300 --kill-every 2 --dir "$work/kill7" --seed 5 --quiet
  step "4 nodes, 2000 ranks (throughput)"
  lua5.4 bin/csm local --nodes 4 --ranks 2000 --dir "$work/long" --seed 6
fi
echo "realnet: all passed ($tier)"
