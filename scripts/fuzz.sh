#!/usr/bin/env bash
# Builds the libFuzzer targets of the core with clang, ASan and UBSan in
# build/fuzz — csm_fuzz (the machine, src/fuzz/machine_fuzz.c) and
# csm_codec_fuzz (the wire codec, src/fuzz/codec_fuzz.c) — and fuzzes each
# for its share of a bounded time from its starting corpus (src/fuzz/corpus,
# src/fuzz/codec_corpus; left unchanged: new inputs go to temporary
# directories). Fails on any finding (crash, leak, timeout); the input that
# found it is kept as build/fuzz/crash-*, leak-* or timeout-* (the codec's
# as build/fuzz/codec-crash-* ...).
# Usage: scripts/fuzz.sh [seconds]    fuzz for that long in all (default 60),
#                                     split between the two targets
#        scripts/fuzz.sh FILE...      replay inputs (a finding) once each, on
#                                     both targets
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh clang libclang-rt-14-dev cmake pkg-config uthash-dev liblua5.4-dev

CC=clang cmake -S . -B build/fuzz -DCSM_FUZZ=ON -DCSM_LUA=5.4 -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/fuzz --target csm_fuzz csm_codec_fuzz -j2 >/dev/null
machine=build/fuzz/csm_fuzz
codec=build/fuzz/csm_codec_fuzz
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

if [ $# -gt 0 ] && [ -f "$1" ]; then
  # replaying: libFuzzer runs each file given once and fails on a finding;
  # every input is one both targets read
  "$machine" "$@"
  exec "$codec" "$@"
fi

seconds=${1:-60}
case "$seconds" in
  ''|*[!0-9]*) echo "usage: scripts/fuzz.sh [seconds] | scripts/fuzz.sh FILE..." >&2; exit 2 ;;
esac
# the machine gets the odd second; each target at least one
codec_seconds=$((seconds / 2))
machine_seconds=$((seconds - codec_seconds))
[ "$codec_seconds" -ge 1 ] || codec_seconds=1
[ "$machine_seconds" -ge 1 ] || machine_seconds=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/machine" "$work/codec"
cp src/fuzz/corpus/* "$work/machine/"
cp src/fuzz/codec_corpus/* "$work/codec/"
# new inputs go to the first directory given; the repository's corpus is
# only read. A finding makes libFuzzer exit non-zero, and so this script.
"$machine" -max_total_time="$machine_seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/ "$work/machine" src/fuzz/corpus
"$codec" -max_total_time="$codec_seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
  -print_final_stats=1 -artifact_prefix=build/fuzz/codec- "$work/codec" src/fuzz/codec_corpus
echo "fuzz: no finding in ${seconds}s; corpora grew to $(ls "$work/machine" | wc -l) (machine)" \
  "and $(ls "$work/codec" | wc -l) (codec) inputs"
