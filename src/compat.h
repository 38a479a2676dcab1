/* The Lua 5.3 API this binding is written to, on Lua 5.1 / LuaJIT 2.1.
 * Only what LuaJIT does not export is defined here. */
#ifndef CSM_COMPAT_H
#define CSM_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen(L, (i))

static inline int lua_absindex(lua_State *L, int i)
{
    return (i > 0 || i <= LUA_REGISTRYINDEX) ? i : lua_gettop(L) + i + 1;
}
#endif

#if LUA_VERSION_NUM < 503
/* Numbers are doubles; an integer is a double without a fraction. */
static inline int lua_isinteger(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TNUMBER)
        return 0;
    lua_Number n = lua_tonumber(L, i);
    return n == (lua_Number)(long long)n;
}
#endif

/* The single user value of a userdata: a Lua 5.4 user value, or the
 * environment table's [1] on 5.1. Pushes nil when none was set. */
static inline void csm_getuservalue(lua_State *L, int idx)
{
#if LUA_VERSION_NUM >= 504
    lua_getiuservalue(L, idx, 1);
#elif LUA_VERSION_NUM >= 502
    lua_getuservalue(L, idx);
#else
    lua_getfenv(L, idx);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
    } else {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
#endif
}

/* Pops a value and makes it the user value of the userdata at idx. */
static inline void csm_setuservalue(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
#if LUA_VERSION_NUM >= 504
    lua_setiuservalue(L, idx, 1);
#elif LUA_VERSION_NUM >= 502
    lua_setuservalue(L, idx);
#else
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, idx);
#endif
}

/* A userdata with room for one user value. */
static inline void *csm_newuserdata(lua_State *L, size_t size)
{
#if LUA_VERSION_NUM >= 504
    return lua_newuserdatauv(L, size, 1);
#else
    return lua_newuserdata(L, size);
#endif
}

#endif
