/* csm.loop and csm.sim: the real loop (on luv's loop) and
 * virtual-time worlds; csm.timer: what loop:after returns. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "private.h"

/***
 * @module csm
 */

typedef struct csm_ltimer {
    csm_timer timer;
    csm_loop *loop;
    int anchored;         /* the world holds the timer while it is armed */
    int slot;             /* where: W[0][2 * slot - 1], its function at [2 * slot] */
    const void *owner;    /* the machine whose behaviour armed it, or NULL */
} csm_ltimer;

/* What a loop holds is in its user value, the world table W:
 *   [1] head, [2] tail, [3..] the FIFO of functions loop:_post queued;
 *   W.error     the first error a callback raised;
 *   W.machines  its machines (weak keys), for loop:close;
 *   W[0]        the timers table: each armed timer and its function, in
 *               slots the loop recycles (an array: cheaper than a key per
 *               timer; and an integer key costs less to find than a name);
 *   W[light(p)] a busy machine's userdata, p its address.
 * Nothing of a sim world's is anchored in the registry, so a world dropped
 * with timers armed and machines busy is collected whole. The registry's
 * weak map (worlds_key) finds W from the loop's address while it lives. */
static char worlds_key;
#define W_TIMERS 0

void csm_loop_push_world(lua_State *L, csm_loop *loop)
{
    lua_pushlightuserdata(L, &worlds_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, loop);
    lua_rawget(L, -2);
    lua_remove(L, -2);
}

void csm_loop_hold(lua_State *L, csm_loop *loop, void *key, int idx)
{
    if (idx != 0)
        idx = lua_absindex(L, idx);
    csm_loop_push_world(L, loop);
    if (lua_istable(L, -1)) {
        lua_pushlightuserdata(L, key);
        if (idx != 0)
            lua_pushvalue(L, idx);
        else
            lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pop(L, 1);
}

int csm_loop_push_held(lua_State *L, csm_loop *loop, const void *key)
{
    csm_loop_push_world(L, loop);
    if (!lua_istable(L, -1))
        return 0; /* nil stays pushed */
    lua_pushlightuserdata(L, (void *)key); /* only a key: never written through */
    lua_rawget(L, -2);
    lua_remove(L, -2);
    return !lua_isnil(L, -1);
}

csm_loop *csm_test_loop(lua_State *L, int idx)
{
    return csm_testudata(L, idx, CSM_UP_LOOP_MT, CSM_LOOP_MT);
}

static csm_loop *check_loop(lua_State *L, const char *fname)
{
    csm_loop *loop = csm_test_loop(L, 1);
    if (loop == NULL)
        csm_selferror(L, 1, fname, "csm loop expected");
    return loop;
}

void csm_loop_fail(csm_loop *loop, lua_State *T)
{
    csm_loop_push_world(T, loop);
    if (lua_istable(T, -1)) {
        lua_getfield(T, -1, "error");
        if (lua_isnil(T, -1)) {
            lua_pushvalue(T, -3);
            lua_setfield(T, -3, "error");
        }
        lua_pop(T, 1);
    }
    lua_pop(T, 2);
    csm_scheduler_stop(&loop->scheduler);
}

/* Pushes the error a callback left and returns 1 (the loop forgets it), or
 * returns 0 with nothing pushed. */
static int take_failure(lua_State *L, csm_loop *loop)
{
    csm_loop_push_world(L, loop);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, "error");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 2);
        return 0;
    }
    lua_pushnil(L);
    lua_setfield(L, -3, "error");
    lua_remove(L, -2);
    return 1;
}

static void on_deferred(csm_task *task);
static void on_ltimer(csm_timer *timer);

/* Raises, naming fname, when the run stopped because no virtual time
 * passed in the world's bound of steps, with what ran last. */
static void raise_livelock(lua_State *L, csm_loop *loop, const char *fname)
{
    csm_scheduler *s = &loop->scheduler;
    if (!s->livelocked)
        return;
    s->livelocked = 0;
    const void *owner = s->last_timer_cb == on_ltimer ? loop->last_owner : NULL;
    if (!csm_machine_push_blame(L, s, owner)) {
        if (s->last_task != NULL && s->last_task_cb == on_deferred)
            lua_pushliteral(L, "the loop's posted functions (ctx wake-ups) ran last");
        else if (s->last_timer != NULL && s->last_timer_cb == on_ltimer)
            lua_pushliteral(L, "a loop:after callback ran last");
        else
            lua_pushliteral(L, "nothing of csm's ran last");
    }
    char steps[32];
    snprintf(steps, sizeof steps, "%llu", (unsigned long long)s->instant_limit);
    csm_error(L, "%s: no virtual time passed in %s steps at t = %f s; %s (csm.sim{steps_per_instant "
                 "= n} sets the bound)",
              fname, steps, s->now, lua_tostring(L, -1));
}

/* Raises the error a callback left, if any. */
static void raise_failure(lua_State *L, csm_loop *loop)
{
    if (take_failure(L, loop))
        csm_raise(L);
}

/* ---- loop:_post(fn): Lua functions run in order on the ready list ---- */

/* The loop's user value is a FIFO table: [1] head, [2] tail, then the
 * functions at [3..]. */
static void on_deferred(csm_task *task)
{
    csm_loop *loop = (csm_loop *)((char *)task - offsetof(csm_loop, deferred));
    csm_binding *b = loop->binding;
    lua_State *T = csm_callback_state(b);
    csm_loop_push_world(T, loop);
    if (!lua_istable(T, -1)) {
        lua_pop(T, 1);
        return;
    }
    int fifo = lua_gettop(T);
    lua_rawgeti(T, fifo, 1);
    lua_rawgeti(T, fifo, 2);
    lua_Integer head = lua_tointeger(T, -2), tail = lua_tointeger(T, -1);
    lua_pop(T, 2);
    lua_Integer end = tail;
    while (head < end && !loop->scheduler.stopped) {
        lua_rawgeti(T, fifo, (int)head);
        lua_pushnil(T);
        lua_rawseti(T, fifo, (int)head);
        head++;
        lua_pushinteger(T, head);
        lua_rawseti(T, fifo, 1);
        if (csm_pcall(b, 0, 0) != 0)
            csm_loop_fail(loop, T);
    }
    lua_rawgeti(T, fifo, 1);
    lua_rawgeti(T, fifo, 2);
    head = lua_tointeger(T, -2);
    tail = lua_tointeger(T, -1);
    lua_pop(T, 2);
    if (head == tail) {
        /* drained: restart the indexes */
        lua_pushinteger(T, 3);
        lua_rawseti(T, fifo, 1);
        lua_pushinteger(T, 3);
        lua_rawseti(T, fifo, 2);
    } else if (!loop->closed) {
        csm_scheduler_post(&loop->scheduler, &loop->deferred);
    }
    lua_pop(T, 1);
}

static int loop_post(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:_post");
    if (lua_type(L, 2) != LUA_TFUNCTION)
        return csm_argerror(L, 2, "post", 1, "fn", "function expected");
    if (loop->closed)
        return 0; /* a wake-up for a closed world's machines: nobody waits */
    csm_getuservalue(L, 1);
    lua_rawgeti(L, -1, 2);
    lua_Integer tail = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int)tail);
    lua_pushinteger(L, tail + 1);
    lua_rawseti(L, -2, 2);
    csm_scheduler_post(&loop->scheduler, &loop->deferred);
    return 0;
}

/* ---- making loops ---- */

static csm_loop *new_loop(lua_State *L)
{
    csm_loop *loop = csm_newuserdata(L, sizeof *loop);
    memset(loop, 0, sizeof *loop);
    loop->binding = csm_binding_get(L);
    loop->deferred.cb = on_deferred;
    lua_createtable(L, 4, 2);
    lua_pushinteger(L, 3);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, 3);
    lua_rawseti(L, -2, 2);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "machines");
    lua_newtable(L);
    lua_rawseti(L, -2, W_TIMERS);
    /* the weak map: loop address -> world table */
    lua_pushlightuserdata(L, &worlds_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, loop);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    csm_setuservalue(L, -2);
    return loop;
}

/* ---- the real loop: csm's scheduler woken through luv ----
 *
 * The real loop runs on luv's loop through two of luv's own handles, made
 * with luv's Lua API: a timer ("kick") armed for the earliest csm timer and
 * an idle ("spin") started while tasks are ready. csm keeps no libuv
 * handle of its own there, so luv can walk and close every handle it sees.
 * A handle a luv program closed is made anew the next time csm needs it.
 * The table the loop anchors (luv_ref) holds uv (the luv module), kick and
 * spin, their callbacks (on_kick, on_spin) and a sentinel per handle (see
 * push_handle). */

/* Pushes field name of the loop's luv table. */
static void push_luv_field(lua_State *T, csm_loop *loop, const char *name)
{
    csm_push_anchored(T, &loop->luv_ref);
    lua_getfield(T, -1, name);
    lua_remove(T, -2);
}

/* Pushes luv's function name (uv.name). */
static void push_uv(lua_State *T, csm_loop *loop, const char *name)
{
    push_luv_field(T, loop, "uv");
    lua_getfield(T, -1, name);
    lua_remove(T, -2);
}

/* Calls method name of the handle on top with nargs arguments above it
 * (all popped), protected; returns whether it returned a true value. */
static int handle_call(lua_State *T, const char *name, int nargs)
{
    lua_getfield(T, -1 - nargs, name);
    lua_insert(T, -2 - nargs);
    int ok = lua_pcall(T, nargs + 1, 1, 0) == 0 && lua_toboolean(T, -1);
    lua_pop(T, 1);
    return ok;
}

/* The sentinel of a handle: made just after it, so Lua's closing
 * finalizes it first (finalizers run newest first) and marks luv gone
 * before luv's handles go. A sentinel replaced with its handle is let go
 * of without marking anything. */
typedef struct luv_sentinel {
    csm_loop *loop;
} luv_sentinel;

static int sentinel_gc(lua_State *L)
{
    luv_sentinel *sentinel = lua_touserdata(L, 1);
    if (sentinel->loop != NULL)
        sentinel->loop->luv_gone = 1;
    return 0;
}

/* Pushes the loop's handle name ("kick" or "spin"), making it anew with
 * uv.maker when there is none or a luv program closed it. Returns 0 for
 * the one already there, 1 for a new one (not started), -1 when none
 * could be made (nothing pushed). */
static int push_handle(lua_State *T, csm_loop *loop, const char *name, const char *maker)
{
    push_luv_field(T, loop, name);
    if (!lua_isnil(T, -1)) {
        lua_pushvalue(T, -1);
        lua_getfield(T, -1, "is_closing");
        lua_insert(T, -2);
        if (lua_pcall(T, 1, 1, 0) == 0 && lua_type(T, -1) == LUA_TBOOLEAN && !lua_toboolean(T, -1)) {
            lua_pop(T, 1);
            return 0;
        }
        lua_pop(T, 1);
    }
    lua_pop(T, 1);
    push_uv(T, loop, maker);
    if (lua_pcall(T, 0, 1, 0) != 0 || !lua_isuserdata(T, -1)) {
        lua_pop(T, 1);
        return -1;
    }
    csm_push_anchored(T, &loop->luv_ref);
    lua_pushvalue(T, -2);
    lua_setfield(T, -2, name);
    /* the old handle's sentinel marks nothing once let go of */
    lua_pushfstring(T, "%s_sentinel", name);
    lua_pushvalue(T, -1);
    lua_rawget(T, -3);
    luv_sentinel *old = lua_touserdata(T, -1);
    if (old != NULL)
        old->loop = NULL;
    lua_pop(T, 1);
    luv_sentinel *sentinel = lua_newuserdata(T, sizeof *sentinel);
    sentinel->loop = loop;
    lua_createtable(T, 0, 1);
    lua_pushcfunction(T, sentinel_gc);
    lua_setfield(T, -2, "__gc");
    lua_setmetatable(T, -2);
    lua_rawset(T, -3);
    lua_pop(T, 1);
    return 1;
}

/* Brings the luv handles in line with what the scheduler needs: spin
 * started while tasks are ready, kick armed for the earliest timer (one
 * armed earlier is left: it fires, finds nothing due and is armed again). */
static void sync_wake(csm_loop *loop)
{
    csm_scheduler *s = &loop->scheduler;
    if (loop->closed || loop->luv_gone || loop->luv_ref == LUA_NOREF)
        return;
    lua_State *T = csm_callback_state(loop->binding);
    int top = lua_gettop(T);
    int want_spin = s->ready_len > 0;
    if (want_spin || loop->spin_on) {
        int made = push_handle(T, loop, "spin", "new_idle");
        if (made >= 0) {
            if (made)
                loop->spin_on = 0;
            if (want_spin && !loop->spin_on) {
                push_luv_field(T, loop, "on_spin");
                loop->spin_on = handle_call(T, "start", 1);
            } else if (!want_spin && loop->spin_on) {
                handle_call(T, "stop", 0);
                loop->spin_on = 0;
            }
        }
    }
    lua_settop(T, top);
    double due;
    int want_kick = csm_scheduler_next_due(s, &due);
    if (want_kick || loop->kick_at != HUGE_VAL) {
        int made = push_handle(T, loop, "kick", "new_timer");
        if (made >= 0) {
            if (made)
                loop->kick_at = HUGE_VAL;
            if (want_kick && !(loop->kick_at <= due)) {
                /* luv's timers count whole milliseconds: round up, so the
                 * kick is not early by more than libuv's clock is */
                double ms = ceil((due - csm_scheduler_now(s)) * 1000.0);
                lua_pushnumber(T, ms > 0 ? (ms < 1e15 ? ms : 1e15) : 0);
                lua_pushinteger(T, 0);
                push_luv_field(T, loop, "on_kick");
                loop->kick_at = handle_call(T, "start", 3) ? due : HUGE_VAL;
            } else if (!want_kick) {
                handle_call(T, "stop", 0);
                loop->kick_at = HUGE_VAL;
            }
        }
    }
    lua_settop(T, top);
}

static void on_wake(csm_scheduler *s)
{
    sync_wake((csm_loop *)s);
}

/* After csm ran in a luv callback: the handles are brought in line; under
 * a run of csm's, a stop or an error stops luv's loop (the run raises the
 * error); under a luv program's uv.run(), an error is raised here, so luv
 * reports it as it reports its own callbacks' errors, and the loop goes on
 * running the rest. */
static int after_drive(lua_State *L, csm_loop *loop)
{
    csm_scheduler *s = &loop->scheduler;
    sync_wake(loop);
    if (loop->runs > 0) {
        /* a callback's error stopped the scheduler too; a step of a run
         * returns once csm did something: uv.run("once") would otherwise
         * poll, blocking until the next timer (a run's deadline, say),
         * after timers that were due as it started ran */
        if (s->stopped || loop->stepping) {
            push_uv(L, loop, "stop");
            lua_call(L, 0, 0);
        }
        return 0;
    }
    s->stopped = 0; /* a loop:stop() under uv.run() stopped luv's loop itself */
    if (take_failure(L, loop))
        return csm_raise(L);
    return 0;
}

/* luv's callbacks: the loop is their upvalue. */
static int on_kick(lua_State *L)
{
    csm_loop *loop = lua_touserdata(L, lua_upvalueindex(1));
    if (loop->closed)
        return 0;
    loop->kick_at = HUGE_VAL;
    csm_scheduler_fire_due(&loop->scheduler);
    return after_drive(L, loop);
}

static int on_spin(lua_State *L)
{
    csm_loop *loop = lua_touserdata(L, lua_upvalueindex(1));
    if (loop->closed)
        return 0;
    csm_scheduler_run_batch(&loop->scheduler);
    return after_drive(L, loop);
}

/* csm.loop(): the real loop, one per Lua state, on luv's loop. */
static int loop_real(lua_State *L)
{
    csm_binding *b = csm_binding_get(L);
    if (b->real_ref != LUA_NOREF) {
        csm_push_anchored(L, &b->real_ref);
        return 1;
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "luv");
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_istable(L, -1)) {
        const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table";
        return csm_error(L,
                         "csm.loop: the real loop runs on luv's loop, and require \"luv\" failed "
                         "(Debian: apt-get install lua-luv): %s",
                         why);
    }
    int uv = lua_gettop(L);
    csm_loop *loop = new_loop(L);
    csm_scheduler_init_real(&loop->scheduler, on_wake);
    loop->kick_at = HUGE_VAL;
    loop->luv_ref = LUA_NOREF;
    luaL_setmetatable(L, CSM_LOOP_MT);
    lua_createtable(L, 0, 8);
    lua_pushvalue(L, uv);
    lua_setfield(L, -2, "uv");
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, on_kick, 1);
    lua_setfield(L, -2, "on_kick");
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, on_spin, 1);
    lua_setfield(L, -2, "on_spin");
    loop->luv_ref = csm_anchor(L, &loop->luv_ref);
    lua_pushvalue(L, -1);
    b->real_ref = csm_anchor(L, &b->real_ref);
    return 1;
}

/* Calls uv.run(mode) for a run of csm's, protected. Returns what uv.run
 * returned (1 or 0), or -1 with a message naming fname on top when luv
 * raised or refused. */
static int luv_run(lua_State *L, csm_loop *loop, const char *mode, const char *fname)
{
    sync_wake(loop);
    push_uv(L, loop, "run");
    lua_pushstring(L, mode);
    loop->runs++;
    int status = lua_pcall(L, 1, 2, 0);
    loop->runs--;
    if (status != 0 || lua_isnil(L, -2)) {
        const char *why = lua_isstring(L, -1) ? lua_tostring(L, -1) : "failed";
        lua_pushfstring(L, "%s: uv.run: %s", fname, why);
        lua_replace(L, -3);
        lua_pop(L, 1);
        return -1;
    }
    int more = lua_toboolean(L, -2);
    lua_pop(L, 2);
    return more;
}

/* csm.sim{seed = n}: a new virtual-time world. */
static int loop_sim(lua_State *L)
{
    uint64_t seed = 0, instant_limit = CSM_INSTANT_LIMIT;
    if (!lua_isnoneornil(L, 1)) {
        if (!lua_istable(L, 1))
            return csm_argerror(L, 1, "csm.sim", 1, "options", "table expected");
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            lua_pop(L, 1);
            if (lua_type(L, -1) != LUA_TSTRING || (strcmp(lua_tostring(L, -1), "seed") != 0 &&
                                                   strcmp(lua_tostring(L, -1), "steps_per_instant") != 0)) {
                const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                              : luaL_typename(L, -1);
                return csm_error(L, "csm.sim: unknown option '%s'", k);
            }
        }
        lua_getfield(L, 1, "seed");
        if (!lua_isnil(L, -1)) {
            double x;
            if (!csm_is_integer_in(L, -1, 0, 9007199254740992.0, &x)) {
                char shown[64];
                return csm_error(L,
                                 "csm.sim: option 'seed' must be an integer in [0, 2^53] "
                                 "(got %s)",
                                 lua_type(L, -1) == LUA_TNUMBER
                                     ? csm_number_text(L, -1, shown, sizeof shown)
                                     : luaL_typename(L, -1));
            }
            seed = (uint64_t)x;
        }
        lua_pop(L, 1);
        lua_getfield(L, 1, "steps_per_instant");
        if (!lua_isnil(L, -1)) {
            double x;
            if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) == HUGE_VAL)
                instant_limit = 0; /* no bound */
            else if (csm_is_integer_in(L, -1, 1, 9007199254740992.0, &x))
                instant_limit = (uint64_t)x;
            else
                return csm_error(L, "csm.sim: option 'steps_per_instant' must be an integer >= 1 "
                                    "or math.huge");
        }
        lua_pop(L, 1);
    }
    csm_loop *loop = new_loop(L);
    csm_scheduler_init_sim(&loop->scheduler, seed);
    loop->scheduler.instant_limit = instant_limit;
    luaL_setmetatable(L, CSM_LOOP_MT);
    return 1;
}

static int loop_gc(lua_State *L)
{
    csm_loop *loop = luaL_checkudata(L, 1, CSM_LOOP_MT);
    if (!loop->closed) {
        loop->closed = 1;
        csm_scheduler_close(&loop->scheduler);
        csm_unanchor(L, &loop->luv_ref);
    }
    csm_slots_clear(&loop->timer_slots);
    return 0;
}

/* ---- methods ---- */

/*** A loop: the real one (csm.loop(), libuv's default loop, shared with
 * luv) or a sim world (csm.sim{seed = n}), where time moves only when
 * nothing is runnable, jumping to the next timer.
 * @type loop
 */

/*** Seconds: virtual in a sim world, monotonic on the real loop.
 * @function loop:now
 * @treturn number
 */
static int loop_now(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:now");
    lua_pushnumber(L, csm_scheduler_now(&loop->scheduler));
    return 1;
}

/*** A random number, as math.random gives one: with no argument a float
 * in [0, 1); with n, an integer in [1, n]; with m and n, one in [m, n]. In
 * a sim world every one comes from its seed.
 * @function loop:random
 * @tparam[opt] integer m
 * @tparam[opt] integer n
 * @treturn number
 */
static int loop_random(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:random");
    int nargs = lua_gettop(L) - 1;
    double u = csm_scheduler_random(&loop->scheduler);
    if (nargs == 0) {
        lua_pushnumber(L, u);
        return 1;
    }
    double lo = 1, hi;
    const double bound = 9007199254740992.0;
    if (!csm_is_integer_in(L, 2, -bound, bound, nargs == 1 ? &hi : &lo))
        return csm_argerror(L, 2, "loop:random", 1, nargs == 1 ? "n" : "m", "integer expected");
    if (nargs >= 2 && !csm_is_integer_in(L, 3, -bound, bound, &hi))
        return csm_argerror(L, 3, "loop:random", 2, "n", "integer expected");
    if (nargs > 2)
        return csm_error(L, "loop:random: at most 2 arguments (got %d)", nargs);
    if (hi < lo)
        return csm_error(L, "loop:random: empty interval [%s, %s]",
                         csm_number_text(L, 2, (char[64]){0}, 64),
                         csm_number_text(L, nargs == 1 ? 2 : 3, (char[64]){0}, 64));
    double r = lo + floor(u * (hi - lo + 1));
#if LUA_VERSION_NUM >= 503
    lua_pushinteger(L, (lua_Integer)r);
#else
    lua_pushnumber(L, r);
#endif
    return 1;
}

/*** Whether the loop is a sim world.
 * @function loop:is_sim
 * @treturn boolean
 */
static int loop_is_sim(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:is_sim");
    lua_pushboolean(L, loop->scheduler.kind == CSM_SIM);
    return 1;
}

/*** Makes the run in progress return after the step it is in.
 * @function loop:stop
 */
static int loop_stop(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:stop");
    csm_scheduler_stop(&loop->scheduler);
    if (loop->scheduler.kind == CSM_REAL && !loop->closed) {
        push_uv(L, loop, "stop");
        lua_call(L, 0, 0);
    }
    return 0;
}

/* A method's argument n (at stack index n + 1): seconds >= 0. */
static double check_seconds(lua_State *L, int n, const char *fname, const char *name)
{
    if (lua_type(L, n + 1) != LUA_TNUMBER || !(lua_tonumber(L, n + 1) >= 0))
        csm_argerror(L, n + 1, fname, n, name, "number >= 0 expected");
    return lua_tonumber(L, n + 1);
}

/* Pushes the timers table (nil once the loop is being collected). */
static void push_timers(lua_State *L, csm_loop *loop)
{
    csm_loop_push_world(L, loop);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, W_TIMERS);
        lua_remove(L, -2);
    }
}

/* Empties slot of the timers table at idx and gives it back. */
static void free_timer_slot(lua_State *L, csm_loop *loop, int timers, int slot)
{
    lua_pushnil(L);
    lua_rawseti(L, timers, 2 * slot - 1);
    lua_pushnil(L);
    lua_rawseti(L, timers, 2 * slot);
    csm_slots_give(&loop->timer_slots, slot);
}

/* The world lets go of an armed timer t (and its function). */
static void unhold_timer(lua_State *L, csm_ltimer *t)
{
    if (!t->anchored)
        return;
    t->anchored = 0;
    push_timers(L, t->loop);
    if (lua_istable(L, -1))
        free_timer_slot(L, t->loop, lua_gettop(L), t->slot);
    lua_pop(L, 1);
}

static void on_ltimer(csm_timer *timer)
{
    csm_ltimer *t = (csm_ltimer *)timer;
    csm_binding *b = t->loop->binding;
    lua_State *T = csm_callback_state(b);
    if (!t->anchored)
        return;
    push_timers(T, t->loop);
    if (!lua_istable(T, -1)) {
        lua_pop(T, 1);
        return;
    }
    int timers = lua_gettop(T);
    t->anchored = 0;
    t->loop->last_owner = t->owner;
    /* the timer stays on the stack until its function returned */
    lua_rawgeti(T, timers, 2 * t->slot - 1);
    lua_rawgeti(T, timers, 2 * t->slot);
    free_timer_slot(T, t->loop, timers, t->slot);
    if (csm_pcall(b, 0, 0) != 0)
        csm_loop_fail(t->loop, T);
    lua_settop(T, timers - 1);
}

/* Arms a timer of loop's (the loop at index 1) calling the function at
 * index fn after seconds; owner is the machine whose behaviour arms it
 * (NULL: none). Pushes it. */
static int arm_timer(lua_State *L, csm_loop *loop, const char *fname, double seconds, int fn,
                     const void *owner)
{
    if (loop->closed)
        return csm_error(L, "%s: the loop is closed", fname);
    csm_ltimer *t = csm_newuserdata(L, sizeof *t);
    csm_timer_init(&loop->scheduler, &t->timer, on_ltimer);
    t->loop = loop;
    t->anchored = 0;
    t->owner = owner;
    csm_setmetatable(L, CSM_UP_TIMER_MT, CSM_TIMER_MT);
    lua_pushvalue(L, 1); /* the loop lives while its timer does */
    csm_setuservalue(L, -2);
    int self = lua_gettop(L);
    if (csm_timer_start(&t->timer, seconds) != CSM_OK)
        return csm_error(L, "%s: %s", fname, csm_strerror(CSM_ENOMEM));
    csm_getuservalue(L, 1);
    lua_rawgeti(L, -1, W_TIMERS);
    if (!lua_istable(L, -1))
        return csm_error(L, "%s: the loop is closed", fname);
    t->slot = csm_slots_take(&loop->timer_slots);
    lua_pushvalue(L, self);
    lua_rawseti(L, -2, 2 * t->slot - 1);
    lua_pushvalue(L, fn);
    lua_rawseti(L, -2, 2 * t->slot);
    t->anchored = 1;
    lua_settop(L, self);
    return 1;
}

/*** Calls fn once after seconds; an error fn raises stops the loop and is
 * raised by the run.
 * @function loop:after
 * @tparam number seconds >= 0
 * @tparam function fn
 * @treturn timer
 */
static int loop_after(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:after");
    double seconds = check_seconds(L, 1, "loop:after", "seconds");
    if (lua_type(L, 3) != LUA_TFUNCTION)
        return csm_argerror(L, 3, "loop:after", 2, "fn", "function expected");
    return arm_timer(L, loop, "loop:after", seconds, 3, NULL);
}

/* internal.loop.after_for(loop, seconds, fn, sm): loop:after for a timer of
 * sm's behaviour, so that a livelock it causes names sm. */
static int loop_after_for(lua_State *L)
{
    csm_loop *loop = check_loop(L, "after_for");
    double seconds = check_seconds(L, 1, "after_for", "seconds");
    if (lua_type(L, 3) != LUA_TFUNCTION)
        return csm_argerror(L, 3, "after_for", 2, "fn", "function expected");
    if (lua_type(L, 4) != LUA_TUSERDATA)
        return csm_argerror(L, 4, "after_for", 3, "sm", "machine expected");
    return arm_timer(L, loop, "loop:after", seconds, 3, lua_touserdata(L, 4));
}

/* ---- running ---- */

/* Raises, naming fname, unless a run may start: the loop is open and,
 * for the real loop, luv's loop is not running (libuv's uv_run is not
 * reentrant: no run starts inside one of its callbacks). */
static void check_runnable(lua_State *L, csm_loop *loop, const char *fname)
{
    if (loop->closed)
        csm_error(L, "%s: the loop is closed", fname);
    if (loop->scheduler.kind != CSM_REAL)
        return;
    push_uv(L, loop, "loop_mode");
    lua_call(L, 0, 1);
    if (!lua_isnil(L, -1))
        csm_error(L,
                  "%s: luv's loop is running (mode \"%s\"): a run cannot start inside one of "
                  "its callbacks",
                  fname, lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
}

static const char *const run_modes[] = {"default", "once", "nowait", NULL};

/*** Runs as libuv's uv_run does: "default" until nothing is left (or a
 * stop), "once" one iteration (after a jump to the next timer when nothing
 * is due), "nowait" one iteration without waiting.
 * @function loop:run
 * @tparam[opt="default"] string mode
 * @treturn boolean whether work remains
 */
static int loop_run(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:run");
    int mode = CSM_RUN_DEFAULT;
    if (!lua_isnoneornil(L, 2)) {
        /* lua_tostring would turn a number argument into a string in place */
        const char *m = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
        for (mode = 0; run_modes[mode] && (!m || strcmp(run_modes[mode], m)); mode++)
            ;
        if (run_modes[mode] == NULL || m == NULL)
            return csm_argerror(L, 2, "loop:run", 1, "mode",
                                "\"default\", \"once\" or \"nowait\" expected");
    }
    check_runnable(L, loop, "loop:run");
    int more;
    if (loop->scheduler.kind == CSM_REAL) {
        loop->scheduler.stopped = 0;
        more = luv_run(L, loop, run_modes[mode], "loop:run");
        loop->scheduler.stopped = 0;
        if (more < 0) {
            raise_failure(L, loop);
            return csm_raise(L);
        }
    } else {
        more = csm_scheduler_run(&loop->scheduler, mode);
    }
    raise_failure(L, loop);
    raise_livelock(L, loop, "loop:run");
    lua_pushboolean(L, more);
    return 1;
}

/* A real run's step: one iteration of luv's loop (a sim's step is the
 * scheduler's). Returns 1 to go on, 0 when luv's loop has no active handle
 * left (not even csm's: one could not be made), -1 with a message on top
 * when uv.run failed: both end the run. */
static int step_real(lua_State *L, csm_loop *loop, const char *fname)
{
    if (loop->scheduler.kind != CSM_REAL)
        return 1;
    loop->stepping = 1; /* runs do not nest: check_runnable */
    int more = luv_run(L, loop, "once", fname);
    loop->stepping = 0;
    return more;
}

/*** Runs for seconds: in a sim world, no timer past the limit fires and
 * time stands at the limit afterwards.
 * @function loop:run_for
 * @tparam number seconds
 */
static int loop_run_for(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:run_for");
    double seconds = check_seconds(L, 1, "loop:run_for", "seconds");
    check_runnable(L, loop, "loop:run_for");
    csm_run run;
    if (csm_run_begin(&run, &loop->scheduler, seconds) != CSM_OK)
        return csm_error(L, "loop:run_for: %s", csm_strerror(CSM_ENOMEM));
    int st = 1;
    while (csm_run_step(&run) && (st = step_real(L, loop, "loop:run_for")) > 0)
        ;
    csm_run_end(&run);
    raise_failure(L, loop);
    if (st < 0)
        return csm_raise(L);
    raise_livelock(L, loop, "loop:run_for");
    return 0;
}

/* Calls the predicate at idx; 1 true, 0 false, -1 raised (error on top). */
static int check_predicate(lua_State *L, int idx)
{
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 0, 1, 0) != 0)
        return -1;
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ok;
}

/*** Runs until predicate() returns true (checked after every step) or
 * timeout_seconds pass.
 * @function loop:run_until
 * @tparam function predicate
 * @tparam number timeout_seconds
 * @treturn boolean whether the predicate held
 */
static int loop_run_until(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:run_until");
    if (lua_type(L, 2) != LUA_TFUNCTION)
        return csm_argerror(L, 2, "loop:run_until", 1, "predicate", "function expected");
    double timeout = check_seconds(L, 2, "loop:run_until", "timeout_seconds");
    check_runnable(L, loop, "loop:run_until");
    /* a predicate that already holds runs nothing (and arms no deadline) */
    int ok = check_predicate(L, 2);
    if (ok == 0) {
        csm_run run;
        if (csm_run_begin(&run, &loop->scheduler, timeout) != CSM_OK)
            return csm_error(L, "loop:run_until: %s", csm_strerror(CSM_ENOMEM));
        int st = 1;
        while (ok == 0 && csm_run_step(&run) && (st = step_real(L, loop, "loop:run_until")) > 0)
            ok = check_predicate(L, 2);
        csm_run_end(&run);
        if (st < 0)
            ok = -1; /* the message is on top, as a predicate's error is */
    }
    if (ok < 0)
        return csm_raise(L);
    raise_failure(L, loop);
    raise_livelock(L, loop, "loop:run_until");
    lua_pushboolean(L, ok);
    return 1;
}

/*** Closes a sim world: closes its machines (as sm:close does), disarms its
 * timers and drops the functions it queued. Afterwards after, run,
 * run_for and run_until raise, csm.new refuses the world, and now, random
 * and close still answer. The real loop lives as long as the Lua state: it
 * cannot be closed.
 * @function loop:close
 */
static int loop_close(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:close");
    if (loop->scheduler.kind == CSM_REAL)
        return csm_error(L, "loop:close: the real loop lives as long as the Lua state (close its "
                            "machines instead)");
    if (loop->closed)
        return 0;
    csm_getuservalue(L, 1);
    int world = lua_gettop(L);
    /* its machines first: closing one may disarm timers of its own */
    lua_getfield(L, world, "machines");
    lua_newtable(L);
    int list = lua_gettop(L), n = 0;
    lua_pushnil(L);
    while (lua_next(L, list - 1) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, list, ++n);
    }
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        lua_getfield(L, -1, "close");
        if (lua_isfunction(L, -1)) {
            lua_pushvalue(L, -2);
            lua_call(L, 1, 0);
        } else {
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_settop(L, world);
    loop->closed = 1;
    csm_scheduler_stop(&loop->scheduler);
    /* then whatever else it holds: timers, and machines being collected */
    lua_rawgeti(L, world, W_TIMERS);
    int timers = lua_gettop(L);
    for (int slot = 1; lua_istable(L, timers) && slot <= loop->timer_slots.next; slot++) {
        lua_rawgeti(L, timers, 2 * slot - 1);
        csm_ltimer *t = csm_testudata(L, -1, CSM_UP_TIMER_MT, CSM_TIMER_MT);
        if (t != NULL) {
            csm_timer_stop(&t->timer);
            t->anchored = 0;
        }
        lua_pop(L, 1);
    }
    lua_newtable(L);
    lua_rawseti(L, world, W_TIMERS);
    csm_slots_clear(&loop->timer_slots);
    lua_settop(L, world);
    lua_pushnil(L);
    while (lua_next(L, world) != 0) {
        if (lua_type(L, -2) == LUA_TLIGHTUSERDATA) {
            lua_pushvalue(L, -2);
            lua_pushnil(L);
            lua_rawset(L, world); /* clearing a field during next is allowed */
        }
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_setfield(L, world, "error");
    lua_rawgeti(L, world, 2);
    lua_Integer tail = lua_tointeger(L, -1);
    lua_pop(L, 1);
    for (lua_Integer i = 3; i < tail; i++) {
        lua_pushnil(L);
        lua_rawseti(L, world, (int)i);
    }
    lua_pushinteger(L, 3);
    lua_rawseti(L, world, 1);
    lua_pushinteger(L, 3);
    lua_rawseti(L, world, 2);
    csm_scheduler_close(&loop->scheduler);
    return 0;
}

/* ---- timers ---- */

static csm_ltimer *check_timer(lua_State *L, const char *fname)
{
    csm_ltimer *t = csm_testudata(L, 1, CSM_UP_TIMER_MT, CSM_TIMER_MT);
    if (t == NULL)
        csm_selferror(L, 1, fname, "csm timer expected");
    return t;
}

/*** What loop:after returns.
 * @type timer
 */

/*** Disarms the timer; harmless when it has fired.
 * @function timer:cancel
 */
static int timer_cancel(lua_State *L)
{
    csm_ltimer *t = check_timer(L, "timer:cancel");
    csm_timer_stop(&t->timer);
    unhold_timer(L, t);
    return 0;
}

/*** Whether the timer is armed.
 * @function timer:active
 * @treturn boolean
 */
static int timer_active(lua_State *L)
{
    csm_ltimer *t = check_timer(L, "timer:active");
    lua_pushboolean(L, t->timer.active);
    return 1;
}

static int timer_gc(lua_State *L)
{
    csm_ltimer *t = lua_touserdata(L, 1);
    csm_timer_close(&t->timer);
    return 0;
}

static int loop_tostring(lua_State *L)
{
    csm_loop *loop = lua_touserdata(L, 1);
    if (loop->scheduler.kind == CSM_SIM)
        lua_pushfstring(L, "csm.sim (t=%f)", loop->scheduler.now);
    else
        lua_pushliteral(L, "csm.loop (on luv's loop)");
    return 1;
}

static const luaL_Reg loop_methods[] = {
    {"now", loop_now},
    {"random", loop_random},
    {"is_sim", loop_is_sim},
    {"stop", loop_stop},
    {"after", loop_after},
    {"run", loop_run},
    {"run_for", loop_run_for},
    {"run_until", loop_run_until},
    {"close", loop_close},
    {NULL, NULL},
};

/* What only csm's own Lua half calls. */
static const luaL_Reg internal_functions[] = {
    {"post", loop_post},
    {"after_for", loop_after_for},
    {NULL, NULL},
};

static const luaL_Reg timer_methods[] = {
    {"cancel", timer_cancel},
    {"active", timer_active},
    {NULL, NULL},
};

static const luaL_Reg constructors[] = {
    {"loop", loop_real},
    {"sim", loop_sim},
    {NULL, NULL},
};

void csm_open_loop(lua_State *L, int first, int internals)
{
    lua_pushlightuserdata(L, &worlds_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    int have = lua_istable(L, -1);
    lua_pop(L, 1);
    if (!have) {
        lua_pushlightuserdata(L, &worlds_key);
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    csm_setfuncs(L, constructors);
    lua_pushvalue(L, internals);
    lua_newtable(L);
    csm_setfuncs(L, internal_functions);
    lua_setfield(L, -2, "loop");
    lua_pop(L, 1);
    if (!first)
        return;
    luaL_newmetatable(L, CSM_LOOP_MT);
    lua_newtable(L);
    csm_setfuncs(L, loop_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, loop_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, loop_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, CSM_TIMER_MT);
    lua_newtable(L);
    csm_setfuncs(L, timer_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, timer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}
