/* Helpers every binding file uses: metatable names, the module's context,
 * registry anchors, protected calls, argument errors and refusals. A leaf:
 * it includes no other binding header. */
#ifndef CSM_UTIL_H
#define CSM_UTIL_H

#include <stdint.h>

#include "compat.h"

#define CSM_VALUE_MT "csm.value"
#define CSM_LOOP_MT "csm.loop"
#define CSM_TIMER_MT "csm.timer"
#define CSM_MACHINE_MT "csm.machine"
#define CSM_LAYOUT_MT "csm.layout"
#define CSM_BINDING_KEY "csm.binding"

/* Every function csm registers has these upvalues, so checking a value, a
 * machine, a loop or a timer compares metatables without a registry lookup. */
#define CSM_UP_VALUE_MT 1
#define CSM_UP_MACHINE_MT 2
#define CSM_UP_LOOP_MT 3
#define CSM_UP_TIMER_MT 4
#define CSM_NUPVALUES 4

/* The module's context, one per Lua state, kept in the registry. */
typedef struct csm_binding {
    lua_State *L;        /* the thread every loop callback runs on */
    int thread_ref;
    int drive_ref;       /* Lua function(sm): runs a machine's events and wakes */
    int real_ref;        /* the real loop, once made */
} csm_binding;

/* The context of L's state (made by luaopen_csm_core). */
csm_binding *csm_binding_get(lua_State *L);

/* The thread loop callbacks run on (csm's own), with room to push. */
static inline lua_State *csm_callback_state(csm_binding *b)
{
    lua_checkstack(b->L, LUA_MINSTACK);
    return b->L;
}

/* Calls the function under nargs arguments on the callback thread with a
 * traceback handler. Returns the lua_pcall status; the error (with its
 * traceback) is left on the callback thread's stack. */
int csm_pcall(csm_binding *b, int nargs, int nresults);

/* Pushes csm's CSM_NUPVALUES upvalues, in CSM_UP_ order (the metatables,
 * which must exist): for a closure with upvalues of its own after them. */
void csm_push_upvalues(lua_State *L);

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

/* Integer slots of a Lua table that C code recycles itself: a value kept
 * from C goes in slot n of a table of its owner's (cheaper than a key, or
 * luaL_ref's free list kept in the table). */
typedef struct csm_slots {
    int *free;           /* slots given back */
    size_t nfree, cap;
    int next;            /* the highest slot used so far */
} csm_slots;

/* A slot to fill: one given back, or the next never used. */
static inline int csm_slots_take(csm_slots *s)
{
    return s->nfree > 0 ? s->free[--s->nfree] : ++s->next;
}

/* Gives slot back (its owner emptied it). Under memory pressure it is not
 * reused: the table keeps one more nil. */
void csm_slots_give(csm_slots *s, int slot);

/* Forgets every slot and frees what s holds. */
void csm_slots_clear(csm_slots *s);

/* Raises the error on top of L (every raise of csm's goes through it). */
int csm_raise(lua_State *L);

/* Raises the formatted message (lua_pushfstring's formats) as it is: no
 * position is prepended, so no error names a file and line of csm's own,
 * whichever Lua file called the function that raised. */
int csm_error(lua_State *L, const char *fmt, ...);

/* Raises "fname: bad argument #n 'name' (expected, got <type of idx>)".
 * Arguments count as Lua counts them: a method's self is not counted, so
 * its first argument after self is #1. */
int csm_argerror(lua_State *L, int idx, const char *fname, int n, const char *name,
                 const char *expected);

/* Raises "fname: bad self (expected, got <type of idx>)". */
int csm_selferror(lua_State *L, int idx, const char *fname, const char *expected);

/* Returns nil, message, code: a protocol refusal. code is a core result
 * code; its short name (csm_errname: "stale", "full", ...) is pushed. */
int csm_refuse(lua_State *L, const char *message, int code);

/* Whether the value at idx is a number holding an integer in [lo, hi]
 * (bounds within +-2^53); *out gets it. Never casts a value out of range. */
int csm_is_integer_in(lua_State *L, int idx, double lo, double hi, double *out);

/* The number at idx as a message shows it ("1.5", "1e+20"), in buf. */
const char *csm_number_text(lua_State *L, int idx, char *buf, size_t size);

/* Checks a rank (integer >= 0; up to 2^53 on LuaJIT): argument n at idx. */
uint64_t csm_check_rank(lua_State *L, int idx, const char *fname, int n, const char *name);

/* Pushes a rank as a Lua integer (a number on LuaJIT). */
void csm_push_rank(lua_State *L, uint64_t rank);

#endif
