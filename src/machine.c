/* csm.machine: the core machine as Lua userdata. The methods here convert
 * arguments and call the core; lua/csm/init.lua adds the Lua methods (new,
 * the behaviours' driver, listeners, inspect) to the same method table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

/***
 * @module csm.machine
 */

/*** A machine's methods written in C.
 * @type Machine
 */

typedef struct csm_lmachine {
    csm_machine core;
    csm_loop *loop;
    int anchored;     /* its world holds a busy machine */
    int freed;
    int listened;         /* listeners are told of every transition */
    csm_slots slots;      /* of the refs table */
} csm_lmachine;

/* The user value is a box of two tables: [1] the Lua half's fields (what
 * internals.data hands out), [2] the ledger's values under integer
 * slots, which no Lua code can reach: the core holds pointers into them.
 * The machine recycles its slots itself (luaL_ref would cost a lookup of
 * its free list in the table on every receive). [3] is the active state,
 * [4] each state's behaviour and [5] the ctx of the one running, for the
 * driver, [6] the event ids by name. */
#define BOX_FIELDS 1
#define BOX_REFS 2
#define BOX_ACTIVE 3     /* the active state, or nil */
#define BOX_BEHAVIORS 4  /* per state id + 1: its behaviour, or false */
#define BOX_CTX 5        /* the ctx of the behaviour running, or nil */
#define BOX_EVENTS 6     /* event name -> id, for send_event */

/* The flags of a layout's states, for the driver. */
#define LAYOUT_EXIT 1  /* an on_exit hook runs when leaving it */
#define LAYOUT_ENTRY 2 /* an on_enter hook runs when entering it */

/* Pushes the machine at idx's fields or refs table. */
static void push_box(lua_State *L, int idx, int which)
{
    csm_getuservalue(L, idx);
    lua_rawgeti(L, -1, which);
    lua_remove(L, -2);
}
typedef struct release_ctx {
    lua_State *L;
    int refs;         /* stack index of the refs table */
    struct csm_lmachine *m;
} release_ctx;

/* Keeps the value at idx in slot of the refs table at refs. */
static void fill_slot(lua_State *L, int refs, int slot, int idx)
{
    lua_pushvalue(L, idx);
    lua_rawseti(L, refs, slot);
}

static void release(void *ud, int handle)
{
    release_ctx *r = ud;
    lua_pushnil(r->L);
    lua_rawseti(r->L, r->refs, handle);
    csm_slots_give(&r->m->slots, handle);
}

static csm_lmachine *check_machine(lua_State *L, const char *fname)
{
    csm_lmachine *m = csm_testudata(L, 1, CSM_UP_MACHINE_MT, CSM_MACHINE_MT);
    if (m == NULL)
        csm_selferror(L, 1, fname, "csm machine expected");
    return m;
}

/* Its world holds a machine with work, and lets an idle one go: a busy
 * machine lives as long as its world. */
static void sync_anchor(lua_State *L, csm_lmachine *m, int idx)
{
    int busy = csm_machine_busy(&m->core);
    if (busy && !m->anchored) {
        csm_loop_hold(L, m->loop, m, idx);
        m->anchored = 1;
    } else if (!busy && m->anchored) {
        csm_loop_hold(L, m->loop, m, 0);
        m->anchored = 0;
    }
}

static int result(lua_State *L, csm_lmachine *m, int rc)
{
    sync_anchor(L, m, 1);
    if (rc == CSM_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (rc == CSM_ECLOSED)
        return csm_refuse(L, csm_strerror(rc), rc);
    if (rc == CSM_ENOMEM)
        return csm_error(L, "csm: %s", csm_strerror(rc));
    return csm_refuse(L, m->core.error, rc);
}

/* ---- the driver: a machine's events through its hooks ----
 *
 * Each transition: cancel the ctx of the state left, switch state (the
 * core re-arms the timeout), then start the new state's behaviour on a
 * pooled coroutine with a new ctx. A transition with a guard to ask, an
 * on_exit or on_enter hook, or listeners to tell goes through the Lua half
 * (lua/csm/driver.lua) up to the behaviour's start. What the driver needs
 * of lua/csm/ctx.lua and lua/csm/driver.lua is in its kit, its upvalue. */

/* A ctx's array part (lua/csm/ctx.lua): its machine, its coroutine (false
 * once its behaviour returned) and whether it is cancelled. */
enum { CTX_SM = 1, CTX_CO, CTX_CANCELLED };

/* The drive closure's upvalues: the kit's items (tasks.kit of
 * lua/csm/ctx.lua, then two of lua/csm/driver.lua), the keys the driver
 * reads (pushed from here, they need no interning), and a spare
 * coroutine: the last one whose behaviour returned at once, taken before
 * the pool. */
enum {
    UP_CTX_MT = 1, /* the ctx metatable */
    UP_DONE,       /* what a pooled coroutine yields when its job returned */
    UP_IDLE,       /* the pool of idle coroutines, a sequence */
    UP_BODY,       /* a pooled coroutine's function */
    UP_FINISH,     /* finish(task, ok, first): a resume that did not end in DONE */
    UP_CANCEL,     /* cancel(ctx): a ctx with blocked or spawned tasks */
    UP_WAKE,       /* wake(ctx): a message arrived */
    UP_SLOW,       /* slow(sm, event, to, guarded, from) -> entered, data */
    UP_FATAL,      /* fatal(sm, err): a hook or the driver raised */
    UP_KIT_N = UP_FATAL,
    UP_BLOCKED, UP_SPAWNED,
    UP_SPARE,
    UP_N = UP_SPARE
};
static const char *const drive_keys[] = {
    [UP_BLOCKED] = "blocked", [UP_SPAWNED] = "spawned",
};
#define UP(i) lua_upvalueindex(i)

#define DRIVE_BATCH 64 /* events per turn, so one busy machine cannot starve the rest */

static int csm_resume(lua_State *co, lua_State *from, int nargs, int *nres)
{
#if LUA_VERSION_NUM >= 504
    return lua_resume(co, from, nargs, nres);
#else
    (void)from;
    int status = lua_resume(co, nargs);
    *nres = lua_gettop(co);
    return status;
#endif
}

/* Whether the table at idx has a non-nil value under the key upvalue up. */
static int has_raw(lua_State *L, int idx, int up)
{
    lua_pushvalue(L, UP(up));
    lua_rawget(L, idx);
    int has = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return has;
}

/* Pushes the ctx of the behaviour running (nil if none) and forgets it;
 * box at idx. */
static void take_ctx(lua_State *L, int box)
{
    lua_rawgeti(L, box, BOX_CTX);
    lua_pushnil(L);
    lua_rawseti(L, box, BOX_CTX);
}

/* Cancels the ctx of the state being left: at once when nothing of it
 * waits, through the kit's cancel otherwise. */
static void cancel_ctx(lua_State *L, int box)
{
    take_ctx(L, box);
    int ctx = lua_gettop(L);
    if (lua_istable(L, ctx)) {
        if (has_raw(L, ctx, UP_BLOCKED) || has_raw(L, ctx, UP_SPAWNED)) {
            lua_pushvalue(L, UP(UP_CANCEL));
            lua_pushvalue(L, ctx);
            lua_call(L, 1, 0);
        } else {
            lua_pushboolean(L, 1);
            lua_rawseti(L, ctx, CTX_CANCELLED);
        }
    }
    lua_pop(L, 1);
}

/* Pushes an idle coroutine (the spare, one from the pool, or a new one on
 * the pooled body) and returns it. */
static lua_State *idle_coroutine(lua_State *L)
{
    lua_State *co = lua_tothread(L, UP(UP_SPARE));
    if (co != NULL) {
        lua_pushvalue(L, UP(UP_SPARE));
        lua_pushnil(L);
        lua_replace(L, UP(UP_SPARE));
        return co;
    }
    int idle = UP(UP_IDLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, idle);
    if (n > 0) {
        lua_rawgeti(L, idle, n);
        co = lua_tothread(L, -1);
        lua_pushnil(L);
        lua_rawseti(L, idle, n);
        /* only what a coroutine that yielded DONE left there (the pool is csm's own) */
        if (co != NULL && lua_status(co) == LUA_YIELD && lua_gettop(co) == 0)
            return co;
        lua_pop(L, 1);
    }
    co = lua_newthread(L);
    lua_pushvalue(L, UP(UP_BODY));
    lua_xmove(L, co, 1);
    return co;
}

/* Starts the behaviour of state to, if it has one, with data (the active
 * state, at idx data); self at 1, its user value (the box) at box. */
static void start_behavior(lua_State *L, csm_lmachine *m, int to, int box, int data)
{
    int top = lua_gettop(L);
    lua_rawgeti(L, box, BOX_BEHAVIORS);
    lua_rawgeti(L, -1, to + 1);
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        m->core.waiting = 0;
        lua_settop(L, top);
        return;
    }
    int behavior = lua_gettop(L);
    lua_createtable(L, CTX_CANCELLED, 0); /* the ctx: { sm, co }, and cancelled once left */
    int ctx = behavior + 1;
    lua_pushvalue(L, UP(UP_CTX_MT));
    lua_setmetatable(L, ctx);
    lua_pushvalue(L, 1);
    lua_rawseti(L, ctx, CTX_SM);
    lua_State *co = idle_coroutine(L);
    int thread = ctx + 1;
    lua_pushvalue(L, thread);
    lua_rawseti(L, ctx, CTX_CO);
    lua_pushvalue(L, ctx);
    lua_rawseti(L, box, BOX_CTX);
    m->core.waiting = 1;
    /* body(ctx, behavior, sm, data) */
    lua_pushvalue(L, ctx);
    lua_pushvalue(L, behavior);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, data);
    lua_xmove(L, co, 4);
    int nres = 0;
    int status = csm_resume(co, L, 4, &nres);
    if (status == LUA_YIELD && nres == 1 && lua_topointer(co, -1) == lua_topointer(L, UP(UP_DONE))) {
        /* the behaviour returned without waiting: its coroutine is the
         * spare (a ctx's own finished is never read: only spawned tasks' are) */
        lua_pop(co, 1);
        lua_pushboolean(L, 0);
        lua_rawseti(L, ctx, CTX_CO);
        if (lua_isnil(L, UP(UP_SPARE))) {
            lua_pushvalue(L, thread);
            lua_replace(L, UP(UP_SPARE));
        }
    } else {
        /* it waits, yielded elsewhere or raised: finish(ctx, ok, first) */
        lua_pushvalue(L, UP(UP_FINISH));
        lua_pushvalue(L, ctx);
        if (status == LUA_YIELD) {
            lua_pushboolean(L, 1);
            if (nres > 0) {
                lua_pushvalue(co, -nres);
                lua_xmove(co, L, 1);
                lua_pop(co, nres);
            } else {
                lua_pushnil(L);
            }
        } else {
            lua_pushboolean(L, 0);
            lua_xmove(co, L, 1);
        }
        lua_call(L, 3, 0);
    }
    lua_settop(L, top);
}

/* drive(sm): runs up to DRIVE_BATCH of a machine's events, then wakes its
 * behaviour if a message arrived. Called protected by on_drive. */
static int drive(lua_State *L)
{
    csm_lmachine *m = lua_touserdata(L, 1);
    csm_getuservalue(L, 1);
    int box = lua_gettop(L);
    for (int i = 0; i < DRIVE_BATCH && !m->core.closed; i++) {
        int event, to, guarded;
        if (!csm_machine_next(&m->core, &event, &to, &guarded))
            break;
        int from = m->core.state;
        const uint8_t *flags = m->core.layout->flags;
        if (guarded || (flags[from] & LAYOUT_EXIT) || (flags[to] & LAYOUT_ENTRY) || m->listened) {
            lua_pushvalue(L, UP(UP_SLOW));
            lua_pushvalue(L, 1);
            lua_pushinteger(L, event);
            lua_pushinteger(L, to);
            lua_pushboolean(L, guarded);
            lua_pushinteger(L, from);
            lua_call(L, 5, 2);
            if (lua_toboolean(L, -2) && !m->core.closed)
                start_behavior(L, m, to, box, box + 2);
        } else {
            cancel_ctx(L, box);
            if (m->core.closed)
                break;
            if (csm_machine_enter(&m->core, to) != CSM_OK)
                return csm_error(L, "csm: %s", csm_strerror(CSM_ENOMEM));
            csm_machine_count(&m->core, from, event);
            lua_rawgeti(L, box, BOX_ACTIVE);
            start_behavior(L, m, to, box, box + 1);
        }
        lua_settop(L, box);
    }
    if (!m->core.closed && m->core.wake_due) {
        m->core.wake_due = 0;
        lua_rawgeti(L, box, BOX_CTX);
        if (lua_istable(L, -1)) {
            lua_pushvalue(L, UP(UP_WAKE));
            lua_insert(L, -2);
            lua_call(L, 1, 0);
        }
    }
    return 0;
}

/* Runs the driver for a machine with events or a wake waiting. */
static void on_drive(csm_task *task)
{
    csm_lmachine *m = (csm_lmachine *)((char *)task - offsetof(csm_machine, task));
    csm_binding *b = m->loop->binding;
    lua_State *T = csm_callback_state(b);
    if (!m->anchored || b->drive_ref == LUA_NOREF)
        return;
    if (!csm_loop_push_held(T, m->loop, m)) {
        lua_pop(T, 1);
        return;
    }
    int self = lua_gettop(T);
    m->core.driving = 1;
    csm_push_anchored(T, &b->drive_ref);
    lua_pushvalue(T, self);
    int status = csm_pcall(b, 1, 0);
    if (status != 0) {
        /* a hook raised: the machine closes with the error, kept for
         * sm:error() (the kit's fatal) */
        int err = lua_gettop(T);
        csm_push_anchored(T, &b->drive_ref);
        if (lua_getupvalue(T, -1, UP_FATAL) != NULL && lua_isfunction(T, -1)) {
            lua_pushvalue(T, self);
            lua_pushvalue(T, err);
            status = csm_pcall(b, 2, 0);
        }
        if (status != 0) {
            fprintf(stderr, "csm: machine driver failed: %s\n", lua_tostring(T, err));
            csm_machine_close(&m->core);
        }
    }
    m->core.driving = 0;
    if (!m->core.closed && (m->core.queue_len > 0 || m->core.wake_due))
        csm_scheduler_post(m->core.scheduler, &m->core.task);
    sync_anchor(T, m, self);
    lua_settop(T, self - 1);
}

/* The integer argument at idx, within [lo, hi]; raises naming fname. */
static int int_arg(lua_State *L, int idx, const char *fname, const char *what, double lo, double hi)
{
    double x;
    if (!csm_is_integer_in(L, idx, lo, hi, &x))
        csm_error(L, "%s: %s out of range", fname, what);
    return (int)x;
}

static void check_limit(lua_State *L, int idx, const char *name, double lo, double *out)
{
    lua_getfield(L, idx, name);
    if (!lua_isnil(L, -1) && !csm_is_integer_in(L, -1, lo, 9007199254740992.0, out))
        csm_error(L, "csm.new: limits.%s must be an integer >= %d and <= 2^53", name, (int)lo);
    lua_pop(L, 1);
}

/* ---- layouts: what machines of one shape share ---- */

/* A layout userdata holds a reference to a core layout; its user value is
 * the table of each state's behaviour (state id + 1 -> function or
 * false), which every machine on it shares. */
typedef struct csm_llayout {
    csm_layout *core;
} csm_llayout;

static csm_llayout *check_layout(lua_State *L, int idx, const char *fname)
{
    csm_llayout *l = luaL_testudata(L, idx, CSM_LAYOUT_MT);
    if (l == NULL || l->core == NULL)
        csm_argerror(L, idx, fname, idx, "layout", "csm layout expected");
    return l;
}

static int layout_arg(lua_State *L, int idx, const char *fname, const char *what, int count)
{
    return int_arg(L, idx, fname, what, 0, count - 1);
}

/* core.layout(nstates, nevents) -> layout, with the built-in table and timeouts */
static int layout_new(lua_State *L)
{
    /* the table has nstates * nevents cells */
    int nstates = int_arg(L, 1, "csm.new", "the number of states", 0, 4096);
    int nevents = int_arg(L, 2, "csm.new", "the number of events", 0, 4096);
    csm_llayout *l = csm_newuserdata(L, sizeof *l);
    l->core = NULL;
    luaL_setmetatable(L, CSM_LAYOUT_MT);
    l->core = csm_layout_new(nstates, nevents);
    if (l->core == NULL)
        return csm_error(L, "csm: %s", csm_strerror(CSM_ENOMEM));
    lua_createtable(L, l->core->nstates, 0);
    for (int i = 1; i <= l->core->nstates; i++) {
        lua_pushboolean(L, 0);
        lua_rawseti(L, -2, i);
    }
    csm_setuservalue(L, -2);
    return 1;
}

static int layout_gc(lua_State *L)
{
    csm_llayout *l = lua_touserdata(L, 1);
    csm_layout_release(l->core);
    l->core = NULL;
    return 0;
}

/* layout:_set_transition(from, event, to or nil, guarded) */
static int layout_set_transition(lua_State *L)
{
    const char *fname = "layout:_set_transition";
    csm_layout *l = check_layout(L, 1, fname)->core;
    int from = layout_arg(L, 2, fname, "state id", l->nstates);
    int event = layout_arg(L, 3, fname, "event id", l->nevents);
    if (lua_isnil(L, 4)) {
        csm_layout_clear_transition(l, from, event);
        return 0;
    }
    int to = layout_arg(L, 4, fname, "state id", l->nstates);
    if (csm_layout_set_transition(l, from, event, to, lua_toboolean(L, 5)) != CSM_OK)
        return csm_error(L, "csm: %s", csm_strerror(CSM_ENOMEM));
    return 0;
}

/* layout:_set_timeout(state, seconds, event or nil) */
static int layout_set_timeout(lua_State *L)
{
    const char *fname = "layout:_set_timeout";
    csm_layout *l = check_layout(L, 1, fname)->core;
    int state = layout_arg(L, 2, fname, "state id", l->nstates);
    if (lua_type(L, 3) != LUA_TNUMBER)
        return csm_error(L, "%s: seconds must be a number", fname);
    double seconds = lua_tonumber(L, 3);
    int event = lua_isnil(L, 4) ? -1 : layout_arg(L, 4, fname, "event id", l->nevents);
    csm_layout_set_timeout(l, state, seconds, event);
    return 0;
}

/* layout:_set_state(state, on_exit, on_enter, behavior or false): whether
 * the state has hooks, and the behaviour the driver starts on entry. */
static int layout_set_state(lua_State *L)
{
    const char *fname = "layout:_set_state";
    csm_layout *l = check_layout(L, 1, fname)->core;
    int state = layout_arg(L, 2, fname, "state id", l->nstates);
    l->flags[state] = (uint8_t)((lua_toboolean(L, 3) ? LAYOUT_EXIT : 0) |
                                (lua_toboolean(L, 4) ? LAYOUT_ENTRY : 0));
    csm_getuservalue(L, 1);
    if (lua_isfunction(L, 5))
        lua_pushvalue(L, 5);
    else
        lua_pushboolean(L, 0);
    lua_rawseti(L, -2, state + 1);
    return 0;
}

/* core.machine(loop, layout, limits) -> machine */
static int machine_new(lua_State *L)
{
    csm_loop *loop = csm_test_loop(L, 1);
    if (loop == NULL)
        return csm_argerror(L, 1, "core.machine", 1, "loop", "csm loop expected");
    csm_llayout *layout = check_layout(L, 2, "core.machine");
    csm_limits limits = csm_default_limits;
    if (lua_istable(L, 3)) {
        double rank_window = (double)limits.rank_window, peers = (double)limits.peers_per_rank,
               idbytes = (double)limits.identity_bytes, queue = (double)limits.queue;
        check_limit(L, 3, "rank_window", 1, &rank_window);
        check_limit(L, 3, "peers_per_rank", 1, &peers);
        check_limit(L, 3, "identity_bytes", 1, &idbytes);
        check_limit(L, 3, "queue", 2, &queue);
        limits.rank_window = (uint64_t)rank_window;
        limits.peers_per_rank = (size_t)peers;
        limits.identity_bytes = (size_t)idbytes;
        limits.queue = (size_t)queue;
    }
    csm_lmachine *m = csm_newuserdata(L, sizeof *m);
    memset(m, 0, sizeof *m);
    if (loop->closed)
        return csm_error(L, "csm.new: option 'loop' is closed");
    m->loop = loop;
    m->freed = 1;
    luaL_setmetatable(L, CSM_MACHINE_MT);
    lua_createtable(L, 6, 0);
    lua_newtable(L);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "loop");
    lua_rawseti(L, -2, BOX_FIELDS);
    lua_newtable(L);
    lua_rawseti(L, -2, BOX_REFS);
    /* [BOX_ACTIVE], [BOX_CTX] and [BOX_EVENTS] stay nil for now, in the
     * array part made for 6 */
    csm_getuservalue(L, 2);
    lua_rawseti(L, -2, BOX_BEHAVIORS);
    csm_setuservalue(L, -2);
    /* the world knows its machines, for loop:close */
    csm_loop_push_world(L, loop);
    lua_getfield(L, -1, "machines");
    lua_pushvalue(L, -3);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    if (csm_machine_init_shared(&m->core, &loop->scheduler, layout->core, &limits, on_drive) !=
        CSM_OK)
        return csm_error(L, "csm: %s", csm_strerror(CSM_ENOMEM));
    m->freed = 0; /* from here on __gc frees what was made */
    return 1;
}

static int machine_free(lua_State *L)
{
    csm_lmachine *m = lua_touserdata(L, 1);
    if (m->freed)
        return 0;
    m->freed = 1;
    push_box(L, 1, BOX_REFS);
    release_ctx r = {L, lua_gettop(L), m};
    csm_machine_free(&m->core, release, &r);
    csm_slots_clear(&m->slots);
    if (m->anchored) {
        m->anchored = 0;
        csm_loop_hold(L, m->loop, m, 0);
    }
    return 0;
}

static int event_arg(lua_State *L, csm_lmachine *m, int idx, const char *fname)
{
    return int_arg(L, idx, fname, "event id", 0, m->core.nevents - 1);
}

static int state_arg(lua_State *L, csm_lmachine *m, int idx, const char *fname)
{
    return int_arg(L, idx, fname, "state id", 0, m->core.nstates - 1);
}

/* ---- set-up, used by csm.new ---- */

/* sm:_take_ctx() -> the ctx of the behaviour running, or nil; the machine
 * forgets it. */
static int machine_take_ctx(lua_State *L)
{
    check_machine(L, "sm:_take_ctx");
    csm_getuservalue(L, 1);
    take_ctx(L, lua_gettop(L));
    return 1;
}

/* sm:_set_events(t): the event ids by name that send_event reads. */
static int machine_set_events(lua_State *L)
{
    check_machine(L, "sm:_set_events");
    csm_getuservalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, BOX_EVENTS);
    return 0;
}

/* sm:_set_listened(boolean): whether the machine has listeners. */
static int machine_set_listened(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_set_listened");
    m->listened = lua_toboolean(L, 2);
    return 0;
}

/* ---- the driver's primitives ---- */

static int machine_data(lua_State *L)
{
    check_machine(L, "sm:_data");
    push_box(L, 1, BOX_FIELDS);
    return 1;
}

/*** Queues event, a state machine event name (a built-in one or one of the
 * machine's own); the loop handles it in order, never re-entrantly.
 * @function Machine:send_event
 * @tparam string event
 * @return true, or nil, message and code ("closed", "queue")
 */
static int machine_send_event(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:send_event");
    lua_settop(L, 2);
    if (lua_type(L, 2) != LUA_TSTRING)
        return csm_argerror(L, 2, "sm:send_event", 1, "event", "string expected");
    push_box(L, 1, BOX_EVENTS);
    if (!lua_istable(L, 3))
        return csm_error(L, "sm:send_event: the machine's event names are missing");
    lua_pushvalue(L, 2);
    lua_rawget(L, 3);
    if (lua_isnil(L, 4))
        return csm_error(L, "sm:send_event: unknown event '%s'", lua_tostring(L, 2));
    /* the core checks the id against the machine's events */
    int event = lua_type(L, 4) == LUA_TNUMBER ? (int)lua_tointeger(L, 4) : -1;
    lua_settop(L, 2);
    int rc = csm_machine_send(&m->core, event);
    if (rc == CSM_EINDEX)
        return csm_error(L, "sm:send_event: event '%s' has an id out of range", lua_tostring(L, 2));
    return result(L, m, rc);
}

static int machine_enter(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_enter");
    int to = state_arg(L, m, 2, "sm:_enter");
    int event = event_arg(L, m, 3, "sm:_enter");
    if (m->core.closed)
        return 0;
    int from = m->core.state;
    if (csm_machine_enter(&m->core, to) != CSM_OK)
        return csm_error(L, "csm: %s", csm_strerror(CSM_ENOMEM));
    csm_machine_count(&m->core, from, event);
    return 0;
}

/* sm:_taken(from * nevents + event) -> how often that edge was followed */
static int machine_taken(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_taken");
    int edge = int_arg(L, 2, "sm:_taken", "edge", 0,
                       (double)m->core.nstates * m->core.nevents - 1);
    lua_pushinteger(L, (lua_Integer)csm_machine_taken(&m->core, edge / m->core.nevents,
                                                      edge % m->core.nevents));
    return 1;
}

static int machine_drop(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_drop");
    csm_machine_drop(&m->core);
    return 0;
}

static int machine_close(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_close");
    if (!m->freed)
        csm_machine_close(&m->core);
    sync_anchor(L, m, 1);
    return 0;
}

/*** Whether the machine was closed (by close, or after a bug).
 * @function Machine:closed
 * @treturn boolean
 */
static int machine_closed(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:closed");
    lua_pushboolean(L, m->core.closed);
    return 1;
}

/* ---- the machine's API ---- */

/*** Starts the machine: queues start (stopped -> starting).
 * @function Machine:start
 * @return true, or nil, message and code ("closed" once closed)
 */
static int machine_start(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:start");
    return result(L, m, csm_machine_send(&m->core, CSM_EV_START));
}

/*** Empties the queue and queues stop; the machine goes through stopping
 * to stopped and tells its listeners. Every state has a stop transition
 * unless the machine's transitions removed it; a stopped or stopping
 * machine has nothing to do.
 * @function Machine:stop
 * @return true, or nil, message and code ("closed"; "state" when the
 * current state has no stop transition)
 */
static int machine_stop(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:stop");
    int rc = csm_machine_stop(&m->core);
    if (rc == CSM_ESTATE) {
        /* name the state: its name is the Lua half's */
        push_box(L, 1, BOX_FIELDS);
        lua_getfield(L, -1, "state_names");
        if (lua_istable(L, -1))
            lua_rawgeti(L, -1, m->core.state + 1);
        const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
        snprintf(m->core.error, sizeof m->core.error, "no stop transition from state '%s'", name);
    }
    return result(L, m, rc);
}

/*** The current state's name.
 * @function Machine:state
 * @treturn string
 */
static int machine_state(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:state");
    push_box(L, 1, BOX_FIELDS);
    lua_getfield(L, -1, "state_names");
    if (!lua_istable(L, -1))
        return csm_error(L, "sm:state: the machine's state names are missing");
    lua_rawgeti(L, -1, m->core.state + 1);
    return 1;
}

/*** Seconds in the current state (the loop's time: virtual in a sim world).
 * @function Machine:state_time
 * @treturn number
 */
static int machine_state_time(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:state_time");
    lua_pushnumber(L, csm_scheduler_now(m->core.scheduler) - m->core.entered);
    return 1;
}

/*** Transitions made since the machine was built.
 * @function Machine:transition_count
 * @treturn integer
 */
static int machine_transition_count(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:transition_count");
    csm_push_rank(L, m->core.transitions);
    return 1;
}

/* A receive whose arguments were checked: key (keylen bytes) from the
 * argument at value_idx - 1, the value v at value_idx. */
static int receive_checked(lua_State *L, csm_lmachine *m, int kind, const char *key,
                           size_t keylen, csm_value *v, int value_idx)
{
    int slot = csm_slots_take(&m->slots);
    int stored;
    int rc = csm_machine_receive(&m->core, kind, key, keylen, v, slot, &stored, NULL, NULL);
    if (stored) {
        push_box(L, 1, BOX_REFS);
        fill_slot(L, lua_gettop(L), slot, value_idx);
        lua_pop(L, 1);
    } else {
        csm_slots_give(&m->slots, slot);
    }
    return result(L, m, rc);
}

static int receive(lua_State *L, int kind, const char *fname, int peer_idx,
                   const char *peer_name, const char *value_name)
{
    csm_lmachine *m = check_machine(L, fname);
    size_t keylen;
    const char *key = csm_check_identity(L, peer_idx, fname, peer_idx - 1, peer_name, &keylen);
    csm_value *v = csm_check_value(L, peer_idx + 1, fname, peer_idx, value_name);
    return receive_checked(L, m, kind, key, keylen, v, peer_idx + 1);
}

/*** A peer's liveness announcement for the rank in collected. Kept once
 * per peer and rank; queues liveness_check_received (once while one
 * waits) and wakes a waiting behaviour.
 * @function Machine:receive_liveness_check
 * @param peer a csm value or a non-empty string
 * @param collected a csm value
 * @return true, or nil, message and code ("stale", "far", "full",
 * "identity", "closed")
 */
static int machine_receive_liveness_check(lua_State *L)
{
    return receive(L, CSM_LIVENESS, "sm:receive_liveness_check", 2, "peer", "collected");
}

/*** A peer's proposal for the rank in proposal; kept once per peer and
 * rank, queues proposal_received.
 * @function Machine:receive_proposal
 * @param peer a csm value or a non-empty string
 * @param proposal a csm value
 * @return true, or nil, message and code, as receive_liveness_check
 */
static int machine_receive_proposal(lua_State *L)
{
    return receive(L, CSM_PROPOSALS, "sm:receive_proposal", 2, "peer", "proposal");
}

/*** A voter's vote for proposer's proposal at the vote's rank; a second,
 * different vote from the same voter at a rank is refused ("conflict").
 * Queues vote_received.
 * @function Machine:receive_vote
 * @param proposer a csm value or a non-empty string
 * @param voter a csm value or a non-empty string
 * @param vote a csm value
 * @return true, or nil, message and code ("conflict", "stale", "far",
 * "full", "identity", "closed")
 */
static int machine_receive_vote(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:receive_vote");
    size_t len, voterlen;
    csm_check_identity(L, 2, "sm:receive_vote", 1, "proposer", &len);
    const char *voter = csm_check_identity(L, 3, "sm:receive_vote", 2, "voter", &voterlen);
    csm_value *v = csm_check_value(L, 4, "sm:receive_vote", 3, "vote");
    /* the proposer is not stored, but a peer identity all the same */
    if (!m->core.closed && len > m->core.limits.identity_bytes)
        return result(L, m, csm_machine_admit(&m->core, v->rank, len, 0));
    return receive_checked(L, m, CSM_VOTES, voter, voterlen, v, 4);
}

/*** A peer's confirmation of the state it finalized; queues
 * confirmation_received.
 * @function Machine:receive_confirmation
 * @param peer a csm value or a non-empty string
 * @param confirmation a csm value
 * @return true, or nil, message and code, as receive_liveness_check
 */
static int machine_receive_confirmation(lua_State *L)
{
    return receive(L, CSM_CONFIRMATIONS, "sm:receive_confirmation", 2, "peer", "confirmation");
}

/* ---- the ledger, for behaviours ---- */

static int kind_arg(lua_State *L, int idx, const char *fname)
{
    /* only a string: lua_tostring would turn a number into one in place */
    const char *kind = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
    for (int k = 0; kind != NULL && k < CSM_NKINDS; k++)
        if (strcmp(kind, csm_kind_names[k]) == 0)
            return k;
    return csm_argerror(L, idx, fname, idx - 1, "kind",
                           "\"liveness\", \"proposals\", \"votes\" or \"confirmations\" expected");
}

/* A fresh table: identity -> clone of each value held for kind at rank. */
static int map(lua_State *L, int kind, const char *fname)
{
    csm_lmachine *m = check_machine(L, fname);
    uint64_t rank = csm_check_rank(L, 2, fname, 1, "rank");
    csm_page *page = csm_ledger_page(&m->core.ledger, rank);
    lua_createtable(L, 0, page ? (int)page->sizes[kind] : 0);
    if (page == NULL)
        return 1;
    int out = lua_gettop(L);
    push_box(L, 1, BOX_REFS);
    int refs = lua_gettop(L);
    for (csm_entry *e = page->maps[kind]; e != NULL; e = e->hh.next) {
        lua_pushlstring(L, e->key, e->keylen);
        lua_rawgeti(L, refs, e->handle);
        csm_push_clone(L, -1);
        lua_remove(L, -2);
        lua_rawset(L, out);
    }
    lua_settop(L, out);
    return 1;
}

/*** The liveness announcements held for rank: a fresh table, peer identity
 * -> a clone of the value.
 * @function Machine:liveness
 * @tparam integer rank
 * @treturn table
 */
static int machine_liveness(lua_State *L)
{
    return map(L, CSM_LIVENESS, "sm:liveness");
}

/*** The proposals held for rank, as liveness.
 * @function Machine:proposals
 * @tparam integer rank
 * @treturn table
 */
static int machine_proposals(lua_State *L)
{
    return map(L, CSM_PROPOSALS, "sm:proposals");
}

/*** The votes held for rank, as liveness (keyed by voter).
 * @function Machine:votes
 * @tparam integer rank
 * @treturn table
 */
static int machine_votes(lua_State *L)
{
    return map(L, CSM_VOTES, "sm:votes");
}

/*** The confirmations held for rank, as liveness.
 * @function Machine:confirmations
 * @tparam integer rank
 * @treturn table
 */
static int machine_confirmations(lua_State *L)
{
    return map(L, CSM_CONFIRMATIONS, "sm:confirmations");
}

/*** The value held for peer in kind's map at rank (the value itself, not a
 * clone), or nil.
 * @function Machine:get
 * @tparam string kind "liveness", "proposals", "votes" or "confirmations"
 * @tparam integer rank
 * @param peer a csm value or a non-empty string
 */
static int machine_get(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:get");
    int kind = kind_arg(L, 2, "sm:get");
    uint64_t rank = csm_check_rank(L, 3, "sm:get", 2, "rank");
    size_t keylen;
    const char *key = csm_check_identity(L, 4, "sm:get", 3, "peer", &keylen);
    csm_entry *e = csm_ledger_get(&m->core.ledger, kind, rank, key, keylen);
    if (e == NULL)
        return 0;
    push_box(L, 1, BOX_REFS);
    lua_rawgeti(L, -1, e->handle);
    return 1;
}

/*** How many entries kind's map holds at rank.
 * @function Machine:count
 * @tparam string kind
 * @tparam integer rank
 * @treturn integer
 */
static int machine_count(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:count");
    int kind = kind_arg(L, 2, "sm:count");
    uint64_t rank = csm_check_rank(L, 3, "sm:count", 2, "rank");
    lua_pushinteger(L, (lua_Integer)csm_ledger_count(&m->core.ledger, kind, rank));
    return 1;
}

/*** Stores value under peer in kind's map at rank, the value's own rank
 * ("rank" otherwise), replacing what was there: the machine's own record
 * (its vote may change from one attempt to the next), admitted by the same
 * limits as a receive; queues no event.
 * @function Machine:store
 * @tparam string kind
 * @tparam integer rank
 * @param peer a csm value or a non-empty string
 * @param value a csm value
 * @return true, or nil, message and code ("stale", "far", "full",
 * "identity", "rank", "closed")
 */
static int machine_store(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:store");
    int kind = kind_arg(L, 2, "sm:store");
    uint64_t rank = csm_check_rank(L, 3, "sm:store", 2, "rank");
    size_t keylen;
    const char *key = csm_check_identity(L, 4, "sm:store", 3, "peer", &keylen);
    csm_value *v = csm_check_value(L, 5, "sm:store", 4, "value");
    push_box(L, 1, BOX_REFS);
    int refs = lua_gettop(L);
    int slot = csm_slots_take(&m->slots);
    release_ctx r = {L, refs, m};
    int rc = csm_machine_store(&m->core, kind, rank, key, keylen, v, slot, release, &r);
    if (rc == CSM_OK)
        fill_slot(L, refs, slot, 5);
    else
        csm_slots_give(&m->slots, slot);
    return result(L, m, rc);
}

/*** Forgets every rank <= rank.
 * @function Machine:prune
 * @tparam integer rank
 * @return true, or nil, message, "closed"
 */
static int machine_prune(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:prune");
    uint64_t rank = csm_check_rank(L, 2, "sm:prune", 1, "rank");
    if (m->core.closed)
        return csm_refuse(L, csm_strerror(CSM_ECLOSED), CSM_ECLOSED);
    push_box(L, 1, BOX_REFS);
    release_ctx r = {L, lua_gettop(L), m};
    csm_ledger_prune(&m->core.ledger, rank, release, &r);
    lua_pushboolean(L, 1);
    return 1;
}

/*** The active state (the last adopted), or nil.
 * @function Machine:active_state
 */
static int machine_active_state(lua_State *L)
{
    check_machine(L, "sm:active_state");
    push_box(L, 1, BOX_ACTIVE);
    return 1;
}

/*** Adopts state as the active one and forgets every rank <= it (and,
 * going back to an older state, every rank past the new window).
 * @function Machine:set_active_state
 * @param state a csm value, or nil for none
 * @return true, or nil, message, "closed"
 */
static int machine_set_active_state(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:set_active_state");
    csm_value *v = NULL;
    if (!lua_isnil(L, 2))
        v = csm_check_value(L, 2, "sm:set_active_state", 1, "state");
    if (m->core.closed)
        return csm_refuse(L, csm_strerror(CSM_ECLOSED), CSM_ECLOSED);
    csm_getuservalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, BOX_ACTIVE);
    push_box(L, 1, BOX_REFS);
    release_ctx r = {L, lua_gettop(L), m};
    csm_machine_set_active(&m->core, v != NULL, v ? v->rank : 0, release, &r);
    lua_pushboolean(L, 1);
    return 1;
}

static void set_count(lua_State *L, const char *name, uint64_t n)
{
    csm_push_rank(L, n); /* an integer where Lua has them */
    lua_setfield(L, -2, name);
}

/* sm:_counters() -> table of the core's counters and sizes */
static int machine_counters(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_counters");
    csm_machine *c = &m->core;
    lua_newtable(L);
    set_count(L, "transitions", c->transitions);
    set_count(L, "dropped", c->dropped);
    set_count(L, "refused", c->refused);
    set_count(L, "received", c->received);
    set_count(L, "queued", c->queue_len);
    set_count(L, "ranks", c->ledger.npages);
    set_count(L, "entries", c->ledger.nentries);
    size_t sizes[CSM_NKINDS] = {0};
    for (csm_page *page = c->ledger.pages; page != NULL; page = page->hh.next)
        for (int k = 0; k < CSM_NKINDS; k++)
            sizes[k] += page->sizes[k];
    for (int k = 0; k < CSM_NKINDS; k++)
        set_count(L, csm_kind_names[k], sizes[k]);
    return 1;
}

/* sm:_ranks(kind) -> sorted array of ranks with entries of kind */
static int machine_ranks(lua_State *L)
{
    csm_lmachine *m = check_machine(L, "sm:_ranks");
    int kind = kind_arg(L, 2, "sm:_ranks");
    lua_newtable(L);
    int n = 0;
    for (csm_page *page = m->core.ledger.pages; page != NULL; page = page->hh.next) {
        if (page->sizes[kind] == 0)
            continue;
        csm_push_rank(L, page->rank);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* ---- livelocks ---- */

int csm_machine_push_blame(lua_State *L, csm_scheduler *s, const void *owner)
{
    const csm_lmachine *m = NULL;
    if (s->last_task != NULL && s->last_task_cb == on_drive)
        m = (csm_lmachine *)((char *)s->last_task - offsetof(csm_machine, task));
    else if (s->last_timer != NULL && s->last_timer_cb == csm_machine_timeout_cb())
        m = (csm_lmachine *)((char *)s->last_timer - offsetof(csm_machine, timeout));
    else
        m = owner;
    if (m == NULL)
        return 0;
    /* a busy machine is held by its world, under its address; one that is
     * gone cannot be named (nor m read: its memory may be reused) */
    csm_loop_push_held(L, (csm_loop *)s, m);
    if (!csm_testudata(L, -1, CSM_UP_MACHINE_MT, CSM_MACHINE_MT)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "a machine, since stopped, ran last");
        return 1;
    }
    int self = lua_gettop(L);
    push_box(L, self, BOX_FIELDS);
    lua_getfield(L, -1, "id");
    const char *id = "?";
    if (csm_test_value(L, -1))
        id = csm_test_value(L, -1)->identity;
    lua_getfield(L, -2, "state_names");
    const char *state = "?";
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, m->core.state + 1);
        if (lua_type(L, -1) == LUA_TSTRING)
            state = lua_tostring(L, -1);
    }
    lua_pushfstring(L, "machine '%s' in state '%s' ran last", id, state);
    lua_replace(L, self);
    lua_settop(L, self);
    return 1;
}

/* ---- module functions ---- */

/* core.set_drive(kit): what the driver needs of the Lua half (the UP_
 * indices above, to UP_KIT_N); a machine's ready task runs the driver
 * with it. */
static int set_drive(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE)
        return csm_argerror(L, 1, "set_drive", 1, "kit", "table expected");
    static const int types[] = {
        [UP_CTX_MT] = LUA_TTABLE,     [UP_DONE] = LUA_TTABLE,      [UP_IDLE] = LUA_TTABLE,
        [UP_BODY] = LUA_TFUNCTION,    [UP_FINISH] = LUA_TFUNCTION, [UP_CANCEL] = LUA_TFUNCTION,
        [UP_WAKE] = LUA_TFUNCTION,    [UP_SLOW] = LUA_TFUNCTION,   [UP_FATAL] = LUA_TFUNCTION,
    };
    csm_binding *b = csm_binding_get(L);
    for (int i = UP_CTX_MT; i <= UP_KIT_N; i++) {
        lua_rawgeti(L, 1, i);
        if (lua_type(L, -1) != types[i])
            return csm_error(L, "set_drive: kit[%d] must be a %s", i, lua_typename(L, types[i]));
    }
    for (int up = UP_BLOCKED; up < UP_SPARE; up++)
        lua_pushstring(L, drive_keys[up]);
    lua_pushnil(L); /* no spare coroutine yet */
    lua_pushcclosure(L, drive, UP_N);
    csm_unanchor(L, &b->drive_ref);
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

/* core.builtin(): the built-in states, events, transitions and timeouts,
 * and the default limits, as plain tables. */
static int builtin(lua_State *L)
{
    lua_newtable(L);
    push_names(L, csm_state_names, CSM_NSTATES);
    lua_setfield(L, -2, "states");
    push_names(L, csm_event_names, CSM_NEVENTS);
    lua_setfield(L, -2, "events");
    lua_createtable(L, (int)csm_builtin_ntransitions, 0);
    for (size_t i = 0; i < csm_builtin_ntransitions; i++) {
        const csm_transition *t = &csm_builtin_transitions[i];
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
        if (csm_builtin_timeouts[i] <= 0)
            continue;
        lua_pushnumber(L, csm_builtin_timeouts[i]);
        lua_setfield(L, -3, csm_state_names[i]);
        lua_pushstring(L, csm_event_names[csm_builtin_timeout_events[i]]);
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

/* core.metatable(): the machine metatable, for the Lua half to extend. */
static int metatable(lua_State *L)
{
    luaL_getmetatable(L, CSM_MACHINE_MT);
    return 1;
}

static const luaL_Reg constructors[] = {
    {"builtin", builtin},
    {NULL, NULL},
};

/* What only csm's own Lua half calls: kept off the machine's methods. */
static const luaL_Reg internal_functions[] = {
    {"machine", machine_new},
    {"set_drive", set_drive},
    {"metatable", metatable},
    {"data", machine_data},
    {"enter", machine_enter},
    {"layout", layout_new},
    {"set_transition", layout_set_transition},
    {"set_timeout", layout_set_timeout},
    {"set_state", layout_set_state},
    {"taken", machine_taken},
    {"drop", machine_drop},
    {"set_listened", machine_set_listened},
    {"take_ctx", machine_take_ctx},
    {"set_events", machine_set_events},
    {"close", machine_close},
    {"counters", machine_counters},
    {"ranks", machine_ranks},
    {NULL, NULL},
};

static const luaL_Reg methods[] = {
    {"send_event", machine_send_event},
    {"closed", machine_closed},
    {"start", machine_start},
    {"stop", machine_stop},
    {"state", machine_state},
    {"state_time", machine_state_time},
    {"transition_count", machine_transition_count},
    {"receive_liveness_check", machine_receive_liveness_check},
    {"receive_proposal", machine_receive_proposal},
    {"receive_vote", machine_receive_vote},
    {"receive_confirmation", machine_receive_confirmation},
    {"liveness", machine_liveness},
    {"proposals", machine_proposals},
    {"votes", machine_votes},
    {"confirmations", machine_confirmations},
    {"get", machine_get},
    {"count", machine_count},
    {"store", machine_store},
    {"prune", machine_prune},
    {"active_state", machine_active_state},
    {"set_active_state", machine_set_active_state},
    {NULL, NULL},
};

void csm_open_machine(lua_State *L, int first, int internals)
{
    csm_setfuncs(L, constructors);
    lua_pushvalue(L, internals);
    lua_newtable(L);
    csm_setfuncs(L, internal_functions);
    lua_setfield(L, -2, "machine");
    lua_pop(L, 1);
    if (!first)
        return;
    luaL_newmetatable(L, CSM_LAYOUT_MT);
    lua_pushcfunction(L, layout_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, CSM_LAYOUT_MT);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_getmetatable(L, CSM_MACHINE_MT);
    lua_newtable(L);
    csm_setfuncs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, machine_free);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, CSM_MACHINE_MT);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
