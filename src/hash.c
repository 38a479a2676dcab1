/* csm.core.fnv1a32: the core's FNV-1a over a Lua string. */
#include "private.h"
#include "core/hash.h"

/* core.fnv1a32(text [, h]) -> integer in [0, 2^32): the hash of text,
 * continued from h (default the offset basis). */
static int fnv1a32(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING)
        return csm_argerror(L, 1, "fnv.hash32", 1, "text", "string expected");
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    uint32_t h = CSM_FNV1A32_BASIS;
    if (!lua_isnoneornil(L, 2)) {
        lua_Number x = lua_tonumber(L, 2);
        if (lua_type(L, 2) != LUA_TNUMBER || !(x >= 0 && x < 4294967296.0) || x != (lua_Number)(uint32_t)x)
            return csm_argerror(L, 2, "fnv.hash32", 2, "h", "integer in [0, 2^32) expected");
        h = (uint32_t)x;
    }
    lua_pushnumber(L, (lua_Number)csm_fnv1a32(s, n, h));
    return 1;
}

static const luaL_Reg functions[] = {
    {"fnv1a32", fnv1a32},
    {NULL, NULL},
};

void csm_open_hash(lua_State *L)
{
    luaL_setfuncs(L, functions, 0);
}
