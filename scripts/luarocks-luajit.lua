-- LuaRocks configuration for building and installing csm for LuaJIT (the
-- Lua 5.1 tree, with luajit as its interpreter and LuaJIT's headers):
--   LUAROCKS_CONFIG=scripts/luarocks-luajit.lua luarocks --lua-version=5.1 make csm-scm-1.rockspec
lua_interpreter = "luajit"
variables = {
  LUA = "/usr/bin/luajit",
  LUA_BINDIR = "/usr/bin",
  LUA_INCDIR = "/usr/include/luajit-2.1",
}
