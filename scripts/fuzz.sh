#!/usr/bin/env bash
# Builds csm_fuzz, the libFuzzer target of the core (src/fuzz/machine_fuzz.c),
# with clang, ASan and UBSan in build/fuzz, and fuzzes it for a bounded time
# from the starting corpus src/fuzz/corpus (left unchanged: new inputs go to a
# temporary directory). Fails on any finding (crash, leak, timeout); the
# input that found it is kept as build/fuzz/crash-*, leak-* or timeout-*.
# Usage: scripts/fuzz.sh [seconds]    fuzz for that long (default 60)
#        scripts/fuzz.sh FILE...      replay inputs (a finding) once each
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh clang libclang-rt-14-dev cmake pkg-config uthash-dev liblua5.4-dev

CC=clang cmake -S . -B build/fuzz -DCSM_FUZZ=ON -DCSM_LUA=5.4 -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/fuzz --target csm_fuzz -j2 >/dev/null
fuzzer=build/fuzz/csm_fuzz
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

if [ $# -gt 0 ] && [ -f "$1" ]; then
  # replaying: libFuzzer runs each file given once and fails on a finding
  exec "$fuzzer" "$@"
fi

seconds=${1:-60}
case "$seconds" in
  ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds] | scripts/fuzz.sh FILE..." >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp src/fuzz/corpus/* "$work/"
# new inputs go to $work (the first directory); the repository's corpus is
# only read. A finding makes libFuzzer exit non-zero, and so this script.
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/ "$work" src/fuzz/corpus
echo "fuzz: no finding in ${seconds}s; corpus grew to $(ls "$work" | wc -l) inputs"
