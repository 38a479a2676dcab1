/* What the binding's files offer one another: the loop type and each
 * file's checks and constructors. Helpers are in util.h. */
#ifndef CSM_PRIVATE_H
#define CSM_PRIVATE_H

#include "core/err.h"
#include "core/machine.h"
#include "core/scheduler.h"
#include "core/value.h"
#include "util.h"

/* ---- hash.c: csm.core.fnv1a32 ---- */

/* Adds fnv1a32 to the module table on top. */
void csm_open_hash(lua_State *L);

/* ---- codec.c: csm.core.encode, csm.core.decode (the wire codec) ---- */

/* Adds the codec's functions to the module table on top. */
void csm_open_codec(lua_State *L);

/* ---- sodium.c: csm.core.sodium (libsodium: keys, signatures, kx, AEAD,
 * secretstream) ---- */

/* Adds the table sodium to the module table on top. */
void csm_open_sodium(lua_State *L);

/* ---- os.c: csm.core.os (what luv lacks: file locks) ---- */

/* Adds the table os to the module table on top. */
void csm_open_os(lua_State *L);

/* ---- value.c: csm.value ---- */

/* Adds value, peer and is_value to the module table on top; first: the
 * state opens csm.core for the first time, and the metatable's methods are
 * set. (The other csm_open_* take first alike.) */
void csm_open_value(lua_State *L, int first);

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

/* ---- loop.c: csm.loop, csm.sim, csm.timer ---- */

/* A loop: a scheduler and what runs Lua on it. */
typedef struct csm_loop {
    csm_scheduler scheduler;
    csm_binding *binding;
    csm_task deferred;   /* runs the Lua functions loop:_post queued */
    int closed;          /* by loop:close or its finalizer */
    /* the real loop: it wakes through luv handles on luv's loop */
    int luv_ref;         /* anchors { uv = luv, kick = timer, spin = idle, ... } */
    double kick_at;      /* when the kick timer is armed for (HUGE_VAL: not armed) */
    int spin_on;         /* the spin idle handle is started */
    int runs;            /* csm run functions driving luv's loop now */
    int stepping;        /* a step of run_for or run_until is in uv.run("once") */
    int luv_gone;        /* Lua is closing and luv's handles are finalized */
    const void *last_owner; /* the machine whose timer fired last, or NULL */
    csm_slots timer_slots; /* of the timers table (loop.c) */
} csm_loop;

/* Adds loop and sim to the module table on top and the loop's internal
 * functions to internals.loop (internals: a stack index); makes the loop
 * and timer metatables the first time. */
void csm_open_loop(lua_State *L, int first, int internals);

/* The loop at idx, or NULL. */
csm_loop *csm_test_loop(lua_State *L, int idx);

/* Pushes the loop's world table (its user value: see loop.c), or nil once
 * the loop is being collected. */
void csm_loop_push_world(lua_State *L, csm_loop *loop);

/* The world holds the value at idx under key (an address of the holder's
 * own), or lets go of what it held there when idx is 0. */
void csm_loop_hold(lua_State *L, csm_loop *loop, void *key, int idx);

/* Pushes what the world holds under key (nil if nothing) and returns
 * whether it held something. */
int csm_loop_push_held(lua_State *L, csm_loop *loop, const void *key);

/* Remembers the first error of a callback (popped from the callback
 * thread) and stops the loop; its run raises it. */
void csm_loop_fail(csm_loop *loop, lua_State *T);

/* ---- machine.c: csm.machine ---- */

/* When what s ran last was a machine's (its task, its state timeout, or,
 * owner not NULL, a timer of its behaviour's: owner is the machine), pushes
 * "machine 'id' in state 'name' ran last" and returns 1; else 0. */
int csm_machine_push_blame(lua_State *L, csm_scheduler *s, const void *owner);

/* Adds builtin to the module table on top and the machine's internal
 * functions (its constructor, the driver's primitives...) to
 * internals.machine; sets the machine's methods the first time. */
void csm_open_machine(lua_State *L, int first, int internals);

#endif
