/* Shared by the binding's files: metatable names, the module's context and
 * the argument checks. */
#ifndef CSM_PRIVATE_H
#define CSM_PRIVATE_H

#include <stdint.h>

#include "compat.h"
#include "core/err.h"
#include "core/machine.h"
#include "core/scheduler.h"
#include "core/value.h"

#define CSM_VALUE_MT "csm.value"
#define CSM_LOOP_MT "csm.loop"
#define CSM_TIMER_MT "csm.timer"
#define CSM_MACHINE_MT "csm.machine"
#define CSM_BINDING_KEY "csm.binding"

/* Every function csm registers has these two upvalues, so checking a value
 * or a machine compares metatables without a registry lookup. */
#define CSM_UP_VALUE_MT 1
#define CSM_UP_MACHINE_MT 2
#define CSM_NUPVALUES 2

/* Registers the functions of l into the table on top, with csm's upvalues. */
void csm_setfuncs(lua_State *L, const luaL_Reg *l);

/* Sets the metatable of the value on top: the one at upvalue up or, from a
 * function without csm's upvalues, the registry's tname. */
static inline void csm_setmetatable(lua_State *L, int up, const char *tname)
{
    if (lua_istable(L, lua_upvalueindex(up)))
        lua_pushvalue(L, lua_upvalueindex(up));
    else
        luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}

/* The userdata at idx if its metatable is the one at upvalue up or, from a
 * function without csm's upvalues, the registry's tname; else NULL. */
static inline void *csm_testudata(lua_State *L, int idx, int up, const char *tname)
{
    void *p = lua_touserdata(L, idx);
    if (p == NULL || !lua_getmetatable(L, idx))
        return NULL;
    int same = lua_rawequal(L, -1, lua_upvalueindex(up));
    if (!same) {
        lua_getfield(L, LUA_REGISTRYINDEX, tname);
        same = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return same ? p : NULL;
}

/* csm's anchors live in the registry under the address of the int field
 * that records them (LUA_NOREF, or CSM_ANCHORED), never in luaL_ref's
 * integer slots: those are shared with every library in the state, and one
 * unbalanced luaL_unref elsewhere would hand a live csm slot to another. */
#define CSM_ANCHORED 1

/* Anchors the value on top (popped) under field; returns CSM_ANCHORED. */
static inline int csm_anchor(lua_State *L, int *field)
{
    lua_pushlightuserdata(L, field);
    lua_insert(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return CSM_ANCHORED;
}

/* Pushes what field anchors (nil if nothing). */
static inline void csm_push_anchored(lua_State *L, int *field)
{
    lua_pushlightuserdata(L, field);
    lua_rawget(L, LUA_REGISTRYINDEX);
}

/* Lets go of what field anchors. */
static inline void csm_unanchor(lua_State *L, int *field)
{
    if (*field == LUA_NOREF)
        return;
    lua_pushlightuserdata(L, field);
    lua_pushnil(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    *field = LUA_NOREF;
}

/* The module's context, one per Lua state, kept in the registry. */
typedef struct csm_binding {
    lua_State *L;        /* the thread every loop callback runs on */
    int thread_ref;
    int drive_ref;       /* Lua function(sm): runs a machine's events and wakes */
    int real_ref;        /* the real loop, once made */
} csm_binding;

/* A loop: a scheduler and what runs Lua on it. */
typedef struct csm_loop {
    csm_scheduler scheduler;
    csm_binding *binding;
    csm_task deferred;   /* runs the Lua functions loop:_post queued */
    int error_ref;       /* the first error a callback raised, or LUA_NOREF */
    int closed;
} csm_loop;

/* ---- csm.c ---- */

/* The thread loop callbacks run on (csm's own), with room to push. */
static inline lua_State *csm_callback_state(csm_binding *b)
{
    lua_checkstack(b->L, LUA_MINSTACK);
    return b->L;
}

csm_binding *csm_binding_get(lua_State *L);

/* Calls the function under nargs arguments on the callback thread with a
 * traceback handler. Returns the lua_pcall status; the error (with its
 * traceback) is left on the callback thread's stack. */
int csm_pcall(csm_binding *b, int nargs, int nresults);

/* Raises "fname: bad argument #n 'name' (expected, got <type>)". */
int csm_argerror(lua_State *L, const char *fname, int n, const char *name,
                 const char *expected);

/* The same, for a method: argument n is at stack index idx (self is #0). */
int csm_argerror_at(lua_State *L, int idx, const char *fname, int n, const char *name,
                    const char *expected);

/* Returns nil, message: a protocol refusal. */
int csm_refuse(lua_State *L, const char *message);

/* Checks a rank (integer >= 0; up to 2^53 on LuaJIT). */
uint64_t csm_check_rank(lua_State *L, int idx, const char *fname, int n, const char *name);

/* Pushes a rank as a Lua integer (a number on LuaJIT). */
void csm_push_rank(lua_State *L, uint64_t rank);

/* ---- value.c ---- */

void csm_open_value(lua_State *L);
int csm_value_new(lua_State *L);
int csm_value_peer(lua_State *L);
int csm_value_is(lua_State *L);

/* The value at idx, or NULL. */
csm_value *csm_test_value(lua_State *L, int idx);

/* The value at idx; raises naming fname and argument n otherwise. */
csm_value *csm_check_value(lua_State *L, int idx, const char *fname, int n, const char *name);

/* A peer's identity: a value's, or a non-empty string's. */
const char *csm_check_identity(lua_State *L, int idx, const char *fname, int n,
                               const char *name, size_t *len);

/* Pushes a new value; the payload is the value at payload_idx (0: none). */
csm_value *csm_push_value(lua_State *L, const char *identity, size_t len, uint64_t rank,
                          int payload_idx);

/* Pushes a clone of the value at idx. */
void csm_push_clone(lua_State *L, int idx);

/* ---- loop.c ---- */

void csm_open_loop(lua_State *L);
int csm_loop_real(lua_State *L);
int csm_loop_sim(lua_State *L);
csm_loop *csm_check_loop(lua_State *L, int idx, const char *fname, int n);

/* Remembers the first error of a callback (popped from the callback
 * thread) and stops the loop; its run raises it. */
void csm_loop_fail(csm_loop *loop, lua_State *T);

/* ---- machine.c ---- */

void csm_open_machine(lua_State *L);
int csm_machine_new(lua_State *L);

#endif
