/* csm.core: the module's entry point. It makes the module's context once
 * per Lua state; each binding file registers its own type and
 * constructors. What only csm's Lua half may call is handed out once, by
 * core.internals(), and is on no object's methods. */
#include <string.h>

#include "private.h"

/* core.internals(): the internal functions, the first time only. */
static int internals(lua_State *L)
{
    if (lua_isnil(L, lua_upvalueindex(1)))
        return csm_error(L, "csm.core.internals: already taken (csm.core is csm's own: "
                            "require \"csm\")");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    lua_replace(L, lua_upvalueindex(1));
    return 1;
}

#if defined(_WIN32)
#define CSM_EXPORT __declspec(dllexport)
#else
#define CSM_EXPORT __attribute__((visibility("default")))
#endif

CSM_EXPORT int luaopen_csm_core(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CSM_BINDING_KEY);
    int opened = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!opened) {
        csm_binding *b = lua_newuserdata(L, sizeof *b);
        memset(b, 0, sizeof *b);
        b->drive_ref = LUA_NOREF;
        b->real_ref = LUA_NOREF;
        lua_setfield(L, LUA_REGISTRYINDEX, CSM_BINDING_KEY);
        b->L = lua_newthread(L);
        b->thread_ref = csm_anchor(L, &b->thread_ref);
        /* the upvalues every csm function carries (csm_setfuncs) */
        luaL_newmetatable(L, CSM_VALUE_MT);
        luaL_newmetatable(L, CSM_MACHINE_MT);
        luaL_newmetatable(L, CSM_LOOP_MT);
        luaL_newmetatable(L, CSM_TIMER_MT);
        lua_pop(L, 4);
    }
    lua_newtable(L);
    lua_newtable(L); /* the internal functions */
    int inner = lua_gettop(L);
    lua_pushvalue(L, inner - 1);
    csm_open_value(L, !opened);
    csm_open_hash(L);
    csm_open_codec(L);
    csm_open_sodium(L);
    csm_open_os(L);
    csm_open_loop(L, !opened, inner);
    csm_open_machine(L, !opened, inner);
    lua_pop(L, 1);
    lua_pushcclosure(L, internals, 1);
    lua_setfield(L, -2, "internals");
    return 1;
}
