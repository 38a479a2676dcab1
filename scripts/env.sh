# Source this to use csm from the source tree: . scripts/env.sh [5.4|luajit]
_csm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LUA_PATH="$_csm_root/lua/?.lua;$_csm_root/lua/?/init.lua;;"
export LUA_CPATH="$_csm_root/build/${1:-5.4}/?.so;;"
unset _csm_root
