# Source this to use csm from the source tree under Lua 5.4 and LuaJIT alike
# (from bash, zsh or dash):
#   . scripts/env.sh
# It sets LUA_PATH (both), LUA_CPATH_5_4 (Lua 5.4 reads it first: build/5.4)
# and LUA_CPATH (LuaJIT: build/luajit). An argument (5.4 or luajit) is
# accepted for older habits and changes nothing. Shells that do not say
# which file is sourced (dash) must source it from the repository's root.
_csm_file=${BASH_SOURCE:-${ZSH_VERSION:+${(%):-%x}}}
[ -n "$_csm_file" ] || _csm_file=scripts/env.sh
if [ -f "$(dirname "$_csm_file")/../lua/csm/init.lua" ]; then
  _csm_root=$(cd "$(dirname "$_csm_file")/.." && pwd)
  export LUA_PATH="$_csm_root/lua/?.lua;$_csm_root/lua/?/init.lua;;"
  export LUA_CPATH_5_4="$_csm_root/build/5.4/?.so;;"
  export LUA_CPATH="$_csm_root/build/luajit/?.so;;"
else
  echo "scripts/env.sh: source it from the csm repository's root (. scripts/env.sh)" >&2
fi
unset _csm_file _csm_root
