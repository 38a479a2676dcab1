/* csm.loop and csm.sim: the real loop (libuv's default loop) and
 * virtual-time worlds; csm.timer: what loop:after returns. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "private.h"

/***
 * @module csm
 */

typedef struct csm_ltimer {
    csm_timer timer;
    csm_loop *loop;
    int self_ref;         /* anchors the timer while it is armed */
} csm_ltimer;

csm_loop *csm_test_loop(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, CSM_LOOP_MT);
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
    if (loop->error_ref == LUA_NOREF)
        loop->error_ref = csm_anchor(T, &loop->error_ref);
    else
        lua_pop(T, 1);
    csm_scheduler_stop(&loop->scheduler);
}

static int nothing(lua_State *L)
{
    (void)L;
    return 0;
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
    if (!csm_machine_push_blame(L, s)) {
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
    if (loop->error_ref == LUA_NOREF)
        return;
    /* LuaJIT keeps the callback thread as its current one until the VM is
     * entered again on L; throwing before that crashes a later trace exit
     * (LuaJIT/LuaJIT#1066) */
    lua_pushcfunction(L, nothing);
    lua_call(L, 0, 0);
    csm_push_anchored(L, &loop->error_ref);
    csm_unanchor(L, &loop->error_ref);
    lua_error(L);
}

/* ---- loop:_post(fn): Lua functions run in order on the ready list ---- */

/* The loop's user value is a FIFO table: [1] head, [2] tail, then the
 * functions at [3..]. */
static void on_deferred(csm_task *task)
{
    csm_loop *loop = (csm_loop *)((char *)task - offsetof(csm_loop, deferred));
    csm_binding *b = loop->binding;
    lua_State *T = csm_callback_state(b);
    /* the FIFO is reached through the anchored loop in the registry */
    lua_pushlightuserdata(T, loop);
    lua_rawget(T, LUA_REGISTRYINDEX);
    csm_getuservalue(T, -1);
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
        /* drained: restart the indexes and drop the anchor */
        lua_pushinteger(T, 3);
        lua_rawseti(T, fifo, 1);
        lua_pushinteger(T, 3);
        lua_rawseti(T, fifo, 2);
        lua_pushlightuserdata(T, loop);
        lua_pushnil(T);
        lua_rawset(T, LUA_REGISTRYINDEX);
    } else {
        csm_scheduler_post(&loop->scheduler, &loop->deferred);
    }
    lua_pop(T, 2);
}

static int loop_post(lua_State *L)
{
    csm_loop *loop = check_loop(L, "loop:_post");
    if (lua_type(L, 2) != LUA_TFUNCTION)
        return csm_argerror(L, 2, "post", 1, "fn", "function expected");
    csm_getuservalue(L, 1);
    lua_rawgeti(L, -1, 2);
    lua_Integer tail = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (int)tail);
    lua_pushinteger(L, tail + 1);
    lua_rawseti(L, -2, 2);
    /* anchor the loop while functions wait */
    lua_pushlightuserdata(L, loop);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    csm_scheduler_post(&loop->scheduler, &loop->deferred);
    return 0;
}

/* ---- making loops ---- */

static csm_loop *new_loop(lua_State *L)
{
    csm_loop *loop = csm_newuserdata(L, sizeof *loop);
    memset(loop, 0, sizeof *loop);
    loop->binding = csm_binding_get(L);
    loop->error_ref = LUA_NOREF;
    loop->deferred.cb = on_deferred;
    lua_createtable(L, 4, 0);
    lua_pushinteger(L, 3);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, 3);
    lua_rawseti(L, -2, 2);
    csm_setuservalue(L, -2);
    return loop;
}

/* luv keeps its loop in a luv_ctx_t (luv.h) under this registry key; the
 * loop pointer is its first field. */
#define LUV_CONTEXT_KEY "luv_context"

typedef struct luv_context {
    uv_loop_t *loop;
    lua_State *L;
    void *pcall;
    int mode;
    void *extra;
    char spare[192]; /* room should luv's context grow */
} luv_context;

/* The loop to run on: luv's when luv is already loaded, else libuv's
 * default loop, which is then offered to luv (as luv_set_loop does) so a
 * later require "luv" runs on it too. */
static uv_loop_t *shared_loop(lua_State *L, csm_binding *b, int *is_default)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LUV_CONTEXT_KEY);
    luv_context *ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    *is_default = 0;
    if (ctx != NULL && ctx->loop != NULL)
        return ctx->loop;
    *is_default = 1;
    uv_loop_t *loop = uv_default_loop();
    if (ctx == NULL) {
        ctx = lua_newuserdata(L, sizeof *ctx);
        memset(ctx, 0, sizeof *ctx);
        lua_setfield(L, LUA_REGISTRYINDEX, LUV_CONTEXT_KEY);
    }
    ctx->loop = loop;
    ctx->L = b->L;
    ctx->mode = -1;
    return loop;
}

/* csm.loop(): the real loop, one per Lua state. */
static int loop_real(lua_State *L)
{
    csm_binding *b = csm_binding_get(L);
    if (b->real_ref != LUA_NOREF) {
        csm_push_anchored(L, &b->real_ref);
        return 1;
    }
    int is_default;
    uv_loop_t *uv_loop = shared_loop(L, b, &is_default);
    csm_loop *loop = new_loop(L);
    if (csm_scheduler_init_real(&loop->scheduler, uv_loop, is_default) != CSM_OK)
        return csm_error(L, "csm.loop: cannot set up the libuv loop");
    luaL_setmetatable(L, CSM_LOOP_MT);
    lua_pushvalue(L, -1);
    b->real_ref = csm_anchor(L, &b->real_ref);
    return 1;
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
        csm_unanchor(L, &loop->error_ref);
    }
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
    return 0;
}

/* A method's argument n (at stack index n + 1): seconds >= 0. */
static double check_seconds(lua_State *L, int n, const char *fname, const char *name)
{
    if (lua_type(L, n + 1) != LUA_TNUMBER || !(lua_tonumber(L, n + 1) >= 0))
        csm_argerror(L, n + 1, fname, n, name, "number >= 0 expected");
    return lua_tonumber(L, n + 1);
}

static void on_ltimer(csm_timer *timer)
{
    csm_ltimer *t = (csm_ltimer *)timer;
    csm_binding *b = t->loop->binding;
    lua_State *T = csm_callback_state(b);
    csm_push_anchored(T, &t->self_ref);
    csm_unanchor(T, &t->self_ref);
    csm_getuservalue(T, -1);
    lua_rawgeti(T, -1, 2);
    lua_remove(T, -2);
    lua_remove(T, -2);
    if (csm_pcall(b, 0, 0) != 0)
        csm_loop_fail(t->loop, T);
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
    csm_ltimer *t = csm_newuserdata(L, sizeof *t);
    csm_timer_init(&loop->scheduler, &t->timer, on_ltimer);
    t->loop = loop;
    t->self_ref = LUA_NOREF;
    luaL_setmetatable(L, CSM_TIMER_MT);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, 2);
    csm_setuservalue(L, -2);
    if (csm_timer_start(&t->timer, seconds) != CSM_OK)
        return csm_error(L, "loop:after: %s", csm_strerror(CSM_ENOMEM));
    lua_pushvalue(L, -1);
    t->self_ref = csm_anchor(L, &t->self_ref);
    return 1;
}

/* ---- running ---- */

static void check_open(lua_State *L, csm_loop *loop, const char *fname)
{
    if (loop->closed)
        csm_error(L, "%s: the loop is closed", fname);
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
    check_open(L, loop, "loop:run");
    int more = csm_scheduler_run(&loop->scheduler, mode);
    raise_failure(L, loop);
    raise_livelock(L, loop, "loop:run");
    lua_pushboolean(L, more);
    return 1;
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
    check_open(L, loop, "loop:run_for");
    csm_run run;
    if (csm_run_begin(&run, &loop->scheduler, seconds) != CSM_OK)
        return csm_error(L, "loop:run_for: %s", csm_strerror(CSM_ENOMEM));
    while (csm_run_step(&run))
        ;
    csm_run_end(&run);
    raise_failure(L, loop);
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
    check_open(L, loop, "loop:run_until");
    /* a predicate that already holds runs nothing (and arms no deadline) */
    int ok = check_predicate(L, 2);
    if (ok == 0) {
        csm_run run;
        if (csm_run_begin(&run, &loop->scheduler, timeout) != CSM_OK)
            return csm_error(L, "loop:run_until: %s", csm_strerror(CSM_ENOMEM));
        while (ok == 0 && csm_run_step(&run))
            ok = check_predicate(L, 2);
        csm_run_end(&run);
    }
    if (ok < 0)
        return lua_error(L);
    raise_failure(L, loop);
    raise_livelock(L, loop, "loop:run_until");
    lua_pushboolean(L, ok);
    return 1;
}

/* ---- timers ---- */

static csm_ltimer *check_timer(lua_State *L, const char *fname)
{
    csm_ltimer *t = luaL_testudata(L, 1, CSM_TIMER_MT);
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
    csm_unanchor(L, &t->self_ref);
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
        lua_pushliteral(L, "csm.loop (libuv default loop)");
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
    {NULL, NULL},
};

/* What only csm's own Lua half calls. */
static const luaL_Reg internal_functions[] = {
    {"post", loop_post},
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
