/* csm.core: the module's entry point. It makes the module's context once
 * per Lua state; each binding file registers its own type and
 * constructors. */
#include <string.h>

#include "private.h"

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
        lua_pop(L, 2);
    }
    lua_newtable(L);
    csm_open_value(L, !opened);
    csm_open_loop(L, !opened);
    csm_open_machine(L, !opened);
    return 1;
}
