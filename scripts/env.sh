# Source this to use csm from the source tree under Lua 5.4 and LuaJIT alike:
#   . scripts/env.sh
# It sets LUA_PATH (both), LUA_CPATH_5_4 (Lua 5.4 reads it first: build/5.4)
# and LUA_CPATH (LuaJIT: build/luajit). An argument (5.4 or luajit) is
# accepted for older habits and changes nothing.
_csm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export LUA_PATH="$_csm_root/lua/?.lua;$_csm_root/lua/?/init.lua;;"
export LUA_CPATH_5_4="$_csm_root/build/5.4/?.so;;"
export LUA_CPATH="$_csm_root/build/luajit/?.so;;"
unset _csm_root
