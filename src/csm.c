/* csm.core: the module's entry point and the helpers its files share. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "private.h"

csm_binding *csm_binding_get(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CSM_BINDING_KEY);
    csm_binding *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return b;
}

/* Appends a traceback to string errors; other error objects pass as they are. */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        return 1;
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int csm_pcall(csm_binding *b, int nargs, int nresults)
{
    lua_State *T = csm_callback_state(b);
    int base = lua_gettop(T) - nargs;
    lua_pushcfunction(T, traceback);
    lua_insert(T, base);
    int status = lua_pcall(T, nargs, nresults, base);
    lua_remove(T, base);
    return status;
}

int csm_argerror(lua_State *L, const char *fname, int n, const char *name,
                 const char *expected)
{
    return csm_argerror_at(L, n, fname, n, name, expected);
}

int csm_argerror_at(lua_State *L, int idx, const char *fname, int n, const char *name,
                    const char *expected)
{
    return luaL_error(L, "%s: bad argument #%d '%s' (%s, got %s)", fname, n, name, expected,
                      luaL_typename(L, idx));
}

int csm_refuse(lua_State *L, const char *message)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    return 2;
}

#if LUA_VERSION_NUM >= 503
/* the largest float below 2^63: 2^63 itself would wrap to a negative integer */
#define CSM_RANK_MAX ((lua_Number)9223372036854774784.0)
#else
#define CSM_RANK_MAX ((lua_Number)9007199254740992.0) /* 2^53 */
#endif

uint64_t csm_check_rank(lua_State *L, int idx, const char *fname, int n, const char *name)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        csm_argerror_at(L, idx, fname, n, name, "integer >= 0 expected");
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i < 0)
            luaL_error(L, "%s: bad argument #%d '%s' (integer >= 0 expected, got %I)", fname,
                       n, name, i);
        return (uint64_t)i;
    }
#endif
    lua_Number x = lua_tonumber(L, idx);
    if (!(x >= 0 && x <= CSM_RANK_MAX && floor(x) == x)) {
        char shown[64];
        snprintf(shown, sizeof shown, "%.17g", (double)x);
        luaL_error(L, "%s: bad argument #%d '%s' (integer >= 0 expected, got %s)", fname, n,
                   name, shown);
    }
    return (uint64_t)x;
}

void csm_push_rank(lua_State *L, uint64_t rank)
{
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)rank);
#else
    lua_pushnumber(L, (lua_Number)rank);
#endif
}

/* core.set_drive(fn): the Lua function a machine's ready task runs. */
static int set_drive(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    csm_binding *b = csm_binding_get(L);
    csm_unanchor(L, &b->drive_ref);
    lua_pushvalue(L, 1);
    b->drive_ref = csm_anchor(L, &b->drive_ref);
    return 0;
}

static void push_names(lua_State *L, const char *const *names, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* core.seed(): the seed's states, events, transitions, timeouts and the
 * default limits, as plain tables. */
static int seed(lua_State *L)
{
    lua_newtable(L);
    push_names(L, csm_state_names, CSM_NSTATES);
    lua_setfield(L, -2, "states");
    push_names(L, csm_event_names, CSM_NEVENTS);
    lua_setfield(L, -2, "events");
    lua_createtable(L, (int)csm_seed_ntransitions, 0);
    for (size_t i = 0; i < csm_seed_ntransitions; i++) {
        const csm_transition *t = &csm_seed_transitions[i];
        lua_createtable(L, 0, 3);
        lua_pushstring(L, csm_state_names[t->from]);
        lua_setfield(L, -2, "from");
        lua_pushstring(L, csm_event_names[t->event]);
        lua_setfield(L, -2, "event");
        lua_pushstring(L, csm_state_names[t->to]);
        lua_setfield(L, -2, "to");
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "transitions");
    lua_newtable(L);
    lua_newtable(L);
    for (int i = 0; i < CSM_NSTATES; i++) {
        if (csm_seed_timeouts[i] <= 0)
            continue;
        lua_pushnumber(L, csm_seed_timeouts[i]);
        lua_setfield(L, -3, csm_state_names[i]);
        lua_pushstring(L, csm_event_names[csm_seed_timeout_events[i]]);
        lua_setfield(L, -2, csm_state_names[i]);
    }
    lua_setfield(L, -3, "timeout_events");
    lua_setfield(L, -2, "timeouts");
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number)csm_default_limits.rank_window);
    lua_setfield(L, -2, "rank_window");
    lua_pushnumber(L, (lua_Number)csm_default_limits.peers_per_rank);
    lua_setfield(L, -2, "peers_per_rank");
    lua_pushnumber(L, (lua_Number)csm_default_limits.identity_bytes);
    lua_setfield(L, -2, "identity_bytes");
    lua_pushnumber(L, (lua_Number)csm_default_limits.queue);
    lua_setfield(L, -2, "queue");
    lua_setfield(L, -2, "limits");
    return 1;
}

/* core.metatable(name): a csm metatable, for init.lua to extend. */
static int metatable(lua_State *L)
{
    luaL_getmetatable(L, luaL_checkstring(L, 1));
    return 1;
}

static const luaL_Reg functions[] = {
    {"metatable", metatable},
    {"value", csm_value_new},
    {"peer", csm_value_peer},
    {"is_value", csm_value_is},
    {"loop", csm_loop_real},
    {"sim", csm_loop_sim},
    {"machine", csm_machine_new},
    {"set_drive", set_drive},
    {"seed", seed},
    {NULL, NULL},
};

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
        luaL_newmetatable(L, CSM_VALUE_MT);
        luaL_newmetatable(L, CSM_MACHINE_MT);
        lua_pop(L, 2);
        csm_open_value(L);
        csm_open_loop(L);
        csm_open_machine(L);
    }
    lua_newtable(L);
    csm_setfuncs(L, functions);
    return 1;
}

void csm_setfuncs(lua_State *L, const luaL_Reg *l)
{
    luaL_getmetatable(L, CSM_VALUE_MT);
    luaL_getmetatable(L, CSM_MACHINE_MT);
    luaL_setfuncs(L, l, CSM_NUPVALUES);
}
