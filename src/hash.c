/* csm.core.fnv1a32 and csm.core.crc32c: the core's FNV-1a and CRC-32C
 * over a Lua string. */
#include "private.h"
#include "core/crc32c.h"
#include "core/hash.h"

/* The optional start at idx: an integer in [0, 2^32), or def when absent. */
static uint32_t check_start(lua_State *L, int idx, const char *fname, const char *name, uint32_t def)
{
    if (lua_isnoneornil(L, idx))
        return def;
    lua_Number x = lua_tonumber(L, idx);
    if (lua_type(L, idx) != LUA_TNUMBER || !(x >= 0 && x < 4294967296.0) || x != (lua_Number)(uint32_t)x)
        csm_argerror(L, idx, fname, idx, name, "integer in [0, 2^32) expected");
    return (uint32_t)x;
}

/* core.fnv1a32(text [, h]) -> integer in [0, 2^32): the hash of text,
 * continued from h (default the offset basis). */
static int fnv1a32(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return csm_argerror(L, 1, "fnv.hash32", 1, "text", "string expected");
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    uint32_t h = check_start(L, 2, "fnv.hash32", "h", CSM_FNV1A32_BASIS);
    lua_pushnumber(L, (lua_Number)csm_fnv1a32(s, n, h));
    return 1;
}

/* core.crc32c(bytes [, crc]) -> integer in [0, 2^32): the CRC-32C of
 * bytes, continued from crc (default 0: a fresh start). */
static int crc32c(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return csm_argerror(L, 1, "csm.core.crc32c", 1, "bytes", "string expected");
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    uint32_t crc = check_start(L, 2, "csm.core.crc32c", "crc", 0);
    lua_pushinteger(L, (lua_Integer)csm_crc32c(s, n, crc));
    return 1;
}

static const luaL_Reg functions[] = {
    {"fnv1a32", fnv1a32},
    {"crc32c", crc32c},
    {NULL, NULL},
};

void csm_open_hash(lua_State *L)
{
    luaL_setfuncs(L, functions, 0);
}
