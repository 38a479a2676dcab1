#!/usr/bin/env bash
# Installs what csm needs from Debian's packages (when missing) and builds
# csm.core for Lua 5.4 (build/5.4) and LuaJIT (build/luajit).
# Usage: scripts/setup.sh [extra cmake -D options for both builds]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install.sh build-essential cmake pkg-config lua5.4 liblua5.4-dev luajit libluajit-5.1-dev \
  uthash-dev libsodium-dev lua-busted lua-check luarocks lua-luv lua-cjson lua-argparse \
  librsvg2-bin graphviz valgrind chromium parallel
# the viewer's browser check: node and npm (Debian's, unless some are there),
# and playwright-core from the npm registry, pinned in tools/viewer
command -v node >/dev/null || scripts/install.sh nodejs
command -v npm >/dev/null || scripts/install.sh npm
if [ ! -d tools/viewer/node_modules/playwright-core ]; then
  (cd tools/viewer && npm install --no-audit --no-fund --silent)
fi

for lua in 5.4 luajit; do
  cmake -S . -B "build/$lua" -DCSM_LUA="$lua" "$@" >/dev/null
  cmake --build "build/$lua" -j2 >/dev/null
done
echo "setup: built build/5.4/csm/core.so and build/luajit/csm/core.so"
