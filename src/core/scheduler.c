#include "scheduler.h"

#include <math.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "err.h"

/* ---- random numbers: splitmix64 seeds xoshiro256** ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void seed_rng(csm_scheduler *s, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

double csm_scheduler_random(csm_scheduler *s)
{
    uint64_t *r = s->rng;
    uint64_t result = rotl(r[1] * 5, 7) * 9;
    uint64_t t = r[1] << 17;
    r[2] ^= r[0];
    r[3] ^= r[1];
    r[1] ^= r[2];
    r[0] ^= r[3];
    r[2] ^= t;
    r[3] = rotl(r[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

/* ---- set-up ---- */

static void init_common(csm_scheduler *s, int kind)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->ready.prev = s->ready.next = &s->ready;
}

void csm_scheduler_init_sim(csm_scheduler *s, uint64_t seed)
{
    init_common(s, CSM_SIM);
    seed_rng(s, seed);
    s->instant_limit = CSM_INSTANT_LIMIT;
}

void csm_scheduler_count_step(csm_scheduler *s)
{
    if (s->kind != CSM_SIM)
        return;
    if (s->now != s->instant) {
        s->instant = s->now;
        s->instant_steps = 0;
    }
    if (++s->instant_steps > s->instant_limit && s->instant_limit > 0) {
        s->livelocked = 1;
        s->stopped = 1;
    }
}

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void csm_scheduler_init_real(csm_scheduler *s, csm_wake_cb wake)
{
    init_common(s, CSM_REAL);
    s->wake = wake;
    s->clock_base = monotonic_ns();
    seed_rng(s, s->clock_base);
}

/* Tells a real scheduler's driver to look again. */
static void notify(csm_scheduler *s)
{
    if (s->wake != NULL && !s->driving)
        s->wake(s);
}

void csm_scheduler_close(csm_scheduler *s)
{
    while (s->ready.next != &s->ready)
        csm_scheduler_unpost(s, s->ready.next);
    s->wake = NULL;
    /* timers still armed may be closed later (a Lua finalizer that runs
     * after the loop's): they must not reach for the freed heap */
    for (size_t i = 0; i < s->heap_len; i++)
        s->heap[i]->active = 0;
    free(s->heap);
    s->heap = NULL;
    s->heap_len = s->heap_cap = 0;
}

double csm_scheduler_now(csm_scheduler *s)
{
    if (s->kind == CSM_SIM)
        return s->now;
    return (double)(monotonic_ns() - s->clock_base) / 1e9;
}

/* ---- the ready list ---- */

void csm_scheduler_post(csm_scheduler *s, csm_task *task)
{
    if (task->queued)
        return;
    task->queued = 1;
    task->prev = s->ready.prev;
    task->next = &s->ready;
    s->ready.prev->next = task;
    s->ready.prev = task;
    if (s->ready_len++ == 0)
        notify(s);
}

void csm_scheduler_unpost(csm_scheduler *s, csm_task *task)
{
    if (!task->queued)
        return;
    task->queued = 0;
    task->prev->next = task->next;
    task->next->prev = task->prev;
    task->prev = task->next = NULL;
    if (s->batch > --s->ready_len)
        s->batch = s->ready_len;
}

int csm_scheduler_run_ready(csm_scheduler *s)
{
    if (s->ready.next == &s->ready)
        return 0;
    csm_task *task = s->ready.next;
    csm_scheduler_unpost(s, task);
    if (s->kind == CSM_SIM) {
        s->last_task = task;
        s->last_task_cb = task->cb;
        s->last_timer = NULL;
        csm_scheduler_count_step(s);
    }
    task->cb(task);
    return 1;
}

/* ---- timers: a binary min-heap on (due, seq) ---- */

static int before(const csm_timer *a, const csm_timer *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_set(csm_scheduler *s, size_t i, csm_timer *t)
{
    s->heap[i] = t;
    t->slot = i;
}

static void heap_up(csm_scheduler *s, size_t i)
{
    csm_timer *t = s->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(t, s->heap[parent]))
            break;
        heap_set(s, i, s->heap[parent]);
        i = parent;
    }
    heap_set(s, i, t);
}

static void heap_down(csm_scheduler *s, size_t i)
{
    csm_timer *t = s->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= s->heap_len)
            break;
        if (child + 1 < s->heap_len && before(s->heap[child + 1], s->heap[child]))
            child++;
        if (!before(s->heap[child], t))
            break;
        heap_set(s, i, s->heap[child]);
        i = child;
    }
    heap_set(s, i, t);
}

static void heap_remove(csm_scheduler *s, csm_timer *t)
{
    size_t i = t->slot;
    csm_timer *last = s->heap[--s->heap_len];
    if (i < s->heap_len) {
        heap_set(s, i, last);
        heap_up(s, i);
        heap_down(s, last->slot);
    }
}

int csm_scheduler_advance(csm_scheduler *s, double limit)
{
    if (s->heap_len == 0)
        return 0;
    csm_timer *t = s->heap[0];
    if (limit >= 0 && t->due > limit) {
        if (limit > s->now)
            s->now = limit;
        return 0;
    }
    heap_remove(s, t);
    t->active = 0;
    if (t->due > s->now)
        s->now = t->due;
    s->last_task = NULL;
    s->last_timer = t;
    s->last_timer_cb = t->cb;
    csm_scheduler_count_step(s);
    t->cb(t);
    return 1;
}

int csm_scheduler_step(csm_scheduler *s, double limit)
{
    if (s->batch == 0) {
        if (s->heap_len > 0 && s->heap[0]->due <= s->now)
            return csm_scheduler_advance(s, s->now);
        s->batch = s->ready_len;
    }
    if (s->batch > 0) {
        s->batch--;
        return csm_scheduler_run_ready(s);
    }
    return csm_scheduler_advance(s, limit);
}

/* ---- timers ---- */

void csm_timer_init(csm_scheduler *s, csm_timer *timer, csm_timer_cb cb)
{
    memset(timer, 0, sizeof *timer);
    timer->scheduler = s;
    timer->cb = cb;
}

int csm_timer_start(csm_timer *timer, double seconds)
{
    csm_scheduler *s = timer->scheduler;
    if (!(seconds > 0))
        seconds = 0;
    if (timer->active)
        heap_remove(s, timer);
    if (s->heap_len == s->heap_cap) {
        size_t cap = s->heap_cap ? 2 * s->heap_cap : 16;
        csm_timer **heap = realloc(s->heap, cap * sizeof *heap);
        if (heap == NULL) {
            timer->active = 0;
            return CSM_ENOMEM;
        }
        s->heap = heap;
        s->heap_cap = cap;
    }
    timer->due = csm_scheduler_now(s) + seconds;
    timer->seq = s->seq++;
    timer->active = 1;
    heap_set(s, s->heap_len++, timer);
    heap_up(s, timer->slot);
    if (timer->slot == 0)
        notify(s);
    return CSM_OK;
}

void csm_timer_stop(csm_timer *timer)
{
    if (!timer->active)
        return;
    timer->active = 0;
    csm_scheduler *s = timer->scheduler;
    heap_remove(s, timer);
    if (s->heap_len == 0)
        notify(s);
}

void csm_timer_close(csm_timer *timer)
{
    csm_timer_stop(timer);
}

/* ---- runs ---- */

int csm_scheduler_pending(const csm_scheduler *s)
{
    return s->ready_len > 0 || s->heap_len > 0;
}

void csm_scheduler_stop(csm_scheduler *s)
{
    s->stopped = 1;
}

int csm_scheduler_next_due(const csm_scheduler *s, double *due)
{
    if (s->heap_len == 0)
        return 0;
    *due = s->heap[0]->due;
    return 1;
}

void csm_scheduler_fire_due(csm_scheduler *s)
{
    double now = csm_scheduler_now(s);
    uint64_t armed_before = s->seq;
    s->driving++;
    while (!s->stopped && s->heap_len > 0 && s->heap[0]->due <= now &&
           s->heap[0]->seq < armed_before) {
        csm_timer *t = s->heap[0];
        heap_remove(s, t);
        t->active = 0;
        t->cb(t);
    }
    s->driving--;
}

void csm_scheduler_run_batch(csm_scheduler *s)
{
    s->driving++;
    for (size_t n = s->ready_len; n > 0 && !s->stopped; n--)
        csm_scheduler_run_ready(s);
    s->driving--;
}

/* Sim: one iteration, as libuv's: the timers due by now, then the tasks
 * ready at that point. */
static void sim_iteration(csm_scheduler *s)
{
    while (!s->stopped && s->heap_len > 0 && s->heap[0]->due <= s->now)
        csm_scheduler_advance(s, s->now);
    for (size_t n = s->ready_len; n > 0 && !s->stopped; n--)
        csm_scheduler_run_ready(s);
    s->batch = 0;
}

int csm_scheduler_run(csm_scheduler *s, int mode)
{
    s->stopped = 0;
    s->livelocked = 0;
    s->instant_steps = 0;
    if (s->kind == CSM_REAL)
        return csm_scheduler_pending(s);
    if (mode == CSM_RUN_DEFAULT) {
        while (!s->stopped && csm_scheduler_step(s, -1))
            ;
    } else {
        int idle = s->ready_len == 0 && !(s->heap_len > 0 && s->heap[0]->due <= s->now);
        if (mode == CSM_RUN_ONCE && idle && s->heap_len > 0)
            s->now = s->heap[0]->due;
        sim_iteration(s);
    }
    return csm_scheduler_pending(s);
}

static void on_deadline(csm_timer *timer)
{
    csm_run *run = (csm_run *)((char *)timer - offsetof(csm_run, deadline));
    run->expired = 1;
}

int csm_run_begin(csm_run *run, csm_scheduler *s, double seconds)
{
    memset(run, 0, sizeof *run);
    run->scheduler = s;
    s->stopped = 0;
    s->livelocked = 0;
    s->instant_steps = 0;
    if (s->kind == CSM_SIM) {
        run->limit = s->now + seconds;
        return CSM_OK;
    }
    csm_timer_init(s, &run->deadline, on_deadline);
    int rc = csm_timer_start(&run->deadline, seconds);
    if (rc != CSM_OK)
        csm_timer_close(&run->deadline);
    return rc;
}

int csm_run_step(csm_run *run)
{
    csm_scheduler *s = run->scheduler;
    if (s->stopped || run->expired)
        return 0;
    if (s->kind == CSM_REAL)
        return 1;
    if (csm_scheduler_step(s, run->limit))
        return 1;
    if (s->now < run->limit)
        s->now = run->limit;
    run->expired = 1;
    return 0;
}

void csm_run_end(csm_run *run)
{
    if (run->scheduler->kind == CSM_REAL)
        csm_timer_close(&run->deadline);
}
