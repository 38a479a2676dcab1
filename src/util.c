/* Helpers every binding file uses (see util.h). */
#include "util.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"

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

void csm_push_upvalues(lua_State *L)
{
    luaL_getmetatable(L, CSM_VALUE_MT);
    luaL_getmetatable(L, CSM_MACHINE_MT);
    luaL_getmetatable(L, CSM_LOOP_MT);
    luaL_getmetatable(L, CSM_TIMER_MT);
}

void csm_setfuncs(lua_State *L, const luaL_Reg *l)
{
    csm_push_upvalues(L);
    luaL_setfuncs(L, l, CSM_NUPVALUES);
}

static int nothing(lua_State *L)
{
    (void)L;
    return 0;
}

int csm_raise(lua_State *L)
{
    /* After a call on another thread (the callback thread, luv's), LuaJIT
     * keeps that one as its current thread until the VM is entered again
     * on L; throwing before that corrupts a later trace exit
     * (LuaJIT/LuaJIT#1066). A call of nothing enters it. */
    lua_pushcfunction(L, nothing);
    lua_call(L, 0, 0);
    return lua_error(L);
}

int csm_error(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return csm_raise(L);
}

int csm_argerror(lua_State *L, int idx, const char *fname, int n, const char *name,
                 const char *expected)
{
    return csm_error(L, "%s: bad argument #%d '%s' (%s, got %s)", fname, n, name, expected,
                      luaL_typename(L, idx));
}

int csm_selferror(lua_State *L, int idx, const char *fname, const char *expected)
{
    return csm_error(L, "%s: bad self (%s, got %s)", fname, expected, luaL_typename(L, idx));
}

int csm_refuse(lua_State *L, const char *message, int code)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    lua_pushstring(L, csm_errname(code));
    return 3;
}

int csm_is_integer_in(lua_State *L, int idx, double lo, double hi, double *out)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    double x = (double)lua_tonumber(L, idx);
    /* range first: casting NaN, inf or |x| >= 2^63 to int64_t is undefined */
    if (!(x >= lo && x <= hi) || x != (double)(int64_t)x)
        return 0;
    *out = x;
    return 1;
}

const char *csm_number_text(lua_State *L, int idx, char *buf, size_t size)
{
    snprintf(buf, size, "%.17g", (double)lua_tonumber(L, idx));
    return buf;
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
        csm_argerror(L, idx, fname, n, name, "integer >= 0 expected");
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        if (i < 0)
            csm_error(L, "%s: bad argument #%d '%s' (integer >= 0 expected, got %I)", fname,
                       n, name, i);
        return (uint64_t)i;
    }
#endif
    lua_Number x = lua_tonumber(L, idx);
    if (!(x >= 0 && x <= CSM_RANK_MAX && floor(x) == x)) {
        char shown[64];
        snprintf(shown, sizeof shown, "%.17g", (double)x);
        csm_error(L, "%s: bad argument #%d '%s' (integer >= 0 expected, got %s)", fname, n,
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

void csm_slots_give(csm_slots *s, int slot)
{
    if (s->nfree == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        int *slots = realloc(s->free, cap * sizeof *slots);
        if (slots == NULL)
            return;
        s->free = slots;
        s->cap = cap;
    }
    s->free[s->nfree++] = slot;
}

void csm_slots_clear(csm_slots *s)
{
    free(s->free);
    s->free = NULL;
    s->nfree = s->cap = 0;
    s->next = 0;
}
