package = "csm"
version = "scm-1"
source = { url = "git+file:///dev/null" }
description = {
  summary = "A round-based consensus state machine for Lua, with a C core, luv's loop and a sim world",
  detailed = [[
csm runs a BFT round faithfully on luv's loop (libuv), or runs many nodes in
virtual time, reproducibly, in one process. Providers (sync, leader,
proving, voting, quorum, finalization, liveness) are Lua tables.
]],
  license = "MIT",
}
-- lua-argparse (the command's options), lua-luv (the real loop, real
-- nodes' sockets and files, the diagram's PNG), lua-cjson and libsodium-dev
-- come from Debian (scripts/setup.sh installs them);
-- LuaRocks users can add "argparse" and "luv" from the rocks server.
dependencies = { "lua >= 5.1" }
external_dependencies = {
  UTHASH = { header = "uthash.h" },
  SODIUM = { header = "sodium.h", library = "sodium" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CSM_INSTALL_CMOD = "$(LIBDIR)",
    CSM_INSTALL_LMOD = "$(LUADIR)",
  },
  install = {
    bin = { csm = "bin/csm" },
  },
}
