/* A libFuzzer target of the core: one sim scheduler and one to three
 * machines driven by the input bytes, read as a sequence of operations
 * (sends, transitions, receives, stores, active ranks, timer steps, runs
 * in each mode, cancellations, stops, closes, re-inits). After every operation the
 * harness checks the machines, their ledgers and the scheduler against
 * what the core promises, and aborts on the first difference.
 *
 * Input layout: byte 0 = number of machines (1 + b % 3); then per machine
 * one configuration byte (limits, extra states and events); then
 * operations, each an opcode byte (see enum fz_op) and its argument bytes.
 * Reading past the end yields zeros, so every input is valid.
 *
 * The core is compiled for this target with malloc, calloc and realloc
 * renamed to csm_fuzz_* (see CMakeLists.txt), so an operation can make one
 * of its allocations fail and the harness checks the out-of-memory paths.
 * tools/make_corpus.py writes the starting corpus in this layout. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ledger.h"
#include "machine.h"
#include "scheduler.h"
#include "value.h"

#define FZ_MACHINES 3
#define FZ_KEYMAX 600         /* longest identity the harness makes */
#define FZ_BATCH 16           /* events per drive turn (the Lua driver takes 64) */
#define FZ_STEPS 8            /* scheduler steps per step operation, at most */

#define FZ_CHECK(cond)                                                             \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "machine_fuzz: check failed: %s (line %d)\n", #cond,  \
                    __LINE__);                                                     \
            abort();                                                               \
        }                                                                          \
    } while (0)

/* The opcodes; tools/make_corpus.py mirrors these numbers. */
enum fz_op {
    FZ_SEND,          /* machine, event (taken modulo nevents) */
    FZ_START,         /* machine */
    FZ_NEXT_ENTER,    /* machine, guard byte: pop one event and take it */
    FZ_NEXT_DROP,     /* machine: pop one event and refuse it as a guard would */
    FZ_RECEIVE,       /* machine, kind, rank, key, identity */
    FZ_STORE,         /* machine, kind, rank, key, value rank, identity */
    FZ_ADMIT,         /* machine, rank, key, identity */
    FZ_SET_ACTIVE,    /* machine, has, rank */
    FZ_PRUNE,         /* machine, rank */
    FZ_STEP,          /* count, limit */
    FZ_ADVANCE,       /* limit */
    FZ_RUN_READY,
    FZ_SLEEP,         /* machine, seconds, event: a behaviour's sleep */
    FZ_CANCEL,        /* machine, which: cancel the sleep or the state timeout */
    FZ_STOP,          /* machine */
    FZ_CLOSE,         /* machine */
    FZ_REINIT,        /* machine, configuration byte: free, then init again */
    FZ_SET_TRANSITION, /* machine, from, event, to, flags */
    FZ_SET_TIMEOUT,   /* machine, state, seconds, event */
    FZ_WAITING,       /* machine, flag */
    FZ_FLOOD,         /* machine, kind, count, rank: many receives from distinct peers */
    FZ_HOOKS,         /* machine, 4 bytes: what the hooks do from now on (see behave) */
    FZ_FAIL_ALLOC,    /* n: the core's n-th allocation from now fails */
    FZ_RUN,           /* mode, budget: csm_scheduler_run, stopped after budget work */
    FZ_RUN_FOR,       /* seconds, budget: a bounded run (csm_run_*), checked every step */
    FZ_NOPS
};

typedef struct fz fz;

/* What the harness knows about one handle it gave the core. */
enum fz_hstate { FZ_GONE, FZ_PENDING, FZ_HELD };

typedef struct fz_handle {
    csm_value *value;     /* freed as soon as the handle is released */
    int state;
    int owner;            /* machine index while held */
    uint32_t seen;        /* stamp of the last ledger walk that met it */
} fz_handle;

typedef struct fz_machine {
    fz *z;
    int index;
    int live;                 /* initialized and not yet freed */
    csm_machine m;
    csm_timer sleep;          /* a behaviour's ctx:sleep, sending sleep_event */
    int sleep_event;
    uint8_t hooks[4];         /* what the hooks do, in turn (see behave) */
    unsigned hook_turn;
    size_t held;              /* handles the ledger holds, as the harness counts */
    uint64_t transitions, dropped, refused, received;
} fz_machine;

struct fz {
    const uint8_t *p;
    size_t n;
    csm_scheduler s;
    fz_machine fm[FZ_MACHINES];
    int nmachines;
    fz_handle *handles;
    size_t nhandles, caphandles;
    uint32_t stamp;
    unsigned budget;          /* work left in a run before it is stopped; 0: no run */
};

/* ---- the core's allocations ---- */

static unsigned long fz_fail_at;   /* the allocation to fail, counting down; 0: none */
static unsigned long fz_failures;  /* allocations failed so far */

static int fz_fail(void)
{
    if (fz_fail_at == 0 || --fz_fail_at > 0)
        return 0;
    fz_failures++;
    return 1;
}

void *csm_fuzz_malloc(size_t size);
void *csm_fuzz_calloc(size_t n, size_t size);
void *csm_fuzz_realloc(void *p, size_t size);

void *csm_fuzz_malloc(size_t size)
{
    return fz_fail() ? NULL : malloc(size);
}

void *csm_fuzz_calloc(size_t n, size_t size)
{
    return fz_fail() ? NULL : calloc(n, size);
}

void *csm_fuzz_realloc(void *p, size_t size)
{
    return fz_fail() ? NULL : realloc(p, size);
}

/* ---- input ---- */

static uint8_t get8(fz *z)
{
    if (z->n == 0)
        return 0;
    z->n--;
    return *z->p++;
}

static uint64_t get64(fz *z)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = (x << 8) | get8(z);
    return x;
}

static fz_machine *pick_machine(fz *z)
{
    return &z->fm[get8(z) % z->nmachines];
}

static csm_limits pick_limits(uint8_t sel, fz *z)
{
    static const uint64_t windows[] = {1, 2, 3, 4, 8, 64, 9007199254740992ULL, UINT64_MAX};
    csm_limits l = csm_default_limits;
    switch (sel & 3) {
    case 1: /* small, so every limit is reached */
        l.rank_window = 4, l.peers_per_rank = 3, l.identity_bytes = 8, l.queue = 4;
        break;
    case 2: /* the least the binding accepts */
        l.rank_window = 1, l.peers_per_rank = 1, l.identity_bytes = 1, l.queue = 2;
        break;
    case 3: {
        uint8_t a = get8(z), b = get8(z), c = get8(z);
        l.rank_window = windows[a & 7];
        l.peers_per_rank = 1 + (a >> 3) % 16;
        l.identity_bytes = 1 + (size_t)b + (b & 1) * 44; /* 1 .. 300 */
        l.queue = 2 + c % 31;
        break;
    }
    default:
        break;
    }
    return l;
}

/* A rank around the window's edges, the active rank, 0 or 2^64. */
static uint64_t pick_rank(fz *z, const csm_machine *m)
{
    uint8_t sel = get8(z);
    uint64_t small = sel >> 4;
    uint64_t active = m->has_active ? m->active_rank : 0;
    uint64_t base = m->has_active ? active + 1 : 0;
    uint64_t w = m->limits.rank_window;
    switch (sel & 15) {
    case 0: return base;
    case 1: return active;
    case 2: return base + w - 1;
    case 3: return base + w;
    case 4: return base + w + small;
    case 5: return UINT64_MAX - small;
    case 6: return small;
    case 7: return active - small;
    case 8: return get64(z);
    case 9: return (UINT64_C(1) << 63) + small - 8;
    case 10: return base + (w - 1) / 2;
    default: return base + small % w;
    }
}

static void fill(fz *z, char *buf, size_t len, uint8_t pattern, int from_input)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = from_input ? (char)get8(z) : (char)('a' + (pattern + i) % 8);
}

/* A peer identity: a small pool (so peers repeat), empty, exactly
 * identity_bytes, just over it, or arbitrary bytes. */
static size_t pick_key(fz *z, const csm_machine *m, char *buf)
{
    uint8_t sel = get8(z);
    size_t cap = m->limits.identity_bytes < 512 ? m->limits.identity_bytes : 512;
    size_t len;
    switch (sel >> 5) {
    case 0: return 0;
    case 4: len = 1 + (sel & 7); fill(z, buf, len, 0, 1); return len;
    case 5: len = cap; fill(z, buf, len, sel & 7, 0); return len;
    case 6: len = cap + 1 + (sel & 7); fill(z, buf, len, sel & 7, 0); return len;
    case 7: len = get8(z) * 2u + (sel & 1); fill(z, buf, len, 0, 1); return len;
    default: buf[0] = (char)('a' + (sel & 7)); return 1;
    }
}

/* ---- handles ---- */

static int make_handle(fz *z, uint64_t rank, const char *id, size_t len)
{
    if (z->nhandles == z->caphandles) {
        size_t cap = z->caphandles ? 2 * z->caphandles : 64;
        fz_handle *h = realloc(z->handles, cap * sizeof *h);
        FZ_CHECK(h != NULL);
        z->handles = h;
        z->caphandles = cap;
    }
    csm_value *v = malloc(csm_value_size(len));
    FZ_CHECK(v != NULL);
    v->rank = rank;
    v->len = len;
    v->has_payload = 0;
    memcpy(v->identity, id, len);
    v->identity[len] = '\0';
    fz_handle *h = &z->handles[z->nhandles];
    h->value = v;
    h->state = FZ_PENDING;
    h->owner = -1;
    h->seen = 0;
    return (int)z->nhandles++;
}

static int new_handle(fz *z, const csm_machine *m, uint64_t rank)
{
    char id[FZ_KEYMAX];
    size_t len = pick_key(z, m, id);
    if (len == 0) /* a value's identity has at least one byte */
        return make_handle(z, rank, "v", 1);
    return make_handle(z, rank, id, len);
}

static void forget_handle(fz *z, int handle)
{
    fz_handle *h = &z->handles[handle];
    free(h->value);
    h->value = NULL;
    h->state = FZ_GONE;
    h->owner = -1;
}

/* The core hands a handle back: it must be one this machine's ledger held. */
static void on_release(void *ud, int handle)
{
    fz_machine *fm = ud;
    fz *z = fm->z;
    FZ_CHECK(handle >= 0 && (size_t)handle < z->nhandles);
    FZ_CHECK(z->handles[handle].state == FZ_HELD);
    FZ_CHECK(z->handles[handle].owner == fm->index);
    FZ_CHECK(fm->held > 0);
    fm->held--;
    forget_handle(z, handle);
}

static void hold(fz_machine *fm, int handle)
{
    fz_handle *h = &fm->z->handles[handle];
    FZ_CHECK(h->state == FZ_PENDING);
    h->state = FZ_HELD;
    h->owner = fm->index;
    fm->held++;
}

/* ---- the checks ---- */

static int is_refusal(int rc)
{
    return rc == CSM_ESTALE || rc == CSM_EFAR || rc == CSM_EFULL || rc == CSM_EIDENTITY ||
           rc == CSM_ECONFLICT || rc == CSM_ERANK;
}

/* What csm_machine_admit decides, restated. */
static int expect_admit(const csm_machine *m, uint64_t rank, size_t keylen, size_t idlen)
{
    if (keylen > m->limits.identity_bytes || idlen > m->limits.identity_bytes)
        return CSM_EIDENTITY;
    if (m->has_active && rank <= m->active_rank)
        return CSM_ESTALE;
    uint64_t base = m->has_active ? m->active_rank + 1 : 0;
    if (rank - base >= m->limits.rank_window)
        return CSM_EFAR;
    return CSM_OK;
}

static int in_window(const csm_machine *m, uint64_t rank)
{
    return expect_admit(m, rank, 0, 0) == CSM_OK;
}

static int queued(const csm_machine *m, int event)
{
    for (size_t i = 0; i < m->queue_len; i++)
        if (m->queue[(m->queue_head + i) % m->queue_cap] == event)
            return 1;
    return 0;
}

static void check_ledger(fz_machine *fm)
{
    fz *z = fm->z;
    csm_machine *m = &fm->m;
    csm_ledger *l = &m->ledger;
    size_t npages = 0, nentries = 0;
    z->stamp++;
    FZ_CHECK(l->max_entries == m->limits.peers_per_rank);
    for (csm_page *r = l->pages; r != NULL; r = r->hh.next) {
        npages++;
        FZ_CHECK(csm_ledger_page(l, r->rank) == r);
        /* the bounded-memory promise: only ranks above the active one */
        if (m->has_active)
            FZ_CHECK(r->rank > m->active_rank);
        FZ_CHECK(in_window(m, r->rank));
        size_t total = 0;
        for (int kind = 0; kind < CSM_NKINDS; kind++) {
            size_t count = 0;
            for (csm_entry *e = r->maps[kind]; e != NULL; e = e->hh.next) {
                count++;
                FZ_CHECK(e->keylen <= m->limits.identity_bytes);
                FZ_CHECK(e->handle >= 0 && (size_t)e->handle < z->nhandles);
                fz_handle *h = &z->handles[e->handle];
                FZ_CHECK(h->state == FZ_HELD && h->owner == fm->index);
                FZ_CHECK(h->seen != z->stamp); /* each handle held once */
                h->seen = z->stamp;
                FZ_CHECK(e->value == h->value);
                FZ_CHECK(e->value->len <= m->limits.identity_bytes);
                FZ_CHECK(csm_ledger_get(l, kind, r->rank, e->key, e->keylen) == e);
            }
            FZ_CHECK(count == r->sizes[kind]);
            FZ_CHECK(count <= m->limits.peers_per_rank);
            FZ_CHECK(csm_ledger_count(l, kind, r->rank) == count);
            total += count;
        }
        FZ_CHECK(total > 0); /* no empty page lingers */
        nentries += total;
    }
    FZ_CHECK(npages == l->npages);
    FZ_CHECK(nentries == l->nentries);
    FZ_CHECK(nentries == fm->held); /* nothing held that the ledger lost */
}

static void check_machine(fz_machine *fm)
{
    csm_machine *m = &fm->m;
    if (!fm->live)
        return;
    FZ_CHECK(m->state >= 0 && m->state < m->nstates);
    FZ_CHECK(m->nstates >= CSM_NSTATES && m->nevents >= CSM_NEVENTS);
    FZ_CHECK(m->queue_len <= m->limits.queue);
    FZ_CHECK(m->queue_len <= m->queue_cap && m->queue_head < m->queue_cap);
    for (size_t i = 0; i < m->queue_len; i++) {
        int ev = m->queue[(m->queue_head + i) % m->queue_cap];
        FZ_CHECK(ev >= 0 && ev < m->nevents);
    }
    for (int kind = 0; kind < CSM_NKINDS; kind++)
        if (m->receive_queued[kind])
            FZ_CHECK(queued(m, m->receive_events[kind]));
    FZ_CHECK(!m->driving);
    /* waiting events or a due wake always have the task posted */
    if (!m->closed && (m->queue_len > 0 || m->wake_due))
        FZ_CHECK(m->task.queued);
    if (m->closed) {
        FZ_CHECK(m->state == CSM_STOPPED && m->queue_len == 0);
        FZ_CHECK(!m->timeout.active && !m->task.queued);
        FZ_CHECK(!m->wake_due && !csm_machine_busy(m));
    }
    FZ_CHECK(m->transitions == fm->transitions);
    FZ_CHECK(m->dropped == fm->dropped);
    FZ_CHECK(m->refused == fm->refused);
    FZ_CHECK(m->received == fm->received);
    FZ_CHECK(memchr(m->error, '\0', sizeof m->error) != NULL);
    check_ledger(fm);
}

static void check_timer(const csm_scheduler *s, const csm_timer *t)
{
    FZ_CHECK(t->scheduler == s);
    if (t->active)
        FZ_CHECK(t->slot < s->heap_len && s->heap[t->slot] == t);
}

static void check_scheduler(fz *z)
{
    csm_scheduler *s = &z->s;
    size_t armed = 0;
    FZ_CHECK(s->heap_len <= s->heap_cap);
    for (size_t i = 0; i < s->heap_len; i++) {
        const csm_timer *t = s->heap[i];
        FZ_CHECK(t->active && t->slot == i && t->scheduler == s);
        if (i > 0) {
            const csm_timer *parent = s->heap[(i - 1) / 2];
            FZ_CHECK(!(t->due < parent->due || (t->due == parent->due && t->seq < parent->seq)));
        }
    }
    size_t ready = 0;
    for (csm_task *t = s->ready.next; t != &s->ready; t = t->next) {
        FZ_CHECK(t->queued && t->next->prev == t);
        FZ_CHECK(++ready <= s->ready_len);
    }
    FZ_CHECK(ready == s->ready_len && s->batch <= s->ready_len);
    for (int i = 0; i < z->nmachines; i++) {
        fz_machine *fm = &z->fm[i];
        if (!fm->live)
            continue;
        check_timer(s, &fm->m.timeout);
        check_timer(s, &fm->sleep);
        armed += fm->m.timeout.active + fm->sleep.active;
    }
    FZ_CHECK(armed == s->heap_len); /* every armed timer is one of ours */
}

static void check_all(fz *z)
{
    check_scheduler(z);
    for (int i = 0; i < z->nmachines; i++)
        check_machine(&z->fm[i]);
}

/* ---- driving, as the binding and the Lua driver do ---- */

/* The event the built-in behaviour of each state sends when it succeeds. */
static const int happy[CSM_NSTATES] = {
    [CSM_STOPPED] = -1,
    [CSM_STARTING] = CSM_EV_INIT_COMPLETE,
    [CSM_LOADING] = CSM_EV_SYNC_COMPLETE,
    [CSM_COLLECTING] = CSM_EV_COLLECTION_DONE,
    [CSM_LIVENESS_CHECK] = CSM_EV_PROVER_SIGNAL,
    [CSM_PROVING] = CSM_EV_PROOF_COMPLETE,
    [CSM_PUBLISHING] = CSM_EV_PUBLISH_COMPLETE,
    [CSM_VOTING] = CSM_EV_QUORUM_REACHED,
    [CSM_FINALIZING] = CSM_EV_AGGREGATION_DONE,
    [CSM_VERIFYING] = CSM_EV_VERIFICATION_DONE,
    [CSM_STOPPING] = CSM_EV_CLEANUP_COMPLETE,
};

static void send(fz_machine *fm, int event)
{
    csm_machine *m = &fm->m;
    int closed = m->closed, full = m->queue_len >= m->limits.queue;
    int bad = event < 0 || event >= m->nevents;
    size_t qlen = m->queue_len;
    unsigned long failures = fz_failures;
    int rc = csm_machine_send(m, event);
    if (rc == CSM_ENOMEM)
        FZ_CHECK(fz_failures != failures && m->queue_len == qlen);
    else
        FZ_CHECK(rc == (closed ? CSM_ECLOSED : bad ? CSM_EINDEX : full ? CSM_EQUEUE : CSM_OK));
    if (rc != CSM_OK)
        FZ_CHECK(m->queue_len == qlen);
}

static void set_active(fz_machine *fm, int has, uint64_t rank)
{
    csm_machine *m = &fm->m;
    csm_machine_set_active(m, has, rank, on_release, fm);
    FZ_CHECK(m->has_active == (has != 0) && m->active_rank == (has ? rank : 0));
}

static void store(fz_machine *fm, int kind, uint64_t rank, int handle, const char *key,
                  size_t keylen)
{
    fz *z = fm->z;
    csm_machine *m = &fm->m;
    const csm_value *v = z->handles[handle].value;
    int expect = m->closed ? CSM_ECLOSED : expect_admit(m, rank, keylen, v->len);
    csm_entry *held = csm_ledger_get(&m->ledger, kind, rank, key, keylen);
    size_t count = csm_ledger_count(&m->ledger, kind, rank);
    unsigned long failures = fz_failures;
    int rc = csm_machine_store(m, kind, rank, key, keylen, v, handle, on_release, fm);
    if (rc == CSM_ENOMEM)
        FZ_CHECK(fz_failures != failures && expect == CSM_OK);
    else if (expect != CSM_OK)
        FZ_CHECK(rc == expect);
    else if (v->rank != rank)
        FZ_CHECK(rc == CSM_ERANK); /* a value is stored at its own rank */
    else if (held == NULL && count >= m->limits.peers_per_rank)
        FZ_CHECK(rc == CSM_EFULL);
    else
        FZ_CHECK(rc == CSM_OK);
    if (rc == CSM_OK) {
        FZ_CHECK(in_window(m, rank)); /* admitted within the window */
        hold(fm, handle);
        FZ_CHECK(csm_ledger_get(&m->ledger, kind, rank, key, keylen)->handle == handle);
    } else {
        forget_handle(z, handle);
    }
    if (is_refusal(rc))
        fm->refused++;
}

/* The next of the machine's hook bytes; all zeros (the default) take
 * the happy path. */
static uint8_t hook(fz_machine *fm)
{
    return fm->hooks[fm->hook_turn++ % 4];
}

/* One transition's hooks, from hook byte d: unless bit 1, the behaviour of
 * the new state sends its success event; bit 2: it sends one more event;
 * bit 3: entering collecting records its own liveness; 0xf0: a hook closes
 * the machine. Leaving verifying adopts the next rank. */
static void behave(fz_machine *fm, int from, int event, int to, uint8_t d)
{
    csm_machine *m = &fm->m;
    fz *z = fm->z;
    if ((d & 0xf0) == 0xf0) {
        csm_machine_close(m);
        return;
    }
    m->waiting = to != CSM_STOPPED;
    if (to < CSM_NSTATES && !(d & 2) && happy[to] >= 0)
        send(fm, happy[to]);
    if (d & 4)
        send(fm, hook(fm) % m->nevents);
    if (from == CSM_VERIFYING && event == CSM_EV_VERIFICATION_DONE)
        set_active(fm, 1, m->has_active ? m->active_rank + 1 : 0);
    if (to == CSM_COLLECTING && (d & 8)) {
        uint64_t rank = m->has_active ? m->active_rank + 1 : 0;
        store(fm, CSM_LIVENESS, rank, make_handle(z, rank, "self", 4), "self", 4);
    }
}

/* Pops one event and takes or drops it. Returns 0 when none was left. */
static int next(fz_machine *fm, int refuse, int hooks)
{
    csm_machine *m = &fm->m;
    int event = -1, to = -1, guarded = 0, from = m->state;
    size_t before = m->queue_len;
    int got = csm_machine_next(m, &event, &to, &guarded);
    size_t popped = before - m->queue_len;
    FZ_CHECK(m->queue_len <= before);
    fm->dropped += popped - (size_t)got;
    if (!got)
        return 0;
    FZ_CHECK(event >= 0 && event < m->nevents && to >= 0 && to < m->nstates);
    FZ_CHECK(csm_machine_target(m, from, event) == to);
    if (guarded && refuse) {
        csm_machine_drop(m);
        fm->dropped++;
        return 1;
    }
    uint8_t d = hooks ? hook(fm) : 2;
    FZ_CHECK(!m->closed);
    unsigned long failures = fz_failures;
    int rc = csm_machine_enter(m, to);
    fm->transitions++;
    if (rc != CSM_OK) {
        /* the binding raises the error and the driver closes the machine */
        FZ_CHECK(rc == CSM_ENOMEM && fz_failures != failures);
        FZ_CHECK(m->state == to && !m->timeout.active);
        csm_machine_close(m);
        return 1;
    }
#ifdef FZ_TRACE /* build with -DFZ_TRACE to see the walk an input takes */
    fprintf(stderr, "machine %d at %g: %s --%s--> %s\n", fm->index, m->entered,
            from < CSM_NSTATES ? csm_state_names[from] : "extra",
            event < CSM_NEVENTS ? csm_event_names[event] : "extra",
            to < CSM_NSTATES ? csm_state_names[to] : "extra");
#endif
    FZ_CHECK(m->state == to);
    if (m->layout->timeouts[to] > 0 && m->layout->timeout_events[to] >= 0)
        FZ_CHECK(m->timeout.active && m->timeout.due >= m->scheduler->now);
    else
        FZ_CHECK(!m->timeout.active);
    behave(fm, from, event, to, d);
    return 1;
}

/* Inside a run, counts one piece of work and stops the run when its
 * budget is spent (a machine whose timeouts keep re-arming never idles). */
static void spend(fz *z)
{
    if (z->budget > 0 && --z->budget == 0)
        csm_scheduler_stop(&z->s);
}

/* The machine's task: runs a batch of events, as the binding's on_drive
 * around the Lua driver does. */
static void drive(csm_task *task)
{
    fz_machine *fm = (fz_machine *)((char *)task - offsetof(fz_machine, m.task));
    csm_machine *m = &fm->m;
    FZ_CHECK(fm->live && !m->closed);
    spend(fm->z);
    m->driving = 1;
    for (int i = 0; i < FZ_BATCH && !m->closed; i++) {
        if (!next(fm, hook(fm) & 1, 1))
            break;
    }
    if (!m->closed)
        m->wake_due = 0;
    m->driving = 0;
    if (!m->closed && (m->queue_len > 0 || m->wake_due))
        csm_scheduler_post(m->scheduler, &m->task);
    FZ_CHECK(!m->closed || !m->task.queued);
}

static void on_sleep(csm_timer *timer)
{
    fz_machine *fm = (fz_machine *)((char *)timer - offsetof(fz_machine, sleep));
    FZ_CHECK(fm->live);
    spend(fm->z);
    send(fm, fm->sleep_event);
}

/* ---- set-up ---- */

/* Another live machine than fm; with layout, one on that layout. */
static fz_machine *sharer(fz *z, fz_machine *fm, const csm_layout *layout)
{
    for (int i = 0; i < FZ_MACHINES; i++) {
        fz_machine *o = &z->fm[i];
        if (o != fm && o->live && (layout == NULL || o->m.layout == layout))
            return o;
    }
    return NULL;
}

static void init_machine(fz *z, fz_machine *fm, uint8_t config)
{
    csm_limits limits = pick_limits(config, z);
    /* 3: fewer than the built-in ones, which init raises to those */
    int nstates = ((config >> 2) & 3) == 3 ? 1 : CSM_NSTATES + ((config >> 2) & 3);
    int nevents = ((config >> 4) & 3) == 3 ? 0 : CSM_NEVENTS + ((config >> 4) & 3);
    memset(fm, 0, sizeof *fm);
    fm->z = z;
    fm->index = (int)(fm - z->fm);
    unsigned long failures = fz_failures;
    /* 0x40: share the layout of another live machine, as machines of one
     * shape do */
    fz_machine *other = (config & 0x40) ? sharer(z, fm, NULL) : NULL;
    int rc = other ? csm_machine_init_shared(&fm->m, &z->s, other->m.layout, &limits, drive)
                   : csm_machine_init(&fm->m, &z->s, nstates, nevents, &limits, drive);
    if (rc != CSM_OK) { /* init has freed what it made; the machine stays unused */
        FZ_CHECK(rc == CSM_ENOMEM && fz_failures != failures);
        FZ_CHECK(!fm->m.task.queued && !fm->m.timeout.active && fm->m.layout == NULL);
        return;
    }
    csm_timer_init(&z->s, &fm->sleep, on_sleep);
    fm->live = 1;
    FZ_CHECK(fm->m.state == CSM_STOPPED && !fm->m.closed);
}

static void free_machine(fz_machine *fm)
{
    if (!fm->live)
        return;
    csm_timer_close(&fm->sleep);
    csm_machine_free(&fm->m, on_release, fm);
    FZ_CHECK(fm->held == 0); /* every handle released, exactly once */
    FZ_CHECK(fm->m.ledger.npages == 0 && fm->m.ledger.nentries == 0);
    FZ_CHECK(!fm->m.task.queued && !fm->m.timeout.active);
    fm->live = 0;
}

static double pick_seconds(fz *z)
{
    uint8_t sel = get8(z);
    switch (sel & 7) {
    case 0: return 0;
    case 1: return -1;
    case 2: return 1e-9;
    case 3: return INFINITY;
    case 4: return NAN;
    case 5: return 1e300;
    default: return (double)(sel >> 3) * 0.5;
    }
}

/* ---- the operations ---- */

/* After a receive: the handle is held or released, and the harness's own
 * counters follow the core's. */
static void account_receive(fz *z, fz_machine *fm, int handle, int stored, int rc)
{
    if (stored)
        hold(fm, handle);
    else
        forget_handle(z, handle);
    if (is_refusal(rc))
        fm->refused++;
    if (rc == CSM_OK)
        fm->received++;
}

static void op_receive(fz *z, fz_machine *fm, int kind)
{
    csm_machine *m = &fm->m;
    char key[FZ_KEYMAX];
    uint64_t rank = pick_rank(z, m);
    size_t keylen = pick_key(z, m, key);
    int handle = new_handle(z, m, rank);
    const csm_value *v = z->handles[handle].value;
    int expect = m->closed ? CSM_ECLOSED : expect_admit(m, rank, keylen, v->len);
    csm_entry *held = NULL;
    size_t count = 0;
    int was_queued = m->receive_queued[kind];
    size_t qlen = m->queue_len;
    if (expect == CSM_OK) {
        held = csm_ledger_get(&m->ledger, kind, rank, key, keylen);
        count = csm_ledger_count(&m->ledger, kind, rank);
    }
    int conflict = held != NULL && kind == CSM_VOTES &&
                   !(held->value->len == v->len &&
                     memcmp(held->value->identity, v->identity, v->len) == 0);
    int stored = -1;
    unsigned long failures = fz_failures;
    int rc = csm_machine_receive(m, kind, key, keylen, v, handle, &stored, on_release, fm);
    int failed = fz_failures != failures;
    FZ_CHECK(stored == 0 || stored == 1);
    if (rc == CSM_ENOMEM)
        FZ_CHECK(failed && expect == CSM_OK);
    else if (expect != CSM_OK)
        FZ_CHECK(rc == expect);
    else if (conflict)
        FZ_CHECK(rc == CSM_ECONFLICT);
    else if (held == NULL && count >= m->limits.peers_per_rank)
        FZ_CHECK(rc == CSM_EFULL);
    else
        FZ_CHECK(rc == CSM_OK);
    /* the first entry per peer is kept */
    FZ_CHECK(stored == (rc == CSM_OK && held == NULL));
    account_receive(z, fm, handle, stored, rc);
    if (rc == CSM_OK) {
        FZ_CHECK(in_window(m, rank));
        if (!was_queued && qlen < m->limits.queue && !failed)
            FZ_CHECK(m->receive_queued[kind] && m->queue_len == qlen + 1);
        else
            FZ_CHECK(m->receive_queued[kind] == was_queued && m->queue_len == qlen);
        if (m->waiting)
            FZ_CHECK(m->wake_due && m->task.queued);
    } else {
        FZ_CHECK(m->queue_len == qlen);
    }
}

static void op_flood(fz *z, fz_machine *fm)
{
    csm_machine *m = &fm->m;
    int kind = get8(z) % CSM_NKINDS;
    size_t count = 1 + get8(z) % 64;
    uint64_t rank = pick_rank(z, m);
    for (size_t i = 0; i < count; i++) {
        char key[8];
        size_t keylen = (size_t)snprintf(key, sizeof key, "p%zu", i);
        int handle = new_handle(z, m, rank);
        int stored;
        int rc = csm_machine_receive(m, kind, key, keylen, z->handles[handle].value, handle,
                                     &stored, on_release, fm);
        account_receive(z, fm, handle, stored, rc);
    }
}

static void op_step(fz *z)
{
    uint8_t sel = get8(z);
    int count = 1 + sel % FZ_STEPS;
    double limit = (sel & 0x80) ? -1 : z->s.now + (double)((sel >> 4) & 7);
    for (int i = 0; i < count; i++) {
        if (!csm_scheduler_step(&z->s, limit))
            break;
        check_all(z);
    }
}

/* csm_scheduler_run in a mode picked by the input; a stop ends it once
 * its budget of work is spent. */
static void op_run(fz *z)
{
    uint8_t sel = get8(z);
    int mode = sel % 3;
    z->budget = 1 + (sel >> 2);
    double before = z->s.now;
    int more = csm_scheduler_run(&z->s, mode);
    FZ_CHECK(more == csm_scheduler_pending(&z->s));
    FZ_CHECK(z->s.now >= before);
    if (mode == CSM_RUN_DEFAULT && !z->s.stopped)
        FZ_CHECK(!more); /* it only returns early when stopped */
    if (mode == CSM_RUN_NOWAIT)
        FZ_CHECK(z->s.now == before);
    z->budget = 0;
}

/* A bounded run of a few virtual seconds: time never passes the limit,
 * and stands at it when the run ends without a stop. */
static void op_run_for(fz *z)
{
    uint8_t sel = get8(z);
    double seconds = (double)(sel & 15) * 0.25;
    z->budget = 1 + get8(z);
    csm_run run;
    FZ_CHECK(csm_run_begin(&run, &z->s, seconds) == CSM_OK);
    double limit = z->s.now + seconds;
    while (csm_run_step(&run)) {
        FZ_CHECK(z->s.now <= limit);
        check_all(z);
    }
    csm_run_end(&run);
    FZ_CHECK(z->s.stopped ? z->s.now <= limit : z->s.now == limit);
    z->budget = 0;
}

static void run_op(fz *z, uint8_t op)
{
    fz_machine *fm = NULL;
    if (op != FZ_STEP && op != FZ_ADVANCE && op != FZ_RUN_READY && op != FZ_RUN &&
        op != FZ_RUN_FOR) {
        fm = pick_machine(z);
        if (!fm->live && op != FZ_REINIT)
            return;
    }
    csm_machine *m = fm ? &fm->m : NULL;
    switch (op) {
    case FZ_SEND: {
        /* ids past the machine's events too: the core refuses them */
        uint8_t sel = get8(z);
        send(fm, (sel & 0x80) ? m->nevents + (sel & 0x3f) - 8 : sel % m->nevents);
        break;
    }
    case FZ_START:
        send(fm, CSM_EV_START);
        break;
    case FZ_NEXT_ENTER:
    case FZ_NEXT_DROP: {
        int refuse = op == FZ_NEXT_DROP || (get8(z) & 1);
        m->driving = 1;
        next(fm, refuse, 0);
        m->driving = 0;
        if (!m->closed && m->queue_len > 0)
            csm_scheduler_post(m->scheduler, &m->task);
        break;
    }
    case FZ_RECEIVE:
        op_receive(z, fm, get8(z) % CSM_NKINDS);
        break;
    case FZ_STORE: {
        char key[FZ_KEYMAX];
        int kind = get8(z) % CSM_NKINDS;
        uint64_t rank = pick_rank(z, m);
        size_t keylen = pick_key(z, m, key);
        uint64_t value_rank = pick_rank(z, m);
        store(fm, kind, rank, new_handle(z, m, value_rank), key, keylen);
        break;
    }
    case FZ_ADMIT: {
        char key[FZ_KEYMAX];
        uint64_t rank = pick_rank(z, m);
        size_t keylen = pick_key(z, m, key);
        size_t idlen = pick_key(z, m, key);
        int expect = expect_admit(m, rank, keylen, idlen);
        FZ_CHECK(csm_machine_admit(m, rank, keylen, idlen) == expect);
        if (expect != CSM_OK)
            fm->refused++;
        break;
    }
    case FZ_SET_ACTIVE: {
        int has = (get8(z) & 3) != 0;
        set_active(fm, has, pick_rank(z, m));
        break;
    }
    case FZ_PRUNE:
        csm_ledger_prune(&m->ledger, pick_rank(z, m), on_release, fm);
        break;
    case FZ_STEP:
        op_step(z);
        break;
    case FZ_ADVANCE: {
        uint8_t sel = get8(z);
        /* advance is for when nothing is ready */
        if (z->s.ready_len == 0)
            csm_scheduler_advance(&z->s, (sel & 1) ? -1 : z->s.now + (double)(sel >> 1));
        break;
    }
    case FZ_RUN_READY:
        csm_scheduler_run_ready(&z->s);
        break;
    case FZ_SLEEP: {
        double seconds = pick_seconds(z);
        fm->sleep_event = get8(z) % m->nevents;
        unsigned long failures = fz_failures;
        if (!m->closed) {
            int rc = csm_timer_start(&fm->sleep, seconds);
            FZ_CHECK(rc == CSM_OK || (rc == CSM_ENOMEM && fz_failures != failures));
        }
        break;
    }
    case FZ_CANCEL: {
        csm_timer *t = (get8(z) & 1) ? &m->timeout : &fm->sleep;
        csm_timer_stop(t);
        FZ_CHECK(!t->active);
        break;
    }
    case FZ_STOP: {
        int closed = m->closed, full = m->limits.queue == 0;
        int no_stop = m->state != CSM_STOPPED && m->state != CSM_STOPPING &&
                      csm_machine_target(m, m->state, CSM_EV_STOP) < 0;
        size_t qlen = m->queue_len;
        int rc = csm_machine_stop(m);
        FZ_CHECK(rc == (closed ? CSM_ECLOSED : no_stop ? CSM_ESTATE : full ? CSM_EQUEUE : CSM_OK));
        if (rc == CSM_ESTATE)
            FZ_CHECK(m->queue_len == qlen); /* refused: nothing changed */
        if (rc == CSM_OK)
            FZ_CHECK(m->queue_len == 1 && m->queue[m->queue_head] == CSM_EV_STOP);
        break;
    }
    case FZ_CLOSE:
        csm_timer_stop(&fm->sleep); /* the behaviour's sleep ends with its ctx */
        csm_machine_close(m);
        break;
    case FZ_REINIT: {
        uint8_t config = get8(z);
        free_machine(fm);
        init_machine(z, fm, config);
        break;
    }
    case FZ_SET_TRANSITION: {
        int from = get8(z) % m->nstates, event = get8(z) % m->nevents;
        int to = get8(z) % m->nstates;
        uint8_t flags = get8(z);
        if (flags & 4) /* an id out of range: refused, nothing changes */
            to = (flags & 8) ? -1 - (flags >> 4) : m->nstates + (flags >> 4);
        /* a machine sharing the layout keeps its table: the change copies it */
        fz_machine *other = sharer(z, fm, m->layout);
        int before = other ? csm_machine_target(&other->m, from, event) : 0;
        unsigned long failures = fz_failures;
        int rc = (flags & 1) ? csm_machine_clear_transition(m, from, event)
                             : csm_machine_set_transition(m, from, event, to, flags & 2);
        if (rc == CSM_ENOMEM) /* copying or growing the layout failed: nothing changes */
            FZ_CHECK(fz_failures != failures);
        else
            FZ_CHECK(rc == ((flags & 5) == 4 ? CSM_EINDEX : CSM_OK));
        if (rc == CSM_OK)
            FZ_CHECK(csm_machine_target(m, from, event) == ((flags & 1) ? -1 : to));
        if (other)
            FZ_CHECK(csm_machine_target(&other->m, from, event) == before);
        break;
    }
    case FZ_SET_TIMEOUT: {
        int state = get8(z) % m->nstates;
        double seconds = pick_seconds(z);
        uint8_t ev = get8(z);
        csm_machine_set_timeout(m, state, seconds, (ev & 1) ? -1 : (ev >> 1) % m->nevents);
        break;
    }
    case FZ_WAITING:
        m->waiting = get8(z) & 1;
        break;
    case FZ_FLOOD:
        op_flood(z, fm);
        break;
    case FZ_FAIL_ALLOC:
        fz_fail_at = 1 + get8(z) % 8;
        break;
    case FZ_RUN:
        op_run(z);
        break;
    case FZ_RUN_FOR:
        op_run_for(z);
        break;
    case FZ_HOOKS:
        for (int i = 0; i < 4; i++)
            fm->hooks[i] = get8(z);
        fm->hook_turn = 0;
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz *z = calloc(1, sizeof *z);
    FZ_CHECK(z != NULL);
    z->p = data;
    z->n = size;
    fz_fail_at = 0;
    fz_failures = 0;
    z->nmachines = 1 + get8(z) % FZ_MACHINES;
    csm_scheduler_init_sim(&z->s, 1);
    for (int i = 0; i < z->nmachines; i++)
        init_machine(z, &z->fm[i], get8(z));
    check_all(z);
    while (z->n > 0) {
        run_op(z, get8(z) % FZ_NOPS);
        check_all(z);
    }
    fz_fail_at = 0;
    for (int i = 0; i < z->nmachines; i++)
        free_machine(&z->fm[i]);
    FZ_CHECK(z->s.heap_len == 0 && z->s.ready_len == 0);
    csm_scheduler_close(&z->s);
    for (size_t i = 0; i < z->nhandles; i++)
        FZ_CHECK(z->handles[i].state == FZ_GONE && z->handles[i].value == NULL);
    free(z->handles);
    free(z);
    return 0;
}
