#!/usr/bin/env bash
# Installs what csm needs from Debian's packages (when missing) and builds
# csm.core for Lua 5.4 (build/5.4) and LuaJIT (build/luajit).
# Usage: scripts/setup.sh [extra cmake -D options for both builds]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake pkg-config lua5.4 liblua5.4-dev luajit libluajit-5.1-dev
          libuv1-dev uthash-dev lua-busted lua-check luarocks lua-luv lua-cjson lua-argparse
          librsvg2-bin graphviz valgrind)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_=""
  [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi

for lua in 5.4 luajit; do
  cmake -S . -B "build/$lua" -DCSM_LUA="$lua" "$@" >/dev/null
  cmake --build "build/$lua" -j2 >/dev/null
done
echo "setup: built build/5.4/csm/core.so and build/luajit/csm/core.so"
